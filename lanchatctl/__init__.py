"""lanchatctl: the administrator's command line for a running lanchatd (admin socket)."""

from lanchatd import __version__

__all__ = ["__version__"]
