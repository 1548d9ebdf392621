"""Outbound delivery: how a broadcast reaches every client without waiting on any of them.

In CPython a thread per recipient is the slow design: every message wakes hundreds of threads
that then queue for the GIL. Instead each broadcast is encoded once and appended to a
*journal* (one per framing) that all clients share. A *round* sends every client the journal
bytes past its own cursor with one non-blocking ``send``: whatever accumulated since that
client's last send leaves together, and Python does O(1) work per client per round, however
many messages the round carries. A client whose socket is full is watched for writability and
skipped meanwhile; one whose backlog passes ``send_buffer_bytes`` is dropped as a slow
consumer. Nobody else ever waits for it.

Rounds run one at a time (the round lock): in the delivery thread, woken by whatever is
queued, and in a quiet room in the reader thread that has just queued a client's chat lines
(``deliver_now``), which then need not wait for a wake-up.

The journal and each client's outbox (cursor, unicasts, TLS leftovers) live in journal.py,
free of sockets and threads; this module is the rounds, the thread, the selector and the
hand-over.

Everything the room hands over (attach, unicasts: lines for one client only, detach) is queued
under the room lock, in the same order as the broadcasts, and taken by the next round when it
seals.
"""

from __future__ import annotations

import contextlib
import os
import selectors
import socket
import threading
import time
from collections.abc import Callable, Iterable
from typing import Final

from lanchatd.core.framing import Framing
from lanchatd.core.tags import MessageId, event_tags, format_tags
from lanchatd.daemon.fanout import FanOut
from lanchatd.daemon.history import Entry, History, Run
from lanchatd.daemon.journal import Journal, Outbox, Wire
from lanchatd.daemon.peer import Peer
from lanchatd.daemon.tls import TlsError

_SEND_FLAGS: Final = socket.MSG_DONTWAIT | socket.MSG_NOSIGNAL
#: A chat line is sent by the thread that read it only when no round ended this recently;
#: in a busier room the delivery thread sends, many lines from many clients a round (at 100
#: clients and full speed, readers that sent their own lines delivered 10 % less).
QUIET: Final = 0.002
#: How long a departing client (``/quit``, kicked, shutdown) may take to receive its last lines.
CLOSE_GRACE: Final = 2.0
#: The journal keeps what some client may still need; the scan that finds the oldest such
#: byte runs once this many segments or bytes are held, not after every round.
TRIM_SEGMENTS: Final = 64
TRIM_BYTES: Final = 1 << 20

_ATTACH: Final = 0
_UNICAST: Final = 1
_DETACH: Final = 2
_ABORT: Final = 3


class Delivery:
    """The delivery rounds, their thread, and the queue the room feeds them through.

    Methods named ``*_locked`` must be called with the room lock held: that lock is what puts
    broadcasts, unicasts (lines for one client) and membership changes into one order.
    """

    def __init__(
        self,
        lock: threading.Lock,
        send_buffer_bytes: int,
        on_slow: Callable[[Peer], object],
        on_error: Callable[[Peer], object],
        history: History | None = None,
    ) -> None:
        """Deliver under ``lock``; tell the room through ``on_slow``/``on_error`` why a client
        is dropped (called by a round, without the lock; the result is ignored).
        ``history`` secures a round's entries (see History.secure_through) before the
        round is sent.
        """
        self.lock = lock
        self.send_buffer_bytes = send_buffer_bytes
        self._on_slow = on_slow
        self._on_error = on_error
        self._history = history
        #: The newest history id the room handed over since the last round (room lock).
        self.recorded: MessageId | None = None
        self.journals: dict[Wire, Journal] = {
            (framing, tagged): Journal(framing, tagged)
            for framing in Framing
            for tagged in (False, True)
        }
        self._changes: list[tuple[int, Peer, int, memoryview | None]] = []
        self._wakeup = os.eventfd(0, os.EFD_NONBLOCK | os.EFD_CLOEXEC)
        #: Held by whichever thread runs a round: the state below is the round's.
        self._round_lock = threading.Lock()
        self._closed = False
        self._broken = False
        #: Lines were queued without a wake-up and no round has sealed them yet (room lock).
        self._unsent = False
        #: When the room counts as quiet again: ``QUIET`` after the last round ended.
        self._quiet_from = 0.0
        self._signalled = False
        self._stopping = False
        #: The rounds' own: every attached client's outbox, and the same outboxes
        #: split in two. *Ready*: owed nothing (cursor at its journal's sealed end, no
        #: unicasts, not leaving, no TLS), so a new segment is all a round owes them and
        #: ``_fan_out`` sends it without asking more. *Busy*: every other.
        self._outboxes: dict[Peer, Outbox] = {}
        self._ready: dict[Journal, dict[Peer, Outbox]] = {j: {} for j in self.journals.values()}
        #: Where each journal's ready clients stand (their cursors): a segment sealed by a
        #: round that failed before its fan-out makes the next fan-out send from each cursor.
        self._ready_at: dict[Journal, int] = {j: 0 for j in self.journals.values()}
        #: The ready clients' sockets, in the same order: all the fan-out loop touches.
        self._socks: dict[Journal, dict[Peer, socket.socket]] = {
            j: {} for j in self.journals.values()
        }
        self._busy: set[Peer] = set()
        #: Sends a fan-out's segment; in a large room with a helper thread (fanout.py).
        self._sender = FanOut()
        #: Detached peers still being flushed (each with a deadline in its outbox).
        self._closing: set[Peer] = set()
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._wakeup, selectors.EVENT_READ, None)
        self._thread = threading.Thread(target=self._run, name="delivery", daemon=True)
        #: For ``lanchatctl stats``: lines queued to clients (written under the room lock) and
        #: bytes the kernel accepted (written by the rounds).
        self.lines_out = 0
        self.bytes_out = 0

    def start(self) -> None:
        self._sender.start()
        self._thread.start()

    def is_alive(self) -> bool:
        """False once the delivery thread or the fan-out helper ended or a round another
        thread ran failed: the daemon's health check (and so systemd's watchdog) sees each."""
        return self._thread.is_alive() and self._sender.is_alive() and not self._broken

    def join(self, timeout: float) -> None:
        self._thread.join(timeout)

    # Called under the room lock -------------------------------------------------------------

    def broadcast_locked(self, text: str, entry: Entry | None = None) -> None:
        """Queue one line for every attached client, encoded once per journal in use.

        ``entry`` is the history entry the line is (its id and time tag it for clients that
        negotiated ids); other lines are tagged with the time now.
        """
        tags = ""
        for journal in self.journals.values():
            if journal.readers:
                if journal.tagged:
                    tags = tags or _tags(entry)
                journal.append(journal.framing.encode_safe(text, tags if journal.tagged else ""))
                self.lines_out += journal.readers
        self._wake_locked()

    def broadcast_many_locked(self, prefix: str, texts: list[str], run: Run | None = None) -> None:
        """Queue ``prefix + text`` for every text as ``broadcast_locked`` would, line after
        line, but encoded as one append per journal in use; ``run`` is the texts' history.

        The caller calls ``deliver_now`` once it has released the lock: in a quiet room
        (no round for ``QUIET`` seconds) that sends them from the caller's thread.
        """
        lines: list[str] | None = None
        for journal in self.journals.values():
            if journal.readers:
                if lines is None:
                    lines = [prefix + text for text in texts]
                if not journal.tagged:
                    journal.append(journal.framing.encode_safe_many(lines))
                else:
                    encode = journal.framing.encode_safe
                    stamps: list[Entry | None] = [*run.entries()] if run else [None] * len(lines)
                    journal.append(
                        b"".join(encode(ln, _tags(e)) for e, ln in zip(stamps, lines, strict=True))
                    )
                self.lines_out += journal.readers * len(lines)
        if self._round_lock.locked() or time.monotonic() < self._quiet_from:
            self._wake_locked()  # a busy room: the delivery thread's rounds batch more
        else:
            self._unsent = True

    def unicast_locked(self, peer: Peer, text: str, tags: str | None = None) -> None:
        """Queue one line for ``peer`` only, after every broadcast queued so far; a tagged
        peer gets ``tags`` (a replayed entry's) or the time now."""
        if peer.tagged:
            tags = tags if tags is not None else _tags(None)
        self.unicast_bytes_locked(peer, peer.framing.encode_safe(text, tags or ""))
        self.lines_out += 1

    def unicast_bytes_locked(self, peer: Peer, data: bytes) -> None:
        """Queue bytes already in ``peer``'s framing (a WebSocket pong or close) likewise."""
        journal = self.journals[peer.framing, peer.tagged]
        self._changes.append((_UNICAST, peer, journal.end, memoryview(data)))
        self._wake_locked()

    def attach_locked(self, peer: Peer) -> None:
        """Start delivering to ``peer``: it receives every broadcast queued from now on."""
        journal = self.journals[peer.framing, peer.tagged]
        journal.readers += 1
        peer.retain()
        self._changes.append((_ATTACH, peer, journal.end, None))
        self._wake_locked()

    def detach_locked(self, peer: Peer, *, graceful: bool, reason: str = "") -> None:
        """Stop delivering to ``peer``: after what is queued so far if graceful, else at once.

        A page is sent a close frame saying ``reason`` last.
        """
        journal = self.journals[peer.framing, peer.tagged]
        journal.readers -= 1
        if graceful and peer.web is not None:
            self.unicast_bytes_locked(peer, peer.web.farewell(reason))
        self._changes.append((_DETACH if graceful else _ABORT, peer, journal.end, None))
        self._wake_locked()

    def stop_locked(self) -> None:
        """Finish once every attached client has been detached and flushed."""
        self._stopping = True
        self._wake_locked()

    def _wake_locked(self) -> None:
        if not self._signalled:
            self._signalled = True
            os.eventfd_write(self._wakeup, 1)

    # Rounds ------------------------------------------------------------------------------------

    def deliver_now(self) -> None:
        """Run a round in the calling thread unless one is under way (without the room lock).

        A reader calls this right after queueing a client's lines (``broadcast_many_locked``);
        in a quiet room it sends them, as the tutorial's server sends from the thread that
        read them: nothing has to wake first, and rounds come from many threads. That counts
        with the kernel's scheduler: a thread that sent every round (a third of a core at
        1000 clients and 50 messages/s) was preempted by the woken load generators ~100 times
        in one round in ten, a reader that sends its own client's rounds ~10 times. If a
        round is under way the delivery thread is woken instead, as for anything else
        queued, and sends them next.
        """
        if not self._unsent:  # a round since sealed them (this thread set it, under the lock)
            return
        if self._round_lock.acquire(blocking=False):
            try:
                if not self._closed:
                    self._round((), woken=False)
            except BaseException:
                self._broken = True  # a bug, as if the delivery thread had died of it
                raise
            finally:
                self._round_lock.release()
            return
        with self.lock:
            if self._unsent:  # the round under way had sealed before they were queued
                self._wake_locked()

    def _round(self, writable: Iterable[Peer], *, woken: bool) -> bool:
        """Seal what was queued and send every client what it is owed; the round lock is
        held. True once stopping and every client is gone.

        Only the delivery thread (``woken``) takes the wake-up: one pending while another
        thread runs a round is left for it, so it sees new deadlines and the end of a stop
        (a detach or a stop always wakes it; a reader's round of chat lines does not).
        """
        with self.lock:
            if woken and self._signalled:
                self._signalled = False
                with contextlib.suppress(BlockingIOError):
                    os.eventfd_read(self._wakeup)
            fresh = [journal for journal in self.journals.values() if journal.seal()]
            self._unsent = False
            changes, self._changes = self._changes, []
            stopping = self._stopping
            recorded, self.recorded = self.recorded, None
        history = self._history
        if recorded is not None and history is not None:
            # What a client receives survives kill -9; if it cannot be written,
            # history counts and logs it and the round is delivered all the same.
            history.secure_through(recorded)
        touched = self._apply(changes)
        for peer in writable:
            outbox = self._outboxes.get(peer)
            if outbox is not None and outbox.blocked:
                outbox.blocked = False
                self._selector.unregister(peer.sock)
                touched.add(peer)
        for journal in fresh:
            self._fan_out(journal)
        self._flush(self._busy if fresh else touched)
        self._expire()
        self._trim()
        self._quiet_from = time.monotonic() + QUIET
        return stopping and not self._outboxes

    # The delivery thread --------------------------------------------------------------------

    def _run(self) -> None:
        try:
            self._loop()
        finally:
            self._close()

    def _close(self) -> None:
        """Give back the eventfd and the selector.

        Wake-ups after this are no-ops (``_signalled`` stays set), never a write to a
        descriptor number the kernel may have handed to someone else by then.
        """
        with self._round_lock, self.lock:
            self._sender.close()
            self._closed = True
            self._signalled = True
            os.close(self._wakeup)
            self._selector.close()

    def _loop(self) -> None:
        """Wait for news (queued under the room lock, which always writes the eventfd), a
        client's socket taking more, or a leaving client's deadline; then run a round.

        The selector is shared with rounds other threads run; registering while this thread
        waits in it is safe (epoll), and what it reports is checked again in the round.
        """
        select = self._selector.select
        while True:
            with self._round_lock:
                timeout = self._next_timeout()
            ready = select(timeout)
            writable = [key.data for key, _ in ready if key.data is not None]
            with self._round_lock:
                if self._round(writable, woken=True):
                    return

    def _apply(self, changes: list[tuple[int, Peer, int, memoryview | None]]) -> set[Peer]:
        touched: set[Peer] = set()
        outboxes = self._outboxes
        for kind, peer, pos, data in changes:
            if kind == _ATTACH:
                outboxes[peer] = Outbox(
                    self.journals[peer.framing, peer.tagged], pos, peer.sock.send, peer.tls
                )
                self._busy.add(peer)
                touched.add(peer)
                continue
            if (outbox := outboxes.get(peer)) is None:
                continue
            self._make_busy(peer, outbox)
            if kind == _UNICAST:
                assert data is not None
                outbox.add_unicast(pos, data)
            elif kind == _DETACH:
                outbox.final_pos = pos
                outbox.deadline = time.monotonic() + CLOSE_GRACE
                self._closing.add(peer)
            else:
                self._retire(peer)
                continue
            touched.add(peer)
        return touched

    def _fan_out(self, journal: Journal) -> None:
        """Send ``journal``'s new segment to its ready clients: the usual round.

        At 1000 clients in a room a round is 1000 ``send``s, and the last client waits for
        all of them, so the sends (FanOut: in a large room two threads) do nothing else; the
        cursors move after the last send. A client the socket did not take it all from
        becomes busy, and ``_flush``, which runs next, meets the short send or the error
        again and acts on it.
        """
        ready = self._ready[journal]
        start, segment = journal.segments[-1]
        if start != self._ready_at[journal]:
            for peer, outbox in list(ready.items()):
                self._make_busy(peer, outbox)
        self._ready_at[journal] = journal.sealed_end
        if not ready:
            return
        size = len(segment)
        short = self._sender.send(self._socks[journal].values(), len(ready), segment, _SEND_FLAGS)
        end = journal.sealed_end
        for outbox in ready.values():
            outbox.cursor = end
        self.bytes_out += size * len(ready)
        if short:
            peers = list(ready)
            for index, sent in short:
                outbox = ready[peers[index]]
                outbox.cursor = start + sent
                self._make_busy(peers[index], outbox)
                self.bytes_out -= size - sent

    def _make_ready(self, peer: Peer, outbox: Outbox) -> None:
        self._busy.discard(peer)
        self._ready[outbox.journal][peer] = outbox
        self._socks[outbox.journal][peer] = peer.sock

    def _make_busy(self, peer: Peer, outbox: Outbox) -> None:
        if self._ready[outbox.journal].pop(peer, None) is not None:
            del self._socks[outbox.journal][peer]
            self._busy.add(peer)

    def _flush(self, peers: Iterable[Peer]) -> None:
        limit = self.send_buffer_bytes
        outboxes = self._outboxes
        for peer in list(peers):
            outbox = outboxes.get(peer)
            if outbox is None:
                continue
            if not outbox.blocked:
                cursor, unicast_bytes = outbox.cursor, outbox.unicast_bytes
                try:
                    done = outbox.flush(_SEND_FLAGS)
                except (OSError, TlsError):
                    self._on_error(peer)
                    self._retire(peer)
                    continue
                self.bytes_out += outbox.cursor - cursor + unicast_bytes - outbox.unicast_bytes
                if done:
                    if outbox.final_pos is not None:
                        self._retire(peer)
                    elif outbox.tls is None:
                        self._make_ready(peer, outbox)
                    continue
                outbox.blocked = True
                self._selector.register(peer.sock, selectors.EVENT_WRITE, peer)
            # Only what the socket would not take counts against the client, so a burst
            # larger than the limit does not cost a reader that keeps up. The room hears why
            # first: retiring wakes the peer's reader, whose own "disconnect" must find the
            # peer already gone.
            if outbox.backlog > limit:
                self._on_slow(peer)
                self._retire(peer)

    def _expire(self) -> None:
        now = time.monotonic()
        outboxes = self._outboxes
        for peer in [p for p in self._closing if outboxes[p].deadline <= now]:
            self._retire(peer)

    def _next_timeout(self) -> float | None:
        if not self._closing:
            return None
        deadline = min(self._outboxes[p].deadline for p in self._closing)
        return max(0.0, deadline - time.monotonic())

    def _trim(self) -> None:
        """Forget what everyone has been sent; an O(clients) scan, so not after every round."""
        for journal in self.journals.values():
            segments = journal.segments
            if not segments or (
                len(segments) < TRIM_SEGMENTS and journal.sealed_end - segments[0][0] < TRIM_BYTES
            ):
                continue
            cursors = [o.cursor for o in self._outboxes.values() if o.journal is journal]
            journal.trim(min(cursors, default=journal.sealed_end))

    def _retire(self, peer: Peer) -> None:
        outbox = self._outboxes.pop(peer)
        self._make_busy(peer, outbox)
        self._busy.discard(peer)
        self._closing.discard(peer)
        if outbox.blocked:
            self._selector.unregister(peer.sock)
        if peer.tls is not None:  # a clean TLS close, if the socket takes it
            with contextlib.suppress(OSError, TlsError):
                peer.sock.send(peer.tls.close(), _SEND_FLAGS)
        peer.shutdown()
        peer.release()


def _tags(entry: Entry | None) -> str:
    """The tag section of a live line for clients that negotiated ids: a room event's id
    and time, or the time now for any other line."""
    if entry is None:
        return format_tags(event_tags(None, time.time()))
    return format_tags(event_tags(entry.id, entry.at))
