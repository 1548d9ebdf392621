"""Structured logging: one event per line on stderr, JSON for machines, readable on a TTY.

Events carry ``event``, ``timestamp`` (ISO 8601 UTC) and ``level``. The format and the level
can be switched while the daemon runs (SIGHUP), so loggers bound once per connection stay
valid.

A thread that logs never writes: it renders the event to a line and queues it for one writer
thread, which writes whatever has queued up with one ``write()``. So a busy room costs a
queue put per event (per read for the chat lines' ``message`` events, rendered by
:func:`messages`) instead of a locked write and flush, and a log stream that fails (the
reader of a pipe gone, a full disk, a vanished terminal) never raises into chat code: the
writer counts the lines it could not write (``lanchatctl stats``) and the daemon goes on.
The writer writes as soon as it is scheduled, so what was logged reaches the stream within
milliseconds; :func:`flush` waits for it at shutdown.
"""

from __future__ import annotations

import functools
import io
import json
import os
import queue
import select
import sys
import threading
import time
from collections.abc import Callable
from typing import Any, Final, TextIO, TypeAlias

import structlog
import structlog.tracebacks
from structlog.typing import EventDict, FilteringBoundLogger, WrappedLogger

#: syslog priorities, for journald's ``<N>`` line prefix.
_PRIORITIES: Final = {"debug": 7, "info": 6, "warning": 4, "error": 3, "critical": 2}
LEVELS: Final = ("debug", "info", "warning", "error")
_RANKS: Final = {"debug": 10, "info": 20, "warning": 30, "error": 40, "critical": 50}
#: Lines waiting for the writer; beyond this, loggers wait for room (see _wait_for_room).
QUEUE_LIMIT: Final = 16_384
#: A write that has taken this long means the stream is stuck: lines are dropped, counted.
STALL_TIMEOUT: Final = 0.5
#: Lines joined into one ``write()`` at most.
BATCH_LIMIT: Final = 1024
#: How long one write may wait for a stream that is not ready before its lines count as lost.
WRITE_TIMEOUT: Final = 5.0
#: The writer's rest after each write: a busy room's events pile up for the next write
#: meanwhile, rather than each queue put waking the writer (and taking the GIL) again.
WRITE_REST: Final = 0.002

#: Structured tracebacks without local variables: those would copy chat text and peers'
#: details into the log.
_tracebacks = structlog.processors.ExceptionRenderer(
    structlog.tracebacks.ExceptionDictTransformer(show_locals=False)
)


@functools.lru_cache(maxsize=4)
def _date_time(second: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))


def _iso(timestamp: float) -> str:
    """ISO 8601 UTC to the microsecond; the date and time part is made once a second."""
    whole = int(timestamp)
    return f"{_date_time(whole)}.{int((timestamp - whole) * 1_000_000):06d}Z"


#: One encoder for every line (``json.dumps`` with options builds a new one per call).
_encode: Final = json.JSONEncoder(default=repr).encode
#: What that encoder does with a string (it escapes everything beyond ASCII).
_encode_string: Final = json.encoder.encode_basestring_ascii


def _json_line(event: EventDict) -> str:
    event["timestamp"] = _iso(event["timestamp"])
    if "exc_info" in event:
        event = _tracebacks(None, "", event)
    return _encode(event)


class _Flush:
    """A marker in the queue: set once everything queued before it has been written."""

    def __init__(self) -> None:
        self.done = threading.Event()


class _Writer:
    """The one thread that writes log lines, many per ``write()``; counts what it could not."""

    def __init__(self) -> None:
        self.queue: queue.SimpleQueue[str | _Flush] = queue.SimpleQueue()
        self.fd = 2
        self.render: Callable[[EventDict], str] = _json_line
        #: In JSON format, what starts every info line (journald's ``<6>`` or nothing); None
        #: in console format. For :func:`messages`, which renders JSON lines itself.
        self.info_prefix: str | None = ""
        #: Events below this rank are dropped before they are rendered.
        self.rank = _RANKS["info"]
        #: Lines a write failed to get out (written by the writer thread only).
        self.lost = 0
        #: Lines queued and not yet taken by the writer, and lines not queued because the
        #: stream was stuck (both written under the lock; an item may hold many lines).
        self.queued = 0
        self.dropped = 0
        self._count_lock = threading.Lock()
        #: Set by the first flush(): from then on the writer looks for flush markers.
        self.flushing = False
        #: While a write is in progress: when it last got bytes out (or began); else None.
        self.writing_since: float | None = None
        self._thread: threading.Thread | None = None

    def put(self, line: str) -> None:
        """Queue ``line``, which may be several (a traceback, a batch of message events)."""
        count = line.count("\n") + 1
        room = self.queued < QUEUE_LIMIT or self._wait_for_room()
        with self._count_lock:
            if not room:
                self.dropped += count
                return
            self.queued += count
        self.queue.put(line)

    def _wait_for_room(self) -> bool:
        """The writer is behind: wait while it gets lines out; not while the stream is stuck.

        Waiting slows the loggers (chat included) to the speed of the log, so a log that keeps
        up loses nothing; a stream that takes no lines for STALL_TIMEOUT (a reader that stopped
        reading) costs log lines instead of chat.
        """
        while self.queued >= QUEUE_LIMIT:
            if self._stuck():
                return False
            time.sleep(0.001)
        return True

    def _stuck(self, waiting_since: float = 0.0) -> bool:
        """No writer, or one that has got nothing out for STALL_TIMEOUT (of our wait)."""
        since = self.writing_since
        if since is not None and time.monotonic() - max(since, waiting_since) > STALL_TIMEOUT:
            return True
        return self._thread is None or not self._thread.is_alive()

    def start(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._thread = threading.Thread(target=self._run, name="log-writer", daemon=True)
            self._thread.start()

    def flush(self, timeout: float) -> bool:
        """Wait until everything logged so far has been written (or counted lost).

        Not for a stuck stream: shutdown is not held up by a reader that stopped reading.
        """
        if self._thread is None or not self._thread.is_alive():
            return True
        marker = _Flush()
        self.flushing = True
        self.queue.put(marker)
        started = time.monotonic()
        while not marker.done.wait(0.05):
            if self._stuck(started) or time.monotonic() > started + timeout:
                return False
        return True

    def _run(self) -> None:
        get, get_nowait, more = self.queue.get, self.queue.get_nowait, range(BATCH_LIMIT - 1)
        while True:
            batch: list[Any] = [get()]
            append = batch.append
            try:
                for _ in more:
                    append(get_nowait())
            except queue.Empty:
                pass
            # Markers are looked for only once someone waits for one: this loop runs per line.
            markers = [item for item in batch if type(item) is _Flush] if self.flushing else []
            lines = [item for item in batch if type(item) is str] if markers else batch
            if lines:
                lines.append("")
                text = "\n".join(lines)
                with self._count_lock:
                    self.queued -= text.count("\n")
                self.writing_since = time.monotonic()
                self._write(text.encode(errors="backslashreplace"))
                self.writing_since = None
            for marker in markers:
                marker.done.set()
            time.sleep(WRITE_REST)

    def _write(self, data: bytes) -> None:
        """Write it all; on a failing stream count the lines that did not get out."""
        view = memoryview(data)
        deadline = time.monotonic() + WRITE_TIMEOUT
        while view:
            try:
                view = view[os.write(self.fd, view) :]
                self.writing_since = time.monotonic()
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
    """What structlog hands the rendered line to: a queue put, whatever the level."""

    def msg(self, line: str) -> None:
        _writer.put(line)

    debug = info = warning = warn = error = critical = exception = fatal = log = msg


_sink = _Sink()


def _sink_factory(*_: Any) -> _Sink:
    return _sink


def _render(logger: WrappedLogger, name: str, event: EventDict) -> str:
    """The last step in the logging thread: filter by level, stamp, render to one line.

    Rendering here rather than in the writer spreads it over the threads that log: one
    writer rendering for ten busy readers fell behind (measured: a fifth of the message
    events of a 10-client benchmark run did not fit its queue).
    """
    level = "error" if name == "exception" else ("warning" if name == "warn" else name)
    if _RANKS.get(level, 20) < _writer.rank:
        raise structlog.DropEvent
    event["level"] = level
    event["timestamp"] = time.time()
    return _writer.render(event)


def _line_renderer(console: bool, colors: bool, journald: bool) -> Callable[[EventDict], str]:
    """How the writer turns one event into one line.

    Under journald each line starts with ``<N>``: journald strips it and files the line at
    that priority, so ``journalctl -p warning`` works and ``journalctl -o cat`` still shows
    plain JSON.
    """
    if console:
        renderer = structlog.dev.ConsoleRenderer(colors=colors)

        def body(event: EventDict) -> str:
            event["timestamp"] = _iso(event["timestamp"])
            return renderer(None, "", event)
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


def standard_streams() -> None:
    """Put /dev/null on a closed stdin, stdout or stderr (``lanchatd 2>&-``).

    Otherwise the next socket would take that descriptor and the log would be written to
    whichever client it belongs to.
    """
    for fd in (0, 1, 2):
        try:
            os.fstat(fd)
        except OSError:
            os.open(os.devnull, os.O_RDWR)  # the lowest free descriptor: this one
    if sys.stderr is None:
        sys.stderr = open(2, "w", closefd=False)  # noqa: SIM115 - the process's stderr


def resolve_format(fmt: str, stream: TextIO) -> str:
    """``auto`` means JSON unless a person is watching the terminal."""
    if fmt != "auto":
        return fmt
    return "console" if stream.isatty() else "json"


def configure(fmt: str, level: str = "info", stream: TextIO | None = None) -> None:
    """Set up structlog for the daemon; safe to call again to change the format or level.

    Colours only on a terminal, and never when ``NO_COLOR`` is set (no-color.org).
    """
    stream = stream or sys.stderr
    console = resolve_format(fmt, stream) == "console"
    colors = stream.isatty() and not os.environ.get("NO_COLOR")
    _writer.fd = stream.fileno()
    journald = under_journald(stream)
    _writer.render = _line_renderer(console, colors, journald)
    _writer.info_prefix = None if console else f"<{_PRIORITIES['info']}>" if journald else ""
    _writer.rank = _RANKS[level]
    structlog.configure(
        # Context is bound on each logger (per connection), not in contextvars: no merge step.
        processors=[_render],
        wrapper_class=structlog.make_filtering_bound_logger(0),
        logger_factory=_sink_factory,
        cache_logger_on_first_use=True,
    )
    _writer.start()


def flush(timeout: float = 5.0) -> bool:
    """Wait until every event logged so far is written; False if that took over ``timeout``."""
    return _writer.flush(timeout)


def lost() -> int:
    """Events that could not be logged: the stream failed, or was stuck with the queue full."""
    return _writer.lost + _writer.dropped


#: What the daemon logs through: get_logger()'s result and whatever is bound from it.
Logger: TypeAlias = FilteringBoundLogger


def get_logger(**context: Any) -> Logger:
    """The daemon's logger, bound to ``context``; configure() chose its class."""
    logger: Logger = structlog.get_logger("lanchatd")
    return logger.bind(**context)


def messages(log: Logger, texts: list[str], sizes: list[int], with_text: bool) -> None:
    """Log a ``message`` event (``text`` if ``with_text``, ``bytes``) per chat line, in order.

    The hot event, one per chat line. In JSON format its lines are rendered here, for all the
    lines of one read at once, to what structlog's path makes of ``log.info("message", ...)``
    (the same fields in the same order, one timestamp for the read), and queued as one item:
    that path costs a context copy, a processor call and an encoder run per line, which took
    most of a 10-client room's CPU.
    """
    if not texts or _writer.rank > _RANKS["info"]:
        return
    prefix = _writer.info_prefix
    if prefix is None:
        for text, size in zip(texts, sizes, strict=True):
            if with_text:
                log.info("message", text=text, bytes=size)
            else:
                log.info("message", bytes=size)
        return
    context = structlog.get_context(log)
    head = f"{prefix}{_encode(context)[:-1]}, " if context else f"{prefix}{{"
    tail = f'"event": "message", "level": "info", "timestamp": "{_iso(time.time())}"}}'
    if with_text:
        lines = [
            f'{head}"text": {_encode_string(text)}, "bytes": {size}, {tail}'
            for text, size in zip(texts, sizes, strict=True)
        ]
    else:
        lines = [f'{head}"bytes": {size}, {tail}' for size in sizes]
    _writer.put("\n".join(lines))
