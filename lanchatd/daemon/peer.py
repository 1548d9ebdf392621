"""One connected client as the daemon tracks it, from accept to close.

Three threads touch a peer: its reader thread (handshake and inbound messages), the delivery
thread (outbound bytes) and whoever removes it from the room (itself, the delivery thread on a
slow consumer, an admin kick). Fields are grouped by owner below; what is still to be sent is
not here but in the client's outbox (journal.py), which only the delivery thread sees, from
attach to retire. The socket is closed only when both the reader and the delivery thread have
let go of it, so no thread can ever use a file descriptor number that the kernel has already
handed to a newer connection.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time

from lanchatd.core.framing import Framing
from lanchatd.daemon.logs import Logger
from lanchatd.daemon.tls import TlsSession
from lanchatd.daemon.web.websocket import WebSocket


class Peer:
    """A client connection and, once joined, a room member."""

    __slots__ = (
        "_closed",
        "_lock",
        "_refs",
        "connected_at",
        "framing",
        "host",
        "key",
        "last_active",
        "left",
        "log",
        "messages",
        "nick",
        "port",
        "shed",
        "sock",
        "tagged",
        "tls",
        "web",
    )

    def __init__(self, sock: socket.socket, host: str, port: int, log: Logger) -> None:
        self.sock = sock
        self.host = host
        self.port = port
        self.log = log
        self.connected_at = time.time()
        #: TLS state on a TLS port, set by the reader once the handshake is done.
        self.tls: TlsSession | None = None
        #: A page's WebSocket on the web port, set by the reader once upgraded (then the
        #: framing is WEB).
        self.web: WebSocket | None = None
        self._lock = threading.Lock()
        self._refs = 1
        self._closed = False
        #: Set by the accept loop when it closes this unjoined connection to make room.
        self.shed = False
        # Set at join, under the room lock.
        self.nick = ""
        self.key = ""
        self.framing = Framing.LINE
        #: It negotiated ids (``/cap ids``): every line it is sent carries tags.
        self.tagged = False
        self.left = False
        # Written by the reader thread only.
        self.last_active = time.monotonic()
        self.messages = 0

    def __repr__(self) -> str:
        return f"<Peer {self.nick or '?'} {self.host}:{self.port}>"

    def retain(self) -> None:
        """A second owner (the delivery thread) starts using the socket."""
        with self._lock:
            self._refs += 1

    def release(self) -> None:
        """One owner is done with the socket; the last one closes it."""
        with self._lock:
            self._refs -= 1
            if self._refs or self._closed:
                return
            self._closed = True
        self.sock.close()

    def stop_reading(self) -> None:
        """Wake the reader (in ``recv`` or a flood-control pause) so it lets go at once.

        Only the reading side is shut: the delivery thread can still send the last lines.
        """
        with self._lock:
            if self._closed:
                return
            with contextlib.suppress(OSError):
                self.sock.shutdown(socket.SHUT_RD)

    def shutdown(self) -> None:
        """Wake whoever blocks on this socket: a reader in ``recv`` sees end of file."""
        with self._lock:
            if self._closed:
                return
            with contextlib.suppress(OSError):
                self.sock.shutdown(socket.SHUT_RDWR)
