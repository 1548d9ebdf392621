"""The web port's HTTP exchange, run by the connection's reader thread before the chat.

h11 parses the one request a connection may make (every answer closes the connection, so a
browser holds no idle connections, and threads, open). A request is bounded in bytes and
header count, and the whole exchange by the handshake deadline, so a client sending headers
byte by byte (slowloris) holds its slot no longer than a silent chat client does. Only a
``GET /ws`` upgrade from an allowed ``Origin`` goes on to wsproto and into the room.
"""

from __future__ import annotations

import http
import time
from typing import Final

import h11
from wsproto import ConnectionType
from wsproto.events import AcceptConnection, Request
from wsproto.handshake import H11Handshake
from wsproto.utilities import RemoteProtocolError

from lanchatd.core.framing import Framing
from lanchatd.core.tags import event_tags, format_tags
from lanchatd.daemon.peer import Peer
from lanchatd.daemon.reader import receive_within, send_direct
from lanchatd.daemon.room import Room
from lanchatd.daemon.web.site import WEBSOCKET_PATH, Response, Site, valid_host
from lanchatd.daemon.web.websocket import WebSocket

#: Longest request head (request line and headers) accepted.
MAX_REQUEST_BYTES: Final = 16384
#: Most headers accepted in one request (browsers send about 15).
MAX_HEADERS: Final = 64
#: HTTP status for a connection turned away at accept, by reason.
REFUSAL_STATUS: Final = {"banned": 403}


def exchange(
    peer: Peer, deadline: float, *, room: Room, site: Site, refusal: tuple[str, str] | None
) -> bytes | None:
    """Answer one HTTP request; on a WebSocket upgrade, what the page already sent, as lines.

    None when the connection is done: a file was served, the request was bad, or it came from
    an address turned away at accept (``refusal``: reason and line, which it is shown).
    """
    return _Exchange(peer, room, site, refusal).run(deadline)


class _Exchange:
    """One connection's HTTP request: h11's view of it and the raw bytes, for wsproto."""

    __slots__ = ("connection", "peer", "received", "refusal", "room", "site")

    def __init__(self, peer: Peer, room: Room, site: Site, refusal: tuple[str, str] | None) -> None:
        self.peer, self.room, self.site, self.refusal = peer, room, site, refusal
        self.connection = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_REQUEST_BYTES)
        self.received = bytearray()

    def run(self, deadline: float) -> bytes | None:
        connection = self.connection
        while True:
            try:
                event = connection.next_event()
            except h11.RemoteProtocolError as error:
                self._answer(Site.error(error.error_status_hint, "Bad Request", None))
                return None
            if event is h11.NEED_DATA:
                data = receive_within(self.peer, deadline - time.monotonic())
                if data is None:
                    self.peer.log.info("http_failed", error="request timed out")
                    return None
                self.received += data
                connection.receive_data(data)
                continue
            if not isinstance(event, h11.Request):  # the client closed or went away
                return None
            return self._route(event)

    def _route(self, request: h11.Request) -> bytes | None:
        host = valid_host(_header(request, b"host"))
        method = request.method.decode("ascii", errors="replace")
        target = request.target.decode("ascii", errors="replace")
        if len(request.headers) > MAX_HEADERS:
            response = Site.error(431, "Request Header Fields Too Large", host)
        elif _header(request, b"upgrade") is not None and target.split("?")[0] == WEBSOCKET_PATH:
            return self._upgrade(request, host)
        elif self.refusal is not None:
            reason, text = self.refusal
            response = Site.error(REFUSAL_STATUS.get(reason, 503), text, host)
        else:
            etag = _header(request, b"if-none-match")
            response = self.site.respond(
                method, target, host, etag.decode("latin-1") if etag else None
            )
        self.peer.log.debug(
            "http_request", method=method, path=target[:200], status=response.status
        )
        self._answer(response)
        return None

    def _upgrade(self, request: h11.Request, host: str | None) -> bytes | None:
        """Check ``Origin``, let wsproto check and accept the upgrade, then switch framing."""
        peer = self.peer
        origin = _header(request, b"origin")
        if origin is not None and not self._allowed(origin.decode("ascii", "replace"), host):
            peer.log.info("websocket_refused", reason="origin")
            self._answer(Site.error(403, "Origin not allowed", host))
            return None
        trailing, _ = self.connection.trailing_data
        handshake = H11Handshake(ConnectionType.SERVER)
        try:
            handshake.receive_data(bytes(self.received[: len(self.received) - len(trailing)]))
            accepted = any(isinstance(event, Request) for event in handshake.events())
        except (RemoteProtocolError, UnicodeError):
            accepted = False
        if not accepted:
            peer.log.info("websocket_refused", reason="bad_handshake")
            self._answer(Site.error(400, "Bad WebSocket handshake", host))
            return None
        send_direct(peer, handshake.send(AcceptConnection()))
        web = WebSocket(self.room.settings.max_line_bytes)
        if self.refusal is not None:
            reason, text = self.refusal
            now = format_tags(event_tags(None, time.time()))  # a page's lines are all tagged
            send_direct(peer, Framing.WEB.encode_safe(text, now) + web.farewell(reason))
            return None
        peer.web = web
        peer.framing = Framing.WEB
        lines = web.receive(bytes(trailing))
        send_direct(peer, web.take_replies())
        return lines

    def _allowed(self, origin: str, host: str | None) -> bool:
        """The page's own origin, or one that ``[web] allowed_origins`` lists."""
        own = f"{self.site.scheme}://{host}".lower() if host is not None else None
        allowed = self.room.settings.web_allowed_origins
        return origin.lower() == own or origin in allowed or origin.lower() in allowed

    def _answer(self, response: Response) -> None:
        """Send ``response`` and end the exchange (every response closes the connection)."""
        connection = self.connection
        phrase = http.HTTPStatus(response.status).phrase.encode()
        headers = [*response.headers, ("Connection", "close")]
        data = connection.send(
            h11.Response(status_code=response.status, headers=headers, reason=phrase)
        )
        if response.body:
            data = (data or b"") + (connection.send(h11.Data(data=response.body)) or b"")
        send_direct(self.peer, (data or b"") + (connection.send(h11.EndOfMessage()) or b""))


def _header(request: h11.Request, name: bytes) -> bytes | None:
    """The first value of header ``name`` (lower case), if present."""
    for key, value in request.headers:
        if key == name:
            return bytes(value)
    return None
