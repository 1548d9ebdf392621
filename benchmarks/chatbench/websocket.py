"""The browser's side of lanchatd's web port for the load generator: WebSocket framing.

A :class:`WebSocketClient` is a :class:`loadgen.Client` whose bytes pass through a framing
layer: it upgrades with a fixed HTTP request, reads the daemon's frames into its own buffer
and hands the verifier the same bytes a line client gets (each frame's payload less its
tags, and a newline; the ``NICK`` greeting without one, as on TCP), and frames (masked, as browsers
must) every line it writes. Frame parsing costs the generator Python work per message, which
line clients do not pay: measured figures for web clients include that.
"""

from __future__ import annotations

import asyncio
import struct
from typing import Any, Final

from benchmarks.chatbench.loadgen import Client

#: A fixed key: the daemon only checks that there is one (RFC 6455 needs no freshness here).
REQUEST: Final = (
    b"GET /ws HTTP/1.1\r\nHost: %s\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
)
_MASK: Final = b"\0\0\0\0"  # a zero masking key leaves the payload as it is
#: Wire bytes read at once (verify.MIN_FREE is twice this: a read's lines always fit).
_READ: Final = 16 * 1024


def frame_lines(data: bytes) -> bytes:
    """Each ``\\n``-ended line of ``data`` as one masked text frame (the newline dropped)."""
    out = []
    for line in data.split(b"\n")[:-1]:
        size = len(line)
        if size < 126:
            out.append(bytes((0x81, 0x80 | size)))
        else:
            out.append(struct.pack("!BBH", 0x81, 0x80 | 126, size))
        out.append(_MASK)
        out.append(line)
    return b"".join(out)


class _Framed:
    """The transport as the client code sees it: what it writes leaves as frames."""

    def __init__(self, transport: asyncio.Transport) -> None:
        self._transport = transport

    def write(self, data: bytes) -> None:
        self._transport.write(frame_lines(data))

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class WebSocketClient(Client):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._wire = bytearray(1 << 16)
        self._wire_end = 0
        self._upgraded = False
        self._greeting = True
        #: Where decoded bytes go: the line client's own handler (swapped by ``measure``).
        self._deliver = super().buffer_updated

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        host, port = transport.get_extra_info("peername")[:2]
        transport.write(REQUEST % f"{host}:{port}".encode())
        super().connection_made(transport)
        self.transport = _Framed(transport)  # type: ignore[assignment]

    def measure(self, *, kernel_stamps: bool) -> None:
        """As a line client, but reading through the frame decoder (no kernel stamps)."""
        super().measure(kernel_stamps=False)
        self._deliver = self.__dict__.pop("buffer_updated")

    def get_buffer(self, sizehint: int) -> memoryview:
        """At most ``_READ`` bytes a read: what they decode to fits the inbox's free room."""
        if len(self._wire) - self._wire_end < _READ:
            self._wire.extend(bytes(len(self._wire)))
        return memoryview(self._wire)[self._wire_end : self._wire_end + _READ]

    def buffer_updated(self, nbytes: int) -> None:
        self._wire_end += nbytes
        wire, end = self._wire, self._wire_end
        pos = 0
        if not self._upgraded:
            head = wire.find(b"\r\n\r\n", 0, end)
            if head < 0:
                return
            if not wire.startswith(b"HTTP/1.1 101 "):
                self.worker.fail(self, f"upgrade refused: {bytes(wire[:head])!r}")
                return
            self._upgraded = True
            pos = head + 4
        pieces = []
        while pos + 2 <= end:
            if wire[pos] != 0x81:
                self.worker.fail(self, f"not a final text frame: {bytes(wire[pos : pos + 8])!r}")
                return
            size, start = wire[pos + 1], pos + 2
            if size == 126:
                if pos + 4 > end:
                    break
                size, start = struct.unpack_from("!H", wire, pos + 2)[0], pos + 4
            elif size == 127:
                if pos + 10 > end:
                    break
                size, start = struct.unpack_from("!Q", wire, pos + 2)[0], pos + 10
            stop = start + size
            if stop > end:
                break
            if wire[start] == 0x40:  # "@": a page's lines are tagged; the verifier wants the line
                start = wire.index(b" ", start, stop) + 1
            pieces.append(wire[start:stop])
            pos = stop
        if pos:
            wire[: end - pos] = wire[pos:end]
            self._wire_end = end - pos
        if not pieces:
            return
        if self._greeting:  # NICK carries no newline on the wire it imitates
            self._greeting = False
            data = bytes(pieces[0]) + b"".join(p + b"\n" for p in pieces[1:])
        else:
            data = b"\n".join(pieces) + b"\n"
        self.inbox.get_buffer()[: len(data)] = data
        self._deliver(len(data))
