"""socialos-app: sign in through the Social OS API, stay signed in safely.

The folders are the layers, lowest first (``tests/test_layers.py`` holds them to it):

    settings.py, crypto.py, storage.py, resources.py   the floor: settings, keys, the stores' error and clock
    upstream/    HTTP clients for the Social OS API and Pusher (requests and the standard library only)
    db/          the MongoDB connection and every collection as a mongoengine Document
    sessions/    the session engine, its cache, and the store backends it is built on
    ops/         logging, metrics, health
    accounts/    sign-in and sign-out, the sign-in throttle, devices in words
    presence/    who is in which presence channel
    web/         the CherryPy app: assembly, tools, pages, templates' rendering
    cli.py       the entry point
"""
