"""Staying in the room: reconnect and rejoin when needed, and account for every line sent.

No terminal I/O here: the interactive and the pipe front ends hand lines to :class:`Session`
and are called back with received lines and status notices.

Why the bookkeeping: the server broadcasts every chat line to its sender too, in order, so
that echo confirms the line was taken. Lines sent and not yet echoed when a connection dies
are sent again after reconnecting, unless the server had them: the resume replay (the room
events after the newest id shown) then holds their echoes; lines typed while disconnected are
held and sent then.
Whatever is still unsent or unconfirmed when the user leaves is reported, never dropped in
silence. For a script's "is everything through?" the client sends itself a private message
(``/msg``: only the sender sees it) and waits for it: the server handles one client's lines
in order, so once that comes back, every earlier line has been processed.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import random
import re
import secrets
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from lanchatd.client.link import ConnectError, Connection, Endpoint, join
from lanchatd.client.words import messages, say
from lanchatd.core.commands import Quit, parse_command
from lanchatd.core.lines import chat_prefix, own_words
from lanchatd.core.protocol import Line, Removal
from lanchatd.core.tags import MessageId, parse_time
from lanchatd.core.text import sanitize

#: A connection that stays completely silent this long while a line awaits its echo is
#: taken for dead (a network drop can leave TCP believing it is open for many minutes).
ECHO_TIMEOUT: Final = 15.0
#: How long leaving may wait for the server to see the ``/quit`` (or end of input) through.
CLOSE_TIMEOUT: Final = 5.0
#: Lines typed while disconnected that are kept for sending; beyond that they are refused.
MAX_HELD: Final = 100
_SYNC_PREFIX: Final = "lanchat-sync-"
#: What a terminal's input decoder leaves for bytes that are not UTF-8 (lone surrogates):
#: text that cannot be encoded for the wire, nor printed.
_UNENCODABLE: Final = re.compile("[\ud800-\udfff]")


def sendable(text: str) -> str:
    """``text`` with every byte that was not UTF-8 shown as U+FFFD, as the server would."""
    return _UNENCODABLE.sub("\ufffd", text)


@dataclass(frozen=True, slots=True)
class Backoff:
    """Delays between reconnection attempts: doubling from ``first`` up to ``cap``, jittered
    so that every client of a restarted server does not come back in the same instant."""

    first: float = 0.5
    cap: float = 15.0
    jitter: float = 0.2

    def delay(self, attempt: int, rand: Callable[[], float] = random.random) -> float:
        base = min(self.cap, self.first * 2.0 ** min(attempt, 16))
        return base * (1 + self.jitter * (2 * rand() - 1))


class Sent(enum.Enum):
    """What :meth:`Session.send` did with a line."""

    SENT = "sent"
    HELD = "held"  #: disconnected: it goes out after reconnecting
    REFUSED = "refused"  #: disconnected and too many lines already held: not sent


@dataclass(slots=True)
class _Outgoing:
    line: str
    #: The exact line the server will echo back, or None when nothing echoes (commands).
    echo: str | None
    #: Sent at least once already (so, after a reconnect, it may or may not have arrived).
    tried: bool = False
    #: When it was last written (event loop clock).
    sent_at: float = 0.0
    #: ``/quit``: the server closes the connection once it has read this.
    quits: bool = False


@dataclass(frozen=True, slots=True)
class Unsent:
    """What was left when the session ended: never sent, and sent but never confirmed."""

    held: list[str]
    unconfirmed: list[str]


@dataclass(frozen=True, slots=True)
class Status:
    """A notice about the connection for the user; ``level`` is info, warning or error."""

    level: str
    text: str


class Session:
    """A joined client that survives connection loss: reconnects to the same endpoint (so
    with the same TLS settings) and rejoins as ``nick``."""

    def __init__(
        self,
        endpoint: Endpoint,
        nick: str,
        connection: Connection,
        *,
        on_line: Callable[[str], None],
        on_status: Callable[[Status], None],
        on_history: Callable[[str, str], None] | None = None,
        give_up_after: float | None = None,
        backoff: Backoff = Backoff(),
        echo_timeout: float = ECHO_TIMEOUT,
        max_held: int | None = MAX_HELD,
    ) -> None:
        self.endpoint = endpoint
        self.nick = nick
        self._conn: Connection | None = connection
        self._on_line = on_line
        #: Shows a replayed line (local ``HH:MM``, the line); by default marked in text.
        self._on_history = on_history or (
            lambda clock, raw: on_line(f"{say('history_mark', time=clock)} {raw}")
        )
        self._on_status = on_status
        self._give_up_after = give_up_after
        self._backoff = backoff
        self._echo_timeout = echo_timeout
        self._max_held = max_held
        self._unconfirmed: deque[_Outgoing] = deque()
        self._held: deque[_Outgoing] = deque()
        self._sync_echoes: set[str] = set()
        #: After a reconnect, the private line whose echo ends the resume replay: until it
        #: comes back, replayed lines confirm lines held for resending, which wait.
        self._probe: _Outgoing | None = None
        #: Lines typed while disconnected, counted when rejoining (for the notice).
        self._typed_away = 0
        #: The newest room event id shown: a reconnect resumes after it (no gap, no repeat).
        self.newest: MessageId | None = None
        #: History lines were shown and their closing separator was not yet.
        self._in_history = False
        self._closing = False
        self._removed: str | None = None
        self.quit_sent = False
        #: Why the session ended on its own (gave up reconnecting), or None.
        self.failed: str | None = None
        self._wake = asyncio.Event()
        self._connected = asyncio.Event()
        self._connected.set()
        self._settled = asyncio.Event()
        self._done = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    # The front end's side ------------------------------------------------------------------

    def start(self) -> None:
        """Start receiving (and reconnecting when needed) in the background."""
        self._task = asyncio.get_running_loop().create_task(self._run())

    @property
    def done(self) -> bool:
        return self._done.is_set()

    async def wait_done(self) -> None:
        await self._done.wait()

    async def wait_connected(self) -> bool:
        """Wait until joined; False if the session ended instead."""
        if self._conn is not None:
            return True
        waiter = asyncio.ensure_future(self._connected.wait())
        ender = asyncio.ensure_future(self._done.wait())
        await asyncio.wait({waiter, ender}, return_when=asyncio.FIRST_COMPLETED)
        waiter.cancel()
        ender.cancel()
        return self._conn is not None

    async def send(self, line: str, *, limited: bool = True) -> Sent:
        """Send one line now, or hold it for after reconnecting.

        While disconnected at most ``max_held`` lines are held (unless ``limited`` is
        false); beyond that the line is refused and the caller must say so.
        """
        item = self._outgoing(sendable(line))
        conn = self._conn
        if conn is not None and self._probe is not None:
            self._held.append(item)  # queued behind the resend, which waits for the replay
            return Sent.SENT
        if conn is None:
            full = self._max_held is not None and len(self._held) >= self._max_held
            if limited and full:
                return Sent.REFUSED
            self._held.append(item)
            self._settled.clear()
            return Sent.HELD
        self._transmit(conn, item)
        await conn.drain()
        return Sent.SENT

    async def sync(self) -> bool:
        """Wait until the server has processed every line sent so far, across reconnects.

        False if the session ended first (gave up reconnecting, or was closed).
        """
        await self.send(self._sync_line(), limited=False)
        settled = asyncio.ensure_future(self._settled.wait())
        ender = asyncio.ensure_future(self._done.wait())
        await asyncio.wait({settled, ender}, return_when=asyncio.FIRST_COMPLETED)
        settled.cancel()
        ender.cancel()
        return self._settled.is_set()

    async def finish(self, timeout: float = CLOSE_TIMEOUT) -> bool:
        """End of input (pipe mode): make sure everything arrived, then leave quietly.

        True when every line sent was processed by the server.
        """
        if not self.quit_sent and not await self.sync():
            return False
        self._closing = True
        self._wake.set()
        if self._conn is not None:
            self._conn.end_input()
        await self._wait_end(timeout)
        return True

    async def close(self, timeout: float = CLOSE_TIMEOUT) -> Unsent:
        """Leave the room (``/quit`` if connected) and report what never made it."""
        self._closing = True
        self._wake.set()
        conn = self._conn
        if conn is not None and not self.quit_sent:
            self.quit_sent = True
            conn.write("/quit")
            await conn.drain()
        await self._wait_end(timeout)
        left = [item for item in (*self._held, *self._unconfirmed) if not self._is_sync(item)]
        unsent = Unsent(
            held=[item.line for item in left if not item.tried],
            unconfirmed=[item.line for item in left if item.tried],
        )
        self._held.clear()
        self._unconfirmed.clear()
        return unsent

    # Internals -----------------------------------------------------------------------------

    def _sync_line(self) -> str:
        """A private line to ourselves whose echo is awaited, and swallowed when it comes."""
        token = f"{_SYNC_PREFIX}{secrets.token_hex(8)}"
        self._sync_echoes.add(f"*{self.nick}* {token}")
        return f"/msg {self.nick} {token}"

    def _outgoing(self, line: str) -> _Outgoing:
        wire = line.replace("\r", " ").replace("\n", " ")
        text = own_words(self.nick, wire)
        if not text.strip():
            return _Outgoing(line, None)
        if text.startswith("/"):
            if text.startswith(f"/msg {self.nick} {_SYNC_PREFIX}"):
                return _Outgoing(line, f"*{self.nick}* {text.split(' ')[-1]}")
            return _Outgoing(line, None, quits=isinstance(parse_command(text), Quit))
        # The server relays it made safe to show (lanchatd.core.text): that is the echo to expect.
        return _Outgoing(line, sanitize(chat_prefix(self.nick) + text))

    def _transmit(self, conn: Connection, item: _Outgoing) -> None:
        conn.write(item.line)
        if item.quits:
            self.quit_sent = True
        if item.echo is not None:
            item.tried = True
            item.sent_at = asyncio.get_running_loop().time()
            self._unconfirmed.append(item)
            self._settled.clear()

    def _check_settled(self) -> None:
        if self._conn is not None and not self._unconfirmed and not self._held:
            self._settled.set()

    def _receive(self, event: Line | Removal) -> None:
        if isinstance(event, Line):
            if event.id is not None and (self.newest is None or event.id > self.newest):
                self.newest = event.id
            if event.history:
                if self._probe is not None:
                    self._delivered(event.text)
                self._in_history = True
                self._on_history(_clock(event.time), event.text)
                return
        self._end_history()
        raw = event.text
        if isinstance(event, Removal):
            self._removed = raw
        if raw.startswith(chat_prefix(self.nick)) or raw in self._sync_echoes:
            for index, item in enumerate(self._unconfirmed):
                if item.echo == raw:
                    for _ in range(index + 1):
                        self._unconfirmed.popleft()
                    self._check_settled()
                    break
            if raw in self._sync_echoes:
                self._sync_echoes.discard(raw)
                if self._probe is not None and raw == self._probe.echo:
                    self._probe = None
                    self._resend()
                return
        self._on_line(raw)

    def _end_history(self) -> None:
        """Close a block of history lines with one separator, before the next live line (or
        once the server has gone quiet after it)."""
        if self._in_history:
            self._in_history = False
            self._on_line(say("history_end"))

    async def _wait_end(self, timeout: float) -> None:
        if self._task is None:
            return
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await self._done.wait()
                return
        if self._conn is not None:
            self._conn.abort()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(1.0):
                await self._done.wait()

    async def _run(self) -> None:
        try:
            while (conn := self._conn) is not None:
                self._check_settled()
                await self._pump(conn)
                self._lost()
                await conn.close()
                if self._closing or self.quit_sent:
                    break
                if self._removed is not None:
                    self.failed = say("removed")
                    self._status("error", self.failed)
                    break
                self._status("warning", say("lost", where=self._where))
                new = await self._reconnect()
                if new is not None:
                    self._rejoined(new)
        except Exception as error:  # a bug must not leave the user typing into nothing
            self.failed = say("internal_error", error=repr(error))
            self._status("error", self.failed)
            if self._conn is not None:
                self._conn.abort()
            self._lost()
        finally:
            self._done.set()

    @property
    def _where(self) -> str:
        return str(self.endpoint)

    async def _pump(self, conn: Connection) -> None:
        loop = asyncio.get_running_loop()
        tick = min(1.0, self._echo_timeout / 4)
        last_heard = loop.time()
        while True:
            try:
                lines = await conn.read(tick)
            except TimeoutError:
                self._end_history()
                if self._unconfirmed:
                    waited = loop.time() - max(last_heard, self._unconfirmed[0].sent_at)
                    if waited >= self._echo_timeout:
                        self._status(
                            "warning", say("no_answer", where=self._where, seconds=f"{waited:.0f}")
                        )
                        conn.abort()
                        return
                continue
            if lines is None:
                self._end_history()
                return
            last_heard = loop.time()
            for event in lines:
                self._receive(event)

    def _lost(self) -> None:
        """The connection ended: whatever was not confirmed goes back to the head of the line."""
        self._conn = None
        self._connected.clear()
        self._settled.clear()
        if (probe := self._probe) is not None:  # the next rejoin sends its own
            self._unconfirmed = deque(item for item in self._unconfirmed if item is not probe)
            self._sync_echoes.discard(probe.echo or "")
            self._probe = None
        if self._unconfirmed:
            self._held.extendleft(reversed(self._unconfirmed))
            self._unconfirmed.clear()

    async def _reconnect(self) -> Connection | None:
        loop = asyncio.get_running_loop()
        started = loop.time()
        attempt = 0
        while not self._closing:
            delay = self._backoff.delay(attempt)
            limit = self._give_up_after
            if limit is not None and loop.time() + delay - started > limit:
                self.failed = say("gave_up", where=self._where, seconds=f"{limit:.0f}")
                self._status("error", self.failed)
                return None
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(delay):
                    await self._wake.wait()
            if self._closing:
                return None
            try:
                result = await join(self.endpoint, self.nick, after=self.newest)
            except ConnectError as error:
                reason = str(error).removeprefix(
                    say("cannot_connect", where=self._where, reason="")
                )
                if error.final:
                    self.failed = say("final", reason=reason)
                    self._status("error", self.failed)
                    return None
            else:
                if isinstance(result, Connection):
                    return result
                reason = say("nick_refused", nick=repr(self.nick), reason=result.reason)
            attempt += 1
            if attempt < 4 or attempt % 4 == 0:
                wait = self._backoff.delay(attempt, lambda: 0.5)
                self._status(
                    "info", say("still_disconnected", reason=reason, seconds=f"{wait:.0f}")
                )
        return None

    def _rejoined(self, conn: Connection) -> None:
        self._conn = conn
        self._connected.set()
        self._status("info", say("reconnected", where=self._where, nick=self.nick))
        self._typed_away = sum(
            1 for item in self._held if not item.tried and not self._is_sync(item)
        )
        if self.newest is not None and any(
            item.tried and not self._is_sync(item) for item in self._held
        ):
            # Which of them did the server have? The replay of what came after the newest id
            # shown tells, and it ends before the echo of a private line sent now.
            self._probe = self._outgoing(self._sync_line())
            self._transmit(conn, self._probe)
        for event in conn.pending:
            self._receive(event)
        conn.pending = []
        if self._probe is None:
            self._resend()

    def _delivered(self, raw: str) -> None:
        """A replayed line: if it is the echo of a line held for resending, the server had
        that line, and every one sent before it (it handles a client's lines in order)."""
        for index, item in enumerate(self._held):
            if not item.tried:
                return
            if item.echo == raw:
                for _ in range(index + 1):
                    self._held.popleft()
                return

    def _resend(self) -> None:
        """Send what is held: lines that may not have arrived, then lines typed meanwhile."""
        conn = self._conn
        if conn is None:
            return
        held, self._held = self._held, deque()
        resent = sum(1 for item in held if item.tried and not self._is_sync(item))
        for item in held:
            self._transmit(conn, item)
        if resent:
            self._status("warning", say("resent", messages=messages(resent)))
        if self._typed_away:
            self._status("info", say("sent_held", messages=messages(self._typed_away)))
        self._check_settled()

    @staticmethod
    def _is_sync(item: _Outgoing) -> bool:
        return item.echo is not None and item.echo.startswith("*")

    def _status(self, level: str, text: str) -> None:
        self._on_status(Status(level, text))


def _clock(stamp: str | None) -> str:
    """A ``time`` tag as local ``HH:MM`` (``--:--`` if the server sent none we can read)."""
    moment = None if stamp is None else parse_time(stamp)
    return "--:--" if moment is None else moment.astimezone().strftime("%H:%M")
