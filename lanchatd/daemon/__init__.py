"""The daemon: listener, room, delivery, reader threads, admin server, config and logging."""
