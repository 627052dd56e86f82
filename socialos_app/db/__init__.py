"""The MongoDB room: the connection and every collection as a mongoengine Document."""
