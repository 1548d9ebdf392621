"""Structured logging: one event per line on stderr, JSON for machines, readable on a TTY.

Events carry ``event``, ``timestamp`` (ISO 8601 UTC) and ``level``. The renderer can be
switched while the daemon runs (SIGHUP), so loggers bound once per connection stay valid.
"""

from __future__ import annotations

import logging
import sys
from typing import Any, TextIO

import structlog
from structlog.typing import EventDict, WrappedLogger


class _SwitchableRenderer:
    """Renders with whichever renderer is current; replaced on reload."""

    def __init__(self) -> None:
        self.current: Any = structlog.processors.JSONRenderer()

    def __call__(self, logger: WrappedLogger, name: str, event: EventDict) -> str:
        return self.current(logger, name, event)


_renderer = _SwitchableRenderer()
_tracebacks = structlog.processors.dict_tracebacks


def resolve_format(fmt: str, stream: TextIO) -> str:
    """``auto`` means JSON unless a person is watching the terminal."""
    if fmt != "auto":
        return fmt
    return "console" if stream.isatty() else "json"


def configure(fmt: str, stream: TextIO = sys.stderr) -> None:
    """Set up structlog for the daemon; safe to call again to change the format."""
    console = resolve_format(fmt, stream) == "console"
    _renderer.current = (
        structlog.dev.ConsoleRenderer(colors=stream.isatty())
        if console
        else structlog.processors.JSONRenderer()
    )
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True, key="timestamp"),
            _exceptions,
            _renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.INFO),
        logger_factory=structlog.WriteLoggerFactory(file=stream),
        cache_logger_on_first_use=True,
    )


def _exceptions(logger: WrappedLogger, name: str, event: EventDict) -> EventDict:
    """Tracebacks as structured data in JSON; the console renderer prints its own."""
    if isinstance(_renderer.current, structlog.processors.JSONRenderer):
        return _tracebacks(logger, name, event)
    return event


def get_logger(**context: Any) -> Any:
    return structlog.get_logger("lanchatd").bind(**context)
