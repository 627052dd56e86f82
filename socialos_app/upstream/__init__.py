"""Clients for the upstream HTTP APIs: the Social OS API and Pusher's HTTP API.

Imports requests and the standard library only, so a script can use them
without CherryPy or MongoDB (see the README's "Using the client in your own code").
"""
