"""Who is in which Pusher presence channel, as this app has learned it."""
