"""Browser-side helpers for the web port: a WebSocket client (wsproto) and one HTTP request
(h11), each on a raw socket to the real daemon, with deadlines on every wait."""

from __future__ import annotations

import contextlib
import os
import socket
import ssl
import struct
import time
from collections import deque
from dataclasses import dataclass

import h11
from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection,
    CloseConnection,
    Ping,
    Pong,
    RejectConnection,
    RejectData,
    Request,
    TextMessage,
)

from lanchatd.core.tags import Tags, split_tags
from tests.support import WAIT

OWN: str = "own"  #: ``origin``: the page's own origin, as a browser on the page sends it


def connect(
    port: int, source: str = "", cafile: str | os.PathLike[str] | None = None
) -> socket.socket:
    """A socket to the web port; with ``cafile``, TLS trusting that certificate (for
    ``localhost``)."""
    sock = socket.create_connection(("127.0.0.1", port), WAIT, source_address=(source, 0))
    if cafile is None:
        return sock
    context = ssl.create_default_context(cafile=os.fspath(cafile))
    return context.wrap_socket(sock, server_hostname="localhost")


@dataclass
class HttpReply:
    status: int
    headers: dict[str, str]
    body: bytes


class WebRefused(Exception):
    """The upgrade was answered with an HTTP status instead of 101."""

    def __init__(self, status: int, body: bytes) -> None:
        super().__init__(f"{status}: {body!r}")
        self.status = status
        self.body = body


def http_get(
    port: int,
    target: str = "/",
    *,
    method: str = "GET",
    host: str | None = None,
    headers: list[tuple[str, str]] | None = None,
    source: str = "",
    cafile: str | os.PathLike[str] | None = None,
) -> HttpReply:
    """One request to the web port and its whole answer (the server closes after it)."""
    with connect(port, source, cafile) as sock:
        client = h11.Connection(h11.CLIENT)
        request = h11.Request(
            method=method,
            target=target,
            headers=[("Host", host or f"127.0.0.1:{port}"), *(headers or [])],
        )
        sock.sendall(client.send(request) + (client.send(h11.EndOfMessage()) or b""))
        status, found, body = 0, {}, b""
        while True:
            event = client.next_event()
            if event is h11.NEED_DATA:
                client.receive_data(sock.recv(65536))
            elif isinstance(event, h11.Response):
                status = event.status_code
                found = {k.decode().lower(): v.decode() for k, v in event.headers}
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
                return HttpReply(status, found, body)


class WebClient:
    """What the page does over its WebSocket: one text frame per line, both ways."""

    def __init__(
        self,
        port: int,
        nick: str | None = None,
        *,
        origin: str | None = OWN,
        source: str = "",
        target: str = "/ws",
        cafile: str | os.PathLike[str] | None = None,
    ) -> None:
        self.sock = connect(port, source, cafile)
        scheme = "http" if cafile is None else "https"
        self.ws = WSConnection(ConnectionType.CLIENT)
        self.texts: deque[str] = deque()
        self.pongs: list[bytes] = []
        self.close: CloseConnection | None = None
        self._partial = ""
        host = f"127.0.0.1:{port}"
        extra = (
            []
            if origin is None
            else [(b"origin", (f"{scheme}://{host}" if origin == OWN else origin).encode())]
        )
        self.sock.sendall(self.ws.send(Request(host=host, target=target, extra_headers=extra)))
        self._accepted()
        if nick is not None:
            assert self.text() == "NICK"
            self.send(nick)

    def _accepted(self) -> None:
        status, body = 0, b""
        deadline = time.monotonic() + WAIT
        while time.monotonic() < deadline:
            events = self._receive(deadline)
            for index, event in enumerate(events):
                if isinstance(event, AcceptConnection):
                    self._pump_events(events[index + 1 :])
                    return
                if isinstance(event, RejectConnection):
                    status = event.status_code
                elif isinstance(event, RejectData):
                    body += event.data
                    if event.body_finished:
                        raise WebRefused(status, body)
        raise WebRefused(status, body)

    def _receive(self, deadline: float) -> list[object]:
        self.sock.settimeout(max(0.01, deadline - time.monotonic()))
        data = self.sock.recv(65536)
        if not data:
            raise ConnectionError(f"closed without a close frame; have {list(self.texts)}")
        self.ws.receive_data(data)
        return list(self.ws.events())

    def _pump_events(self, events: list[object] | None = None) -> None:
        for event in events if events is not None else self.ws.events():
            if isinstance(event, TextMessage):
                self._partial += event.data
                if event.message_finished:
                    self.texts.append(self._partial)
                    self._partial = ""
            elif isinstance(event, Pong):
                self.pongs.append(bytes(event.payload))
            elif isinstance(event, CloseConnection):
                self.close = event

    def send(self, text: str) -> None:
        self.sock.sendall(self.ws.send(TextMessage(text)))

    def send_raw_text(self, payload: bytes) -> None:
        """A text frame carrying ``payload`` as it is (even if not UTF-8), masked by zeros."""
        size = len(payload)
        if size < 126:
            header = bytes((0x81, 0x80 | size))
        elif size < 65536:
            header = struct.pack("!BBH", 0x81, 0x80 | 126, size)
        else:
            header = struct.pack("!BBQ", 0x81, 0x80 | 127, size)
        self.sock.sendall(header + b"\0\0\0\0" + payload)

    def ping(self, payload: bytes) -> None:
        self.sock.sendall(self.ws.send(Ping(payload)))

    def text(self, timeout: float = WAIT) -> str:
        """The next line from the server, without its tags (a page's lines all have them but
        the ``NICK`` greeting)."""
        return self.tagged(timeout)[1]

    def tagged(self, timeout: float = WAIT) -> tuple[Tags, str]:
        """The next line's tags and text; every line but ``NICK`` has a ``time`` tag."""
        tags, text = split_tags(self.frame(timeout))
        assert text == "NICK" or "time" in tags, (tags, text)
        return tags, text

    def frame(self, timeout: float = WAIT) -> str:
        """The next text frame from the server, as it came."""
        deadline = time.monotonic() + timeout
        while not self.texts:
            if self.close is not None:
                raise ConnectionError(f"closed: {self.close}")
            if time.monotonic() > deadline:
                raise TimeoutError(f"no frame within {timeout}s")
            self._wait(deadline)
        return self.texts.popleft()

    def _wait(self, deadline: float) -> None:
        with contextlib.suppress(TimeoutError):
            self._pump_events(self._receive(deadline))

    def expect(self, wanted: str, timeout: float = WAIT) -> list[str]:
        """Frames until ``wanted``; return those before it."""
        skipped = []
        deadline = time.monotonic() + timeout
        while (text := self.text(max(0.01, deadline - time.monotonic()))) != wanted:
            skipped.append(text)
        return skipped

    def closed(self, timeout: float = WAIT) -> tuple[list[str], CloseConnection]:
        """Every frame until the server's close frame, and that frame."""
        deadline = time.monotonic() + timeout
        while self.close is None:
            if time.monotonic() > deadline:
                raise TimeoutError(f"no close frame within {timeout}s; have {list(self.texts)}")
            self._wait(deadline)
        texts = [split_tags(frame)[1] for frame in self.texts]
        self.texts.clear()
        return texts, self.close

    def pong(self, timeout: float = WAIT) -> bytes:
        deadline = time.monotonic() + timeout
        while not self.pongs:
            if time.monotonic() > deadline:
                raise TimeoutError("no pong")
            self._wait(deadline)
        return self.pongs.pop(0)


def web_join(port: int, nick: str, **options: object) -> WebClient:
    """A page that has joined as ``nick`` and read its join and welcome frames."""
    client = WebClient(port, nick, **options)  # type: ignore[arg-type]
    assert [client.text(), client.text()] == [f"{nick} Bergabung!", "Terkoneksi dengan Server!"]
    return client
