"""The server as a whole: the composition root (``compose.py``: settings -> manager -> data
plane -> front ends) and its life (``lifecycle.py``: start, serve, drain on SIGTERM, stop).
The CLI parses flags into ``ServerSettings`` and calls ``lifecycle.run``."""
