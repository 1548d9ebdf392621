"""Structured logging: one event per line on stderr, JSON for machines, readable on a TTY.

Events carry ``event``, ``timestamp`` (ISO 8601 UTC) and ``level``. The format and the level
can be switched while the daemon runs (SIGHUP), so loggers bound once per connection stay
valid.

A thread that logs never writes: it stamps the event and hands it to one writer thread, which
renders whatever has queued up and writes it with one ``write()``. So a busy room costs a
queue put per event instead of a locked write and flush, and a log stream that fails (the
reader of a pipe gone, a full disk, a vanished terminal) never raises into chat code: the
writer counts the events it could not write (``lanchatctl stats``) and the daemon goes on.
The writer writes as soon as it is scheduled, so what was logged reaches the stream within
milliseconds; :func:`flush` waits for it at shutdown.
"""

from __future__ import annotations

import datetime
import io
import os
import queue
import select
import sys
import threading
import time
from collections.abc import Callable
from typing import Any, Final, TextIO

import structlog
import structlog.tracebacks
from structlog.typing import EventDict, WrappedLogger

#: syslog priorities, for journald's ``<N>`` line prefix.
_PRIORITIES: Final = {"debug": 7, "info": 6, "warning": 4, "error": 3, "critical": 2}
LEVELS: Final = ("debug", "info", "warning", "error")
_RANKS: Final = {"debug": 10, "info": 20, "warning": 30, "error": 40, "critical": 50}
#: Events waiting for the writer; beyond this (a stream that blocks) new ones are counted as
#: lost instead of growing memory without bound.
QUEUE_LIMIT: Final = 32_768
#: Events rendered into one ``write()`` at most.
BATCH_LIMIT: Final = 1024
#: How long one write may wait for a stream that is not ready before its lines count as lost.
WRITE_TIMEOUT: Final = 5.0

#: Structured tracebacks without local variables: those would copy chat text and peers'
#: details into the log.
_tracebacks = structlog.processors.ExceptionRenderer(
    structlog.tracebacks.ExceptionDictTransformer(show_locals=False)
)


def _iso(timestamp: float) -> str:
    moment = datetime.datetime.fromtimestamp(timestamp, datetime.UTC)
    return moment.isoformat(timespec="microseconds").replace("+00:00", "Z")


def _json_line(event: EventDict) -> str:
    return _JSON(None, "", _tracebacks(None, "", _timestamped(event)))


_JSON: Final = structlog.processors.JSONRenderer()


def _timestamped(event: EventDict) -> EventDict:
    event["timestamp"] = _iso(event["timestamp"])
    return event


class _Flush:
    """A marker in the queue: set once everything queued before it has been written."""

    def __init__(self) -> None:
        self.done = threading.Event()


class _Writer:
    """The one thread that renders and writes log lines; counts what it could not write."""

    def __init__(self) -> None:
        self.queue: queue.SimpleQueue[EventDict | _Flush] = queue.SimpleQueue()
        self.fd = 2
        self.render: Callable[[EventDict], str] = _json_line
        #: Events below this rank are dropped before they are queued.
        self.rank = _RANKS["info"]
        self.lost = 0
        self._overflow = 0
        self._overflow_lock = threading.Lock()
        self._thread: threading.Thread | None = None

    @property
    def lost_total(self) -> int:
        return self.lost + self._overflow

    def put(self, event: EventDict) -> None:
        if self.queue.qsize() >= QUEUE_LIMIT:
            with self._overflow_lock:
                self._overflow += 1
            return
        self.queue.put(event)

    def start(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._run, name="log-writer", daemon=True)
            self._thread.start()

    def flush(self, timeout: float) -> bool:
        """Wait until everything logged so far has been written (or counted lost)."""
        if self._thread is None or not self._thread.is_alive():
            return True
        marker = _Flush()
        self.queue.put(marker)
        return marker.done.wait(timeout)

    def _run(self) -> None:
        get, get_nowait = self.queue.get, self.queue.get_nowait
        while True:
            batch = [get()]
            while len(batch) < BATCH_LIMIT:
                try:
                    batch.append(get_nowait())
                except queue.Empty:
                    break
            self._write_batch(batch)

    def _write_batch(self, batch: list[EventDict | _Flush]) -> None:
        render, lines, markers = self.render, [], []
        for item in batch:
            if isinstance(item, _Flush):
                markers.append(item)
                continue
            try:
                lines.append(render(item))
            except Exception:  # one unrenderable event must not stop the log
                self.lost += 1
        if lines:
            lines.append("")
            self._write("\n".join(lines).encode(errors="backslashreplace"))
        for marker in markers:
            marker.done.set()

    def _write(self, data: bytes) -> None:
        """Write it all; on a failing stream count the lines that did not get out."""
        view = memoryview(data)
        deadline = time.monotonic() + WRITE_TIMEOUT
        while view:
            try:
                view = view[os.write(self.fd, view) :]
            except BlockingIOError:
                remaining = deadline - time.monotonic()
                if remaining > 0:
                    select.select([], [self.fd], [], remaining)
                    continue
                self.lost += bytes(view).count(b"\n")
                return
            except InterruptedError:
                continue
            except OSError:  # EPIPE, EIO, ENOSPC, EBADF: the daemon serves on without a log
                self.lost += bytes(view).count(b"\n")
                return


_writer = _Writer()


class _Sink:
    """What structlog calls with the stamped event: a queue put, whatever the level."""

    def msg(self, event: EventDict) -> None:
        _writer.put(event)

    debug = info = warning = warn = error = critical = exception = fatal = log = msg


_sink = _Sink()


def _sink_factory(*_: Any) -> _Sink:
    return _sink


def _stamp(logger: WrappedLogger, name: str, event: EventDict) -> tuple[tuple[EventDict], dict]:
    """The last step in the logging thread: filter by level, note the time and the exception.

    Rendering waits for the writer thread; only what cannot wait is done here: the clock
    and ``sys.exc_info()``, which belong to this thread and this moment.
    """
    level = "error" if name == "exception" else ("warning" if name == "warn" else name)
    if _RANKS.get(level, 20) < _writer.rank:
        raise structlog.DropEvent
    event["level"] = level
    event["timestamp"] = time.time()
    if event.get("exc_info") is True:
        event["exc_info"] = sys.exc_info()
    return (event,), {}


def _line_renderer(console: bool, colors: bool, journald: bool) -> Callable[[EventDict], str]:
    """How the writer turns one event into one line.

    Under journald each line starts with ``<N>``: journald strips it and files the line at
    that priority, so ``journalctl -p warning`` works and ``journalctl -o cat`` still shows
    plain JSON.
    """
    if console:
        renderer = structlog.dev.ConsoleRenderer(colors=colors)

        def body(event: EventDict) -> str:
            return renderer(None, "", _timestamped(event))
    else:
        body = _json_line
    if not journald:
        return body

    def prefixed(event: EventDict) -> str:
        return f"<{_PRIORITIES.get(event['level'], 6)}>{body(event)}"

    return prefixed


def under_journald(stream: TextIO) -> bool:
    """True when ``stream`` is connected to the journal (systemd sets JOURNAL_STREAM)."""
    device, _, inode = os.environ.get("JOURNAL_STREAM", "").partition(":")
    try:
        info = os.fstat(stream.fileno())
        return (info.st_dev, info.st_ino) == (int(device), int(inode))
    except (OSError, ValueError, io.UnsupportedOperation):
        return False


def resolve_format(fmt: str, stream: TextIO) -> str:
    """``auto`` means JSON unless a person is watching the terminal."""
    if fmt != "auto":
        return fmt
    return "console" if stream.isatty() else "json"


def configure(fmt: str, level: str = "info", stream: TextIO = sys.stderr) -> None:
    """Set up structlog for the daemon; safe to call again to change the format or level.

    Colours only on a terminal, and never when ``NO_COLOR`` is set (no-color.org).
    """
    console = resolve_format(fmt, stream) == "console"
    colors = stream.isatty() and not os.environ.get("NO_COLOR")
    _writer.fd = stream.fileno()
    _writer.render = _line_renderer(console, colors, under_journald(stream))
    _writer.rank = _RANKS[level]
    structlog.configure(
        processors=[structlog.contextvars.merge_contextvars, _stamp],
        wrapper_class=structlog.make_filtering_bound_logger(0),
        logger_factory=_sink_factory,
        cache_logger_on_first_use=True,
    )
    _writer.start()


def flush(timeout: float = 5.0) -> bool:
    """Wait until every event logged so far is written; False if that took over ``timeout``."""
    return _writer.flush(timeout)


def lost() -> int:
    """Events that could not be logged: the stream failed, or the queue was full."""
    return _writer.lost_total


def get_logger(**context: Any) -> Any:
    return structlog.get_logger("lanchatd").bind(**context)
