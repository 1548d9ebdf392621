"""A browser's WebSocket once upgraded: frames in, lines out, and the close frame at the end.

After the handshake only wsproto's frame decoder is used, not its message decoder: text that
is not UTF-8 then reaches ServerConnection as bytes and is refused there as a TCP line is,
where wsproto would close the connection. Each message becomes one line for the splitter; a
message longer than the line limit is cut just past it, so the splitter refuses it as too
long and no more than the limit is ever held.
"""

from __future__ import annotations

from typing import Final

from wsproto.frame_protocol import FrameDecoder, ParseFailed
from wsproto.frame_protocol import Opcode as WireOpcode

from lanchatd.core import wsframe

#: The close code a page receives when it leaves the room, by leave reason (docs/web.md):
#: 4001 and 4003 tell it not to come back by itself; 1001 (the daemon stops) that it may.
CLOSE_CODES: Final = {
    "quit": 1000,
    "disconnect": 1000,
    "shutdown": 1001,
    "kicked": 4001,
    "banned": 4003,
    "server_full": 1013,
    "per_address": 1013,
}


class WebSocket:
    """The inbound side of one browser's WebSocket (the reader thread's), and its close."""

    __slots__ = ("_decoder", "_message", "closed", "limit", "replies")

    def __init__(self, limit: int) -> None:
        self._decoder = FrameDecoder(client=False)
        self._message = bytearray()
        self.limit = limit
        #: Set once the browser sent a close frame or broke the protocol: the end of stream.
        self.closed = False
        #: Pongs owed, for the caller to send (before joining) or queue (after).
        self.replies: list[bytes] = []

    def receive(self, data: bytes) -> bytes:
        """The lines ``data`` completes, each message ending in ``\\n`` (maybe none yet)."""
        if self.closed:
            return b""
        self._decoder.receive_bytes(data)
        lines: list[bytes] = []
        try:
            while (frame := self._decoder.process_buffer()) is not None:
                opcode, payload = frame.opcode, frame.payload
                assert isinstance(payload, bytes | bytearray)  # the frame decoder's alone
                if opcode is WireOpcode.PING:
                    self.replies.append(wsframe.frame(wsframe.Opcode.PONG, bytes(payload)))
                elif opcode is WireOpcode.CLOSE:
                    self.closed = True
                    break
                elif opcode is not WireOpcode.PONG:
                    done = frame.frame_finished and frame.message_finished
                    self._collect(payload, lines, done)
        except ParseFailed:
            self.closed = True
        return b"".join(lines)

    def _collect(self, payload: bytes | bytearray, lines: list[bytes], done: bool) -> None:
        """Add a data frame's payload to the message; a finished message becomes a line."""
        room = self.limit + 1 - len(self._message)
        if room > 0:
            self._message += payload[:room]
        if done:
            lines.append(bytes(self._message) + b"\n")
            self._message.clear()

    def take_replies(self) -> bytes:
        """The pongs owed so far, once."""
        replies = b"".join(self.replies)
        self.replies.clear()
        return replies

    @staticmethod
    def farewell(reason: str) -> bytes:
        """The close frame for a page that leaves (or is refused) for ``reason``."""
        return wsframe.close_frame(CLOSE_CODES.get(reason, 1000), reason)
