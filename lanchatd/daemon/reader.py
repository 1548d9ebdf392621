"""One client connection's reader thread: the handshake, then inbound messages until it ends.

The thread only ever blocks on its own socket (also while flood control pauses it), so a
silent, slow or hostile client costs its own thread and nobody else's time, and its leaving
(or being kicked) wakes the thread at once. Outbound bytes are the
delivery thread's business; after the handshake this thread never writes to the socket.
"""

from __future__ import annotations

import select
import socket
import ssl
import time
from collections.abc import Callable
from typing import Final

from lanchatd.core import commands
from lanchatd.core.framing import Framing
from lanchatd.core.lines import chat_prefix
from lanchatd.core.nicknames import MAX_NICK_CHARS, NickError, parse_nick
from lanchatd.core.protocol import (
    EndOfStream,
    InvalidUtf8,
    Line,
    LineTooLong,
    Message,
    NickReply,
    NickRequested,
    ServerConnection,
    ServerEvent,
)
from lanchatd.core.tags import CapRequest, MessageId, event_tags, format_tags
from lanchatd.daemon.peer import Peer
from lanchatd.daemon.ratelimit import TokenBucket
from lanchatd.daemon.room import Room
from lanchatd.daemon.tls import TLS_HANDSHAKE_BYTE, TlsError, TlsSession

#: How long a nickname reply without a newline may wait for one before it counts as classic;
#: each further byte restarts it (within the handshake timeout).
NICK_GRACE: Final = 0.25
#: On a TLS port, how long to wait for a ClientHello before telling a plaintext client (which
#: waits for ``NICK`` and so says nothing first) that this port needs TLS.
TLS_PROBE: Final = 3.0
_RECV_SIZE: Final = 65536
#: Kernel buffer per direction that each client socket asks for (Linux doubles it for its
#: bookkeeping): without it, autotuning lets one client that never reads hold up to 4 MiB
#: (``tcp_wmem``) of the daemon's kernel memory, and one paused flooder up to 32 MiB.
KERNEL_BUFFER: Final = 65536
#: With flood control on, bytes parsed at once: a paused flooder holds at most half this many
#: parsed messages in memory; the rest of what it sent stays in the kernel.
_PARSE_SLICE: Final = 2048
#: Chat lines broadcast under one room-lock acquisition at most: ~0.1 ms of holding it, where
#: a 64 KiB read of one-character lines with flood control off would hold it for ~25 ms.
_BATCH_LINES: Final = 256
#: Longest single wait of a paused reader before it looks for a reloaded rate.
_PAUSE_STEP: Final = 0.25


#: Runs on a connection to the web port after TLS, before ``NICK``: the HTTP exchange
#: (lanchatd.daemon.web.http). Given the handshake deadline, it returns the lines the page
#: already sent once upgraded to a WebSocket, or None when the connection is done.
Upgrade = Callable[[Peer, float], bytes | None]


def serve(
    peer: Peer,
    room: Room,
    tls: ssl.SSLContext | None,
    on_join: Callable[[Peer], None],
    upgrade: Upgrade | None = None,
) -> None:
    """Run a connection from accept to close (``on_join`` once it has joined); never raises."""
    try:
        joined = _handshake(peer, room, tls, upgrade)
        speaks = (tls is None or peer.tls is not None) and (upgrade is None or peer.web is not None)
        if joined is None and peer.shed and speaks:
            now = format_tags(event_tags(None, time.time())) if peer.web is not None else ""
            _say_last(peer, peer.framing.encode_safe(room.catalog("handshake_shed"), now))
        if joined is not None:
            on_join(peer)
            connection, events = joined
            _read(peer, room, connection, events)
    except TlsError as error:
        peer.log.info("tls_failed", error=str(error))
    except Exception:
        peer.log.exception("connection_error")
        room.leave(peer, "error")
    finally:
        room.leave(peer, "disconnect")
        peer.release()


def _handshake(
    peer: Peer, room: Room, tls: ssl.SSLContext | None, upgrade: Upgrade | None
) -> tuple[ServerConnection, list[ServerEvent]] | None:
    """Ask for a nickname and join; return the connection and events already received."""
    settings = room.settings
    sock = peer.sock
    deadline = time.monotonic() + settings.handshake_timeout
    grace_deadline = 0.0
    events: list[ServerEvent] = []
    after: MessageId | None = None
    told: list[str] = []
    try:
        opened = _open(peer, room, tls, upgrade, deadline)
        if opened is None:
            return None
        connection, pending = opened
        sock.settimeout(settings.handshake_timeout)
        send_direct(peer, connection.send(NickRequested()))
        while not events:
            grace = connection.awaiting_grace
            remaining = (grace_deadline if grace else deadline) - time.monotonic()
            data, pending = pending or receive_within(peer, remaining), b""
            if data is None and grace:
                events = connection.grace_expired()
            elif data is None:
                text = room.catalog("nick_timeout", seconds=settings.handshake_timeout)
                _refuse(peer, connection, text, "timeout")
                return None
            else:
                events = connection.receive_data(data)
                while events and isinstance(cap := events[0], CapRequest):
                    events.pop(0)
                    after = _negotiate(peer, room, connection, cap, told) or after
                if connection.awaiting_grace:  # restarted by every byte: someone is still typing
                    grace_deadline = min(deadline, time.monotonic() + NICK_GRACE)
    except OSError:
        return None
    reply = events.pop(0)
    if not isinstance(reply, NickReply):  # the end of the stream: gone before answering
        return None
    if reply.raw.startswith(bytes((TLS_HANDSHAKE_BYTE, 3))):
        peer.log.info("nick_rejected", reason="tls_on_plain_port")
        return None
    try:
        nick = parse_nick(reply.raw)
    except NickError as error:
        _refuse(peer, connection, room.catalog(error.key, limit=MAX_NICK_CHARS), error.key)
        return None
    peer.framing = reply.framing
    peer.tagged = connection.tagged  # a page always is, with or without /cap
    sock.settimeout(None)
    refused = room.join(peer, nick, after)
    if refused:
        text = room.catalog(refused, nick=nick, limit=settings.max_clients)
        _refuse(peer, connection, text, refused)
        return None
    peer.log = peer.log.bind(nick=nick)
    peer.log.info("client_joined", mode=reply.framing.value)
    for text in told:
        room.tell(peer, text)
    return connection, events


def _open(
    peer: Peer, room: Room, tls: ssl.SSLContext | None, upgrade: Upgrade | None, deadline: float
) -> tuple[ServerConnection, bytes] | None:
    """TLS, then the web port's HTTP exchange if any: the connection to ask for a nickname
    on, and what a page already sent; None if the connection is done."""
    if tls is not None and not _start_tls(peer, room, tls, deadline):
        return None
    pending = upgrade(peer, deadline) if upgrade is not None else b""
    if pending is None:
        return None
    framing = Framing.WEB if peer.web is not None else None
    return ServerConnection(room.settings.max_line_bytes, framing), pending


def _negotiate(
    peer: Peer, room: Room, connection: ServerConnection, cap: CapRequest, told: list[str]
) -> MessageId | None:
    """Apply the client's ``/cap`` line: ids from now on, and the id it resumes after, if
    well formed. A problem goes to ``told``, said once it has joined (its first line is its
    own join, as for everyone); only the first ``/cap`` counts."""
    catalog = room.catalog
    if peer.tagged:
        if catalog("cap_repeated") not in told:
            told.append(catalog("cap_repeated"))
        return None
    peer.tagged = connection.tagged
    if cap.bad_after is not None:
        told.append(catalog("cap_bad_after", text=repr(cap.bad_after)))
    return cap.after


def _start_tls(peer: Peer, room: Room, context: ssl.SSLContext, deadline: float) -> bool:
    """Complete the TLS handshake (within the handshake deadline); False if there is none."""
    sock = peer.sock
    first = _recv_within(sock, min(TLS_PROBE, deadline - time.monotonic()), socket.MSG_PEEK)
    if first == b"":
        return False
    if first is None or first[0] != TLS_HANDSHAKE_BYTE:
        peer.log.info("tls_failed", error="plaintext client on the TLS port")
        send_direct(peer, Framing.LINE.encode(room.catalog("tls_required")))
        return False
    session = TlsSession(context, server_side=True)
    received = b""
    while True:
        finished, reply = session.handshake_step(received)
        if reply:
            sock.settimeout(max(0.01, deadline - time.monotonic()))
            sock.sendall(reply)
        if finished:
            peer.tls = session
            return True
        data = _recv_within(sock, deadline - time.monotonic())
        if not data:
            problem = "handshake timed out" if data is None else "closed during handshake"
            peer.log.info("tls_failed", error=problem)
            return False
        received = data


def _recv_within(sock: socket.socket, seconds: float, flags: int = 0) -> bytes | None:
    """One read, or None if nothing arrives within ``seconds``."""
    if seconds <= 0:
        return None
    sock.settimeout(seconds)
    try:
        return sock.recv(_RECV_SIZE, flags)
    except TimeoutError:
        return None


def receive_within(peer: Peer, seconds: float) -> bytes | None:
    """Plaintext from the client (decrypted on a TLS port, taken out of WebSocket frames on
    an upgraded web connection), or None after ``seconds``; b"" at the end."""
    deadline = time.monotonic() + seconds
    while True:
        data = _recv_within(peer.sock, deadline - time.monotonic())
        if not data:
            return data
        ending = False
        if peer.tls is not None:
            data = peer.tls.decrypt(data)
            ending = peer.tls.peer_closed
        if peer.web is not None:
            data = peer.web.receive(data)
            if peer.web.replies:  # before joining, this thread still owns the socket
                send_direct(peer, peer.web.take_replies())
            ending = ending or peer.web.closed
        if data or ending:
            return data


def send_direct(peer: Peer, data: bytes) -> None:
    """Write before the client has joined, while this thread still owns the socket."""
    peer.sock.sendall(peer.tls.encrypt(data) if peer.tls is not None else data)


def _refuse(peer: Peer, connection: ServerConnection, text: str, reason: str) -> None:
    """Tell a client why it cannot join; it is closed afterwards."""
    peer.log.info("nick_rejected", reason=reason)
    _say_last(peer, connection.send(Line(text), time.time()))


def _say_last(peer: Peer, data: bytes) -> None:
    """Send an unjoined client its last bytes before it is closed, if it takes them promptly
    (a page then gets a close frame)."""
    if peer.web is not None:
        data += peer.web.farewell("refused")
    try:
        peer.sock.settimeout(1.0)
        send_direct(peer, data)
    except (OSError, TlsError):
        pass


def _read(peer: Peer, room: Room, connection: ServerConnection, events: list[ServerEvent]) -> None:
    """Turn inbound messages into room actions until the client leaves."""
    reader = _Reader(peer, room, connection)
    if not reader.handle(events):
        return
    recv = peer.sock.recv
    tls, web = peer.tls, peer.web
    while True:
        try:
            data = recv(_RECV_SIZE)
        except OSError:
            return
        if not data:
            reader.handle(reader.connection.receive_data(data))
            return
        ending = False
        if tls is not None:
            data = tls.decrypt(data)  # may be b"": a record can span reads
            ending = tls.peer_closed  # close_notify: the end of the stream, as EOF is
        if web is not None:
            data = web.receive(data)  # b"" until a message is complete
            if web.replies:
                room.send_raw(peer, web.take_replies())
            ending = ending or web.closed  # a close frame
        if (data and not reader.feed(data)) or ending:
            return


class _Reader:
    """The open connection's inbound side: parse, pace and act, a slice at a time.

    With flood control on, bytes reach the parser ``_PARSE_SLICE`` at a time and the next
    slice only once the last one's messages are handled, so a throttled client holds at most
    one slice of parsed messages; everything else it sent waits in the kernel, whose full
    receive window stops the sender (TCP backpressure).
    """

    __slots__ = ("bucket", "connection", "peer", "poller", "room", "settings")

    def __init__(self, peer: Peer, room: Room, connection: ServerConnection) -> None:
        self.peer = peer
        self.room = room
        self.connection = connection
        self.settings = room.settings
        self.bucket = TokenBucket(self.settings.rate, self.settings.burst)
        self.poller = select.poll()
        self.poller.register(peer.sock, select.POLLRDHUP)

    def feed(self, data: bytes) -> bool:
        """Parse and act on one read's bytes; False once the client is gone."""
        self._reconfigure()
        if not self.bucket.rate:
            return self.handle(self.connection.receive_data(data))
        view = memoryview(data)
        for start in range(0, len(view), _PARSE_SLICE):
            chunk = bytes(view[start : start + _PARSE_SLICE])
            if not self.handle(self.connection.receive_data(chunk)):
                return False
        return True

    def _reconfigure(self) -> None:
        """Pick up a reloaded configuration."""
        settings = self.room.settings
        if settings is not self.settings:
            self.settings = settings
            self.bucket.reconfigure(settings.rate, settings.burst)
            self.connection.max_line_bytes = settings.max_line_bytes
            if self.peer.web is not None:
                self.peer.web.limit = settings.max_line_bytes

    def handle(self, events: list[ServerEvent]) -> bool:
        """Act on parsed events; False once the client has left or asked to leave.

        Consecutive chat lines are broadcast under one lock acquisition (up to
        ``_BATCH_LINES``); flood control may pause between them, and then what is already
        accepted goes out first. Blank lines cost nothing.
        """
        peer, room, bucket = self.peer, self.room, self.bucket
        prefix = chat_prefix(peer.nick)  # own_words, hoisted out of the per-message loop
        limited = bucket.rate != 0  # flood control off: no token to take per line
        if not limited:
            bucket.throttled = False
        batch: list[str] = []
        for event in events:
            text = ""
            if isinstance(event, Message):
                text = event.text.removeprefix(prefix)
                if not text.strip():
                    continue
            elif isinstance(event, EndOfStream):
                break
            if limited:
                if bucket.take():
                    batch = self._say(batch)
                    if not self._pause():
                        return False
                else:
                    bucket.throttled = False
            if isinstance(event, LineTooLong):
                room.tell(peer, room.catalog("line_too_long", limit=event.limit))
                continue
            if isinstance(event, InvalidUtf8):
                room.tell(peer, room.catalog("bad_utf8"))
                continue
            peer.messages += 1
            command = commands.parse_command(text)
            if command is not None:
                batch = self._say(batch)
                peer.last_active = time.monotonic()
                if not room.command(peer, command):
                    return False
                continue
            batch.append(text)
            if len(batch) >= _BATCH_LINES:
                batch = self._say(batch)
        self._say(batch)
        return not peer.left

    def _say(self, batch: list[str]) -> list[str]:
        """Broadcast ``batch`` if any; a fresh empty one to fill next.

        The sender counts as active from here: once per batch, not per line.
        """
        if batch:
            self.peer.last_active = time.monotonic()
            self.room.say(self.peer, batch)
        return []

    def _pause(self) -> bool:
        """Stop reading until the bucket allows the next message; False if the client went.

        The wait is on the socket, not the clock: the client closing (or an error) ends it at
        once, as does being kicked, banned or dropped, which shuts our reading side. What the
        client sent but we have not yet acted on is then dropped with it.
        """
        peer, bucket = self.peer, self.bucket
        if not bucket.throttled:
            bucket.throttled = True
            notice = self.room.catalog("flood", rate=bucket.rate, burst=bucket.burst)
            self.room.tell(peer, notice)
            peer.log.info("flood_throttled", rate=bucket.rate, burst=bucket.burst)
        while (wait := bucket.due()) > 0:
            if peer.left or self.poller.poll(min(wait, _PAUSE_STEP) * 1000):
                return False
            self._reconfigure()
        return not peer.left


def configure_socket(sock: socket.socket, keepalive: float) -> None:
    """Per-client socket options.

    Fixed kernel buffers (``KERNEL_BUFFER``) bound what a client costs in kernel memory.
    No Nagle delay: deliveries would otherwise wait on delayed ACKs (20-45 ms). TCP keepalive
    finds peers that vanished without a FIN (a pulled cable, a laptop lid): after
    ``keepalive`` idle seconds the kernel probes, and four unanswered probes, a sixth of that
    apart, end the connection, so its reader sees an error and the client leaves the room.
    TCP_USER_TIMEOUT gives data the room sends to such a peer the same deadline.
    """
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, KERNEL_BUFFER)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, KERNEL_BUFFER)
    if keepalive:
        idle = max(1, round(keepalive))
        interval = max(1, idle // 6)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, idle)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, interval)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, 4)
        # Keepalive only probes an idle connection; while the room talks there is always
        # unacknowledged data, so the same deadline must bound retransmissions too.
        timeout_ms = (idle + 4 * interval) * 1000
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_USER_TIMEOUT, timeout_ms)
