"""Structured logging: one event per line on stderr, JSON for machines, readable on a TTY.

Events carry ``event``, ``timestamp`` (ISO 8601 UTC) and ``level``. The renderer can be
switched while the daemon runs (SIGHUP), so loggers bound once per connection stay valid.
"""

from __future__ import annotations

import io
import logging
import os
import sys
from typing import Any, Final, TextIO

import structlog
import structlog.tracebacks
from structlog.typing import EventDict, WrappedLogger

#: syslog priorities, for journald's ``<N>`` line prefix.
_PRIORITIES: Final = {"debug": 7, "info": 6, "warning": 4, "error": 3, "critical": 2}


class _SwitchableRenderer:
    """Renders with whichever renderer is current; replaced on reload.

    Under journald each line starts with ``<N>``: journald strips it and files the line at
    that priority, so ``journalctl -p warning`` works and ``journalctl -o cat`` still shows
    plain JSON.
    """

    def __init__(self) -> None:
        self.current: Any = structlog.processors.JSONRenderer()
        self.journald = False

    def __call__(self, logger: WrappedLogger, name: str, event: EventDict) -> str:
        priority = _PRIORITIES.get(event.get("level", "info"), 6)
        line = self.current(logger, name, event)
        return f"<{priority}>{line}" if self.journald else line


def under_journald(stream: TextIO) -> bool:
    """True when ``stream`` is connected to the journal (systemd sets JOURNAL_STREAM)."""
    device, _, inode = os.environ.get("JOURNAL_STREAM", "").partition(":")
    try:
        info = os.fstat(stream.fileno())
        return (info.st_dev, info.st_ino) == (int(device), int(inode))
    except (OSError, ValueError, io.UnsupportedOperation):
        return False


_renderer = _SwitchableRenderer()
#: Structured tracebacks without local variables: those would copy chat text and peers'
#: details into the log.
_tracebacks = structlog.processors.ExceptionRenderer(
    structlog.tracebacks.ExceptionDictTransformer(show_locals=False)
)


def resolve_format(fmt: str, stream: TextIO) -> str:
    """``auto`` means JSON unless a person is watching the terminal."""
    if fmt != "auto":
        return fmt
    return "console" if stream.isatty() else "json"


def configure(fmt: str, stream: TextIO = sys.stderr) -> None:
    """Set up structlog for the daemon; safe to call again to change the format."""
    console = resolve_format(fmt, stream) == "console"
    _renderer.journald = under_journald(stream)
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
