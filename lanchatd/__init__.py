"""lanchatd: a threaded TCP chat room for one local network."""

__version__ = "0.1.0"
