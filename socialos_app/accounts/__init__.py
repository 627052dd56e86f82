"""Signing in and out through the Social OS API, the sign-in throttle, devices in words."""
