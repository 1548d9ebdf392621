"""One connection to the daemon: connect, answer ``NICK``, be let in or told why not.

The protocol itself is :class:`lanchatd.core.protocol.ClientConnection`, which also tells
refusals and removals apart by catalogue key; this is the asyncio glue around it, and the
wording of refusals (a taken nickname, a full server, a ban) as one-line reasons.
Where the server is and whether to speak TLS to it travel together as one :class:`Endpoint`.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import ssl
from dataclasses import dataclass
from typing import Final

from lanchatd.client.words import say
from lanchatd.core.lines import REMOVALS, refusal_key
from lanchatd.core.protocol import (
    GREETING,
    ClientConnection,
    ClientEvent,
    EndOfStream,
    Line,
    Message,
    Nick,
    NickRequested,
    OfferIds,
    ProtocolError,
    Refusal,
    Removal,
)
from lanchatd.core.tags import MessageId

DEFAULT_PORT: Final = 5001
CONNECT_TIMEOUT: Final = 10.0
#: How long closing a TLS connection may wait for the server's side of the TLS goodbye.
TLS_CLOSE_TIMEOUT: Final = 2.0
#: After a failed TLS handshake, how long a plain connection may take to show ``NICK``.
PLAIN_PROBE_TIMEOUT: Final = 3.0
_RECV_SIZE: Final = 65536


class ConnectError(Exception):
    """The server could not be reached or did not let us in; the message says why, in one line.

    ``final`` marks a refusal that retrying will not cure (a ban).
    """

    def __init__(self, message: str, *, final: bool = False) -> None:
        super().__init__(message)
        self.final = final


@dataclass(frozen=True, slots=True)
class Refused:
    """The server refused the nickname; ``reason`` is the line it sent (``*** ...``)."""

    reason: str


def describe_address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def parse_address(text: str) -> tuple[str, int | None]:
    """``HOST``, ``HOST:PORT``, ``[IPV6]``, ``[IPV6]:PORT`` or a bare IPv6 address: the host
    and the port (None when not given). Raises ValueError with a one-line reason."""
    if text.startswith("["):
        host, bracket, rest = text[1:].partition("]")
        if not bracket or not host or (rest and not rest.startswith(":")):
            raise ValueError(say("bad_address", text=text))
        return host, _port(rest[1:], text) if rest else None
    if text.count(":") == 1:
        host, _, port = text.partition(":")
        if not host:
            raise ValueError(say("no_host", text=text))
        return host, _port(port, text)
    return text, None  # a name, an IPv4 address, or an IPv6 address without brackets


def _port(text: str, whole: str) -> int:
    if not text.isdecimal() or not 1 <= int(text) <= 65535:
        raise ValueError(say("bad_port", text=whole))
    return int(text)


@dataclass(frozen=True, slots=True)
class Endpoint:
    """Where the server is and how to reach it: plain TCP, or TLS with ``tls`` as context.

    The TLS server name is ``host``, so a certificate is checked against the name (or the
    IP address) the user typed. Reconnecting reuses the endpoint, and so its TLS settings.
    """

    host: str
    port: int
    tls: ssl.SSLContext | None = None
    #: Other nodes serving the same room (``lanchat HOST1,HOST2``, docs/cluster.md), tried in
    #: order whenever this one cannot be reached: a reconnect moves to a live node.
    others: tuple[Endpoint, ...] = ()

    def __str__(self) -> str:
        return describe_address(self.host, self.port)

    def candidates(self) -> tuple[Endpoint, ...]:
        """This endpoint, then the other nodes of its room."""
        return (self, *self.others)

    @property
    def verified(self) -> bool:
        """True unless this is TLS with certificate checks turned off (``--insecure``)."""
        return self.tls is None or self.tls.verify_mode != ssl.CERT_NONE


def tls_context(cafile: str | None = None, *, verify: bool = True) -> ssl.SSLContext:
    """A client context with the library's modern defaults, TLS 1.2 at least.

    Trusts the system's certificate authorities, or only those in ``cafile`` (a private CA,
    or the server's own self-signed certificate); ``verify=False`` checks nothing at all.
    Raises ValueError with a one-line reason when ``cafile`` cannot be used.
    """
    try:
        context = ssl.create_default_context(cafile=cafile)
    except ssl.SSLError as error:  # before OSError, which it is too
        if error.reason == "NO_CERTIFICATE_OR_CRL_FOUND":
            raise ValueError(say("no_pem", path=cafile)) from None
        reason = error.reason.replace("_", " ").lower() if error.reason else "bad PEM data"
        raise ValueError(say("cannot_use", path=cafile, reason=reason)) from None
    except OSError as error:
        raise ValueError(say("cannot_read", path=cafile, reason=_reason(error))) from None
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if not verify:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    return context


class Connection:
    """One joined connection (TCP, or TLS over TCP): bytes in through
    :class:`ClientConnection`, lines (and a removal, if it comes) out."""

    __slots__ = ("_protocol", "_reader", "_writer", "pending")

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        protocol: ClientConnection,
        pending: list[Line | Removal],
    ) -> None:
        self._reader = reader
        self._writer = writer
        self._protocol = protocol
        #: Lines that arrived with the join, not yet handed out by :meth:`read`.
        self.pending = pending

    @property
    def tls_version(self) -> str | None:
        """The TLS version in use ("TLSv1.3"), or None on a plain connection."""
        tls = self._writer.get_extra_info("ssl_object")
        return tls.version() if tls is not None else None

    async def read(self, timeout: float | None = None) -> list[Line | Removal] | None:
        """The next received lines; None once the connection has ended.

        Raises TimeoutError when nothing at all arrives within ``timeout`` seconds.
        """
        if self.pending:
            lines, self.pending = self.pending, []
            return lines
        while True:
            try:
                data = await asyncio.wait_for(self._reader.read(_RECV_SIZE), timeout)
            except TimeoutError:  # an OSError too, but not the end of the connection
                raise
            except (ConnectionError, OSError):
                return None
            lines = _lines(self._protocol.receive_data(data))
            if lines:
                return lines
            if not data:
                return None

    def write(self, text: str) -> None:
        """Queue one line (newlines inside become spaces); a dead connection is ignored here."""
        if not self._writer.is_closing():
            self._writer.write(self._protocol.send(Message(text)))

    async def drain(self) -> None:
        """Wait until the kernel has taken what was written (back-pressure for big inputs)."""
        with contextlib.suppress(ConnectionError, OSError):
            await self._writer.drain()

    def end_input(self) -> None:
        """Half-close: the server reads everything sent so far, then sees end of file.

        A TLS stream cannot be half-closed (asyncio sends no end of file under TLS), so
        there the same is said with ``/quit``: the server also handles it after everything
        sent before it, then closes the connection.
        """
        with contextlib.suppress(OSError, RuntimeError):
            if self._writer.is_closing():
                return
            if self._writer.can_write_eof():
                self._writer.write_eof()
            elif self.tls_version is not None:
                self.write("/quit")

    def abort(self) -> None:
        self._writer.transport.abort()

    async def close(self) -> None:
        """Close; under TLS the goodbye waits for the server's at most ``TLS_CLOSE_TIMEOUT``."""
        self._writer.close()
        with contextlib.suppress(ConnectionError, OSError, TimeoutError):
            async with asyncio.timeout(TLS_CLOSE_TIMEOUT):
                await self._writer.wait_closed()
                return
        self.abort()


def _tune(writer: asyncio.StreamWriter) -> None:
    """No Nagle delay for typed lines; keepalive so a vanished peer is noticed while idle."""
    sock = writer.get_extra_info("socket")
    if sock is None:
        return
    with contextlib.suppress(OSError, AttributeError):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, 30)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, 10)
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, 3)


async def join(
    endpoint: Endpoint, nick: str, timeout: float = CONNECT_TIMEOUT, after: MessageId | None = None
) -> Connection | Refused:
    """Connect (over TLS if the endpoint says so), answer ``NICK`` and wait to be let in.

    Message ids are always asked for (``/cap ids``); ``after`` resumes after the newest
    room event already shown, so the server replays exactly what was missed.

    The server's first line to a newcomer is its own join broadcast; a refusal is one line
    starting with ``*`` followed by the server closing the connection.
    Raises :class:`ConnectError` when there is no joining at all (refused, unreachable,
    timed out, server full, not a lanchat server, a TLS failure).
    """
    greeted = await _reach_any(endpoint, timeout)
    try:
        async with asyncio.timeout(timeout):
            return await greeted.admit(nick, after)
    except TimeoutError:
        raise _timed_out(greeted.endpoint) from None


async def reach(endpoint: Endpoint, timeout: float = CONNECT_TIMEOUT) -> Greeted:
    """Connect and wait for ``NICK``, to know at once whether a server answers; the nickname
    is given later with :meth:`Greeted.answer`. Raises :class:`ConnectError` as join does."""
    greeted = await _reach_any(endpoint, timeout)
    greeted.watch()
    return greeted


async def _reach_any(endpoint: Endpoint, timeout: float) -> Greeted:
    """The first of the endpoint's nodes that answers (each within ``timeout``); the last
    one's error if none does."""
    failure: ConnectError | None = None
    for candidate in endpoint.candidates():
        try:
            async with asyncio.timeout(timeout):
                return await _reach(candidate)
        except TimeoutError:
            failure = _timed_out(candidate)
        except ConnectError as error:
            if error.final:
                raise
            failure = error
    assert failure is not None
    raise failure


class Greeted:
    """A connection the server has asked for a nickname, not answered yet.

    While the user thinks of a name the server may give up on us (its handshake timeout, a
    shutdown): anything it sends meanwhile makes this connection stale, and :meth:`answer`
    then joins over a new one.
    """

    def __init__(
        self,
        endpoint: Endpoint,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        protocol: ClientConnection,
    ) -> None:
        self.endpoint = endpoint
        self._reader = reader
        self._writer = writer
        self._protocol = protocol
        self._watch: asyncio.Future[bytes] | None = None

    def watch(self) -> None:
        """Notice anything the server sends before we answer."""
        self._watch = asyncio.ensure_future(self._reader.read(_RECV_SIZE))

    async def answer(self, nick: str, timeout: float = CONNECT_TIMEOUT) -> Connection | Refused:
        """Give the nickname, on this connection if it is still fresh, else on a new one."""
        if self._watch is not None:
            self._watch.cancel()
            await asyncio.wait({self._watch})
            if not self._watch.cancelled():
                self._watch.exception()  # retrieved: the connection is stale either way
                self.close()
                return await join(self.endpoint, nick, timeout)
        try:
            async with asyncio.timeout(timeout):
                return await self.admit(nick)
        except TimeoutError:
            raise _timed_out(self.endpoint) from None

    async def admit(self, nick: str, after: MessageId | None = None) -> Connection | Refused:
        """Answer ``NICK`` (asking for ids, resuming ``after``) and read until let in or
        refused."""
        try:
            return await _admission(
                self._reader, self._writer, self._protocol, nick, self.endpoint, after
            )
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        if self._watch is not None:
            self._watch.cancel()
        self._writer.transport.abort()


async def _streams(sock: socket.socket) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """asyncio streams on a connected socket, which is closed if that fails."""
    try:
        return await asyncio.open_connection(sock=sock)
    except BaseException:
        sock.close()
        raise


async def _reach(endpoint: Endpoint) -> Greeted:
    sock = await _connect(endpoint)
    if endpoint.tls is not None:
        reader, writer = await _start_tls(sock, endpoint)
    else:
        reader, writer = await _streams(sock)
    try:
        protocol = await _greeting(reader, writer, str(endpoint))
    except BaseException:
        writer.transport.abort()
        raise
    return Greeted(endpoint, reader, writer, protocol)


async def _start_tls(
    sock: socket.socket, endpoint: Endpoint
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """The TLS handshake on a connected socket, its failures turned into one-line reasons."""
    where = str(endpoint)
    try:
        return await asyncio.open_connection(
            sock=sock,
            ssl=endpoint.tls,
            server_hostname=endpoint.host,
            ssl_shutdown_timeout=TLS_CLOSE_TIMEOUT,
        )
    except ssl.SSLCertVerificationError as error:
        sock.close()
        message = say("cannot_connect", where=where, reason=_untrusted(error))
        raise ConnectError(message, final=True) from None
    except (ConnectionError, OSError, EOFError) as error:  # ssl.SSLError is an OSError
        sock.close()
        if await _speaks_plain_lanchat(endpoint):
            message = say("cannot_connect", where=where, reason=say("no_tls"))
            raise ConnectError(message, final=True) from None
        if isinstance(error, ssl.SSLError) and error.reason:
            reason = error.reason.replace("_", " ").lower()  # "tlsv1 alert protocol version"
        elif isinstance(error, OSError) and error.errno:
            reason = _reason(error)
        else:
            reason = say("server_closed")
        failed = say("tls_failed", reason=reason)
        raise ConnectError(say("cannot_connect", where=where, reason=failed)) from None
    except BaseException:
        sock.close()
        raise


def _untrusted(error: ssl.SSLCertVerificationError) -> str:
    """Why the server's certificate was not accepted, and what would help."""
    detail = str(error.verify_message or error.reason or "unknown reason").rstrip(".")
    # "Hostname mismatch, certificate is not valid for 'x'"
    hint = say("hint_name") if "mismatch" in detail else say("hint_cafile")
    return say("untrusted", detail=detail, hint=hint)


async def _speaks_plain_lanchat(endpoint: Endpoint) -> bool:
    """After a failed TLS handshake: does a plain connection get the lanchat ``NICK``?

    A plaintext lanchat server reads the TLS hello as a (bad) nickname and hangs up, which
    looks like any reset; one more connection, closed at once, tells the two apart.
    """
    with contextlib.suppress(ConnectError, OSError, EOFError, TimeoutError):
        async with asyncio.timeout(PLAIN_PROBE_TIMEOUT):
            reader, writer = await _streams(await _connect(endpoint))
            try:
                return await reader.readexactly(len(GREETING)) == GREETING
            finally:
                writer.transport.abort()
    return False


async def _connect(endpoint: Endpoint) -> socket.socket:
    """Try each address of the host in turn; the first failure is the one reported."""
    loop = asyncio.get_running_loop()
    where = str(endpoint)
    try:
        infos = await loop.getaddrinfo(endpoint.host, endpoint.port, type=socket.SOCK_STREAM)
    except socket.gaierror as error:
        raise ConnectError(say("cannot_connect", where=where, reason=error.strerror)) from None
    first: OSError | None = None
    for family, kind, proto, _, address in infos:
        sock = socket.socket(family, kind, proto)
        sock.setblocking(False)
        try:
            await loop.sock_connect(sock, address)
        except OSError as error:
            sock.close()
            first = first or error
            continue
        except BaseException:
            sock.close()
            raise
        return sock
    reason = _reason(first) if first else say("no_address")
    raise ConnectError(say("cannot_connect", where=where, reason=reason))


def _timed_out(endpoint: Endpoint) -> ConnectError:
    return ConnectError(say("cannot_connect", where=endpoint, reason=say("timed_out")))


def _reason(error: OSError) -> str:
    """The system's short wording ("Connection refused"), not asyncio's longer one."""
    if error.errno:
        return os.strerror(error.errno)
    return str(error) or type(error).__name__


async def _greeting(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, where: str
) -> ClientConnection:
    """Read until the server asks for a nickname; the protocol state to go on with."""
    _tune(writer)
    protocol = ClientConnection()
    while True:
        for event in protocol.receive_data(await _receive(reader, where)):
            if isinstance(event, EndOfStream):
                raise ConnectError(say("closed_before_join", where=where))
            if isinstance(event, NickRequested):
                return protocol
            if isinstance(event, ProtocolError):
                message, final = await _not_lanchat(reader, event.received, where)
                raise ConnectError(message, final=final)


async def _admission(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    protocol: ClientConnection,
    nick: str,
    endpoint: Endpoint,
    after: MessageId | None,
) -> Connection | Refused:
    """Ask for ids and answer ``NICK``; then the first line is our own join, or a refusal
    and the close."""
    writer.write(protocol.send(OfferIds(after)) + protocol.send(Nick(nick)))
    refusal: Refusal | None = None
    while True:
        events = protocol.receive_data(await _receive(reader, str(endpoint)))
        for index, event in enumerate(events):
            if isinstance(event, Refusal):
                refusal = event
            elif isinstance(event, EndOfStream) and refusal is not None:
                writer.transport.abort()
                return Refused(refusal.text)
            elif isinstance(event, EndOfStream):
                raise ConnectError(say("closed_before_join", where=endpoint))
            elif isinstance(event, Line):
                return Connection(reader, writer, protocol, _lines(events[index:]))


def _lines(events: list[ClientEvent]) -> list[Line | Removal]:
    """What a joined client shows (and acts on) of the events."""
    return [event for event in events if isinstance(event, Line | Removal)]


async def _receive(reader: asyncio.StreamReader, where: str) -> bytes:
    try:
        return await reader.read(_RECV_SIZE)
    except (ConnectionError, OSError) as error:
        raise ConnectError(say("connection_failed", where=where, reason=_reason(error))) from None


async def _not_lanchat(
    reader: asyncio.StreamReader, received: bytes, where: str
) -> tuple[str, bool]:
    """Explain a connection that did not start with ``NICK`` (server full, banned)."""
    with contextlib.suppress(TimeoutError, ConnectionError, OSError):
        async with asyncio.timeout(1.0):
            while len(received) < 1024 and (more := await reader.read(1024)):
                received += more
    first = received.decode(errors="replace").partition("\n")[0].strip()
    key = refusal_key(first)
    if key == "tls_required":
        return say("tls_only", where=where, line=first), True
    if first.startswith("*"):
        return say("refused_connection", where=where, line=first), key in REMOVALS
    return say("not_lanchat", where=where), False


def nick_problem(nick: str) -> str | None:
    """Why ``nick`` cannot even be offered to the server, or None.

    Only what would break the line protocol is checked here (a newline would end the
    reply early, a leading ``/`` would read as a command: ``/cap ...`` is not a nickname);
    every other rule is the server's, and it says why it refuses.
    """
    if not nick.strip():
        return say("nick_empty")
    if not nick.isprintable():
        return say("nick_control")
    if nick.strip().startswith("/"):
        return say("nick_command")
    return None
