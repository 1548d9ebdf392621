"""What every client is owed and how far each got: the journal and the outboxes, no threads.

The delivery rounds (delivery.py) drive these; they hold their state and the one algorithm,
apart from sockets, selectors and clocks, so they are tested in process byte by byte.

The plan:

- Every broadcast is encoded once per framing and appended to that framing's ``Journal``.
  Positions are absolute byte offsets since the daemon started, so a client's progress is
  one integer (its *cursor*) and no per-client copy of a broadcast is ever made.
- Appends happen under the room lock; each delivery round *seals* what was appended into one
  immutable segment per round. Readers only ever look at sealed segments, so nothing they
  read changes under them, and a round's many small lines leave in one ``send`` each.
- A line for one client only (a *unicast*: welcome, ``/who``, ``/msg``, a kick reason) is
  queued in that client's ``Outbox`` with the journal position it was queued at. It is sent
  once the cursor reaches that position, so it keeps its place among the broadcasts.
- A departing client gets a *final position*: what was queued before it left, and nothing
  after.
- ``send`` is the socket's (``MSG_DONTWAIT``): it takes what fits and raises
  ``BlockingIOError`` when nothing does. What it did not take stays owed: the cursor only
  moves by what was sent, and a unicast keeps its unsent tail.
- On TLS, plaintext is encrypted at most ``TLS_CHUNK`` at a time; the records wait in
  ``cipher`` and nothing more is encrypted before they have left, so a client that does not
  read holds one chunk of ciphertext, not the journal's worth.
- The journal forgets segments once every reader has sent past them (``trim``); a third
  framing (WebSocket, say) is one more journal, keyed by its ``Wire``. Connections that
  negotiated message ids read their own journal per framing: tagged bytes, encoded once.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Final

from lanchatd.core.framing import Framing
from lanchatd.daemon.tls import TlsSession

#: Plaintext encrypted at once for a TLS client (TLS records are at most 16 KiB each).
TLS_CHUNK: Final = 65536

#: What a journal's bytes are for: a framing, and whether its lines carry tags (``/cap ids``).
Wire = tuple[Framing, bool]

#: ``socket.send``'s shape: ``send(data, flags)`` returns bytes taken, raises
#: ``BlockingIOError`` when the socket takes none.
Send = Callable[[bytes | memoryview, int], int]


class Journal:
    """The ordered bytes of every broadcast in one framing, shared by all its readers.

    ``end`` counts bytes appended, ``sealed_end`` those sealed into segments so far.
    """

    __slots__ = ("end", "framing", "pending", "readers", "sealed_end", "segments", "tagged")

    def __init__(self, framing: Framing, tagged: bool = False) -> None:
        self.framing = framing
        self.tagged = tagged
        self.pending: list[bytes] = []
        self.end = 0
        self.sealed_end = 0
        self.segments: deque[tuple[int, bytes]] = deque()
        self.readers = 0

    def append(self, data: bytes) -> None:
        self.pending.append(data)
        self.end += len(data)

    def seal(self) -> bool:
        """Turn pending bytes into one immutable segment; True if there was anything."""
        if not self.pending:
            return False
        self.segments.append((self.sealed_end, b"".join(self.pending)))
        self.pending.clear()
        self.sealed_end = self.end
        return True

    def segment_at(self, pos: int) -> tuple[int, bytes]:
        """The segment holding absolute position ``pos`` (searched from the newest)."""
        segments = self.segments
        for index in range(len(segments) - 1, -1, -1):
            segment = segments[index]
            if segment[0] <= pos:
                return segment
        raise LookupError(pos)

    def trim(self, low: int) -> None:
        """Forget segments that every reader has already sent past."""
        segments = self.segments
        while segments and segments[0][0] + len(segments[0][1]) <= low:
            segments.popleft()


class Outbox:
    """One client's place in its journal and the lines for it alone; the delivery rounds'."""

    __slots__ = (
        "blocked",
        "cipher",
        "cursor",
        "deadline",
        "final_pos",
        "journal",
        "send",
        "tls",
        "unicast",
        "unicast_bytes",
    )

    def __init__(
        self, journal: Journal, cursor: int, send: Send, tls: TlsSession | None = None
    ) -> None:
        self.journal = journal
        self.cursor = cursor
        self.send = send
        self.tls = tls
        self.unicast: deque[tuple[int, memoryview]] = deque()
        self.unicast_bytes = 0
        #: Encrypted bytes (TLS only) that the socket did not take yet.
        self.cipher = memoryview(b"")
        #: Set by a round while the delivery thread waits for the socket to become writable.
        self.blocked = False
        #: Set when the client leaves: deliver up to here, until ``deadline``.
        self.final_pos: int | None = None
        self.deadline = 0.0

    def add_unicast(self, pos: int, data: memoryview) -> None:
        """Owe ``data`` right after the journal's bytes before ``pos``."""
        self.unicast.append((pos, data))
        self.unicast_bytes += len(data)

    @property
    def backlog(self) -> int:
        """Bytes owed: sealed broadcasts not yet sent, unicasts, unsent TLS records."""
        return self.journal.sealed_end - self.cursor + self.unicast_bytes + len(self.cipher)

    def flush(self, flags: int) -> bool:
        """Send everything owed, in order; False if the socket filled up first.

        ``flags`` go to every ``send``: the daemon's never block and never raise SIGPIPE.
        """
        send = self.send if self.tls is None else self._encrypting_send
        journal = self.journal
        end = journal.sealed_end if self.final_pos is None else self.final_pos
        unicast = self.unicast
        while True:
            limit = end
            if unicast:
                pos, data = unicast[0]
                if pos <= self.cursor:
                    try:
                        sent = send(data, flags)
                    except BlockingIOError:
                        return False
                    self.unicast_bytes -= sent
                    if sent < len(data):
                        unicast[0] = (pos, data[sent:])
                        return False
                    unicast.popleft()
                    continue
                limit = min(limit, pos)
            cursor = self.cursor
            if cursor >= limit:
                return self.tls is None or self._send_cipher(flags)
            start, segment = journal.segment_at(cursor)
            stop = min(limit, start + len(segment))
            try:
                sent = send(memoryview(segment)[cursor - start : stop - start], flags)
            except BlockingIOError:
                return False
            self.cursor = cursor + sent
            if cursor + sent < stop:
                return False

    def _encrypting_send(self, data: bytes | memoryview, flags: int) -> int:
        """A ``send`` that takes plaintext, encrypts it, and sends what the socket takes.

        It reports plaintext as taken once encrypted; the records themselves wait in
        ``cipher``, and nothing more is encrypted until they have left.
        """
        assert self.tls is not None
        if not self._send_cipher(flags):
            raise BlockingIOError
        chunk = data[:TLS_CHUNK]
        self.cipher = memoryview(self.tls.encrypt(chunk))
        self._send_cipher(flags)
        return len(chunk)

    def _send_cipher(self, flags: int) -> bool:
        """Send pending TLS records; True once none are left."""
        cipher = self.cipher
        send = self.send
        while cipher:
            try:
                sent = send(cipher, flags)
            except BlockingIOError:
                break
            cipher = cipher[sent:]
        self.cipher = cipher
        return not cipher
