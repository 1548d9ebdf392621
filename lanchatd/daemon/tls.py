"""Optional TLS for the chat port, sans-IO: OpenSSL works on memory buffers, never on sockets.

The daemon writes to a client from the delivery thread and reads from the client's own reader
thread. With memory BIOs neither thread hands the socket to OpenSSL: the reader decrypts what
it received, delivery encrypts what it is about to send, and a per-connection lock keeps the
two from using the one TLS state at the same time. Ciphertext produced while decrypting (a key
update, say) stays in the outgoing buffer and leaves with the next encrypted bytes, in order.
"""

from __future__ import annotations

import contextlib
import ssl
import threading
from pathlib import Path
from typing import Final

#: The first byte of every TLS record carrying a handshake (a ClientHello starts with it).
TLS_HANDSHAKE_BYTE: Final = 0x16


class TlsError(Exception):
    """The TLS handshake or a record failed; the message is safe to log."""


def server_context(cert: Path | str, key: Path | str) -> ssl.SSLContext:
    """A server context with the library's modern defaults (TLS 1.2+, no compression).

    Raises TlsError with a one-line reason when the files cannot be used.
    """
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(cert, key)
    except OSError as error:
        raise TlsError(f"cannot read {error.filename or cert}: {error.strerror}") from None
    except ssl.SSLError as error:
        raise TlsError(f"cannot use {cert} with {key}: {error.reason or error}") from None
    return context


class TlsSession:
    """One connection's TLS state, shared by its reader and the delivery thread."""

    __slots__ = ("_incoming", "_lock", "_object", "_outgoing", "peer_closed")

    def __init__(self, context: ssl.SSLContext, *, server_side: bool, hostname: str | None = None):
        self._incoming = ssl.MemoryBIO()
        self._outgoing = ssl.MemoryBIO()
        self._object = context.wrap_bio(
            self._incoming, self._outgoing, server_side=server_side, server_hostname=hostname
        )
        self._lock = threading.Lock()
        #: The peer ended the TLS session (close_notify): treat it as end of stream.
        self.peer_closed = False

    def handshake_step(self, received: bytes) -> tuple[bool, bytes]:
        """Feed handshake bytes from the peer; return (finished, bytes to send to the peer)."""
        with self._lock:
            if received:
                self._incoming.write(received)
            try:
                self._object.do_handshake()
                finished = True
            except ssl.SSLWantReadError:
                finished = False
            except ssl.SSLError as error:
                raise TlsError(error.reason or str(error)) from None
            return finished, self._outgoing.read()

    def decrypt(self, received: bytes) -> bytes:
        """Plaintext carried by ``received`` (possibly none yet: records can span reads).

        After the peer's close_notify, ``peer_closed`` is set: the stream has ended even if
        the socket has not.
        """
        with self._lock:
            self._incoming.write(received)
            chunks = []
            while True:
                try:
                    chunk = self._object.read(65536)
                except ssl.SSLWantReadError:
                    break
                except ssl.SSLZeroReturnError:  # close_notify after we sent ours
                    self.peer_closed = True
                    break
                except ssl.SSLError as error:
                    raise TlsError(error.reason or str(error)) from None
                if not chunk:  # no more data raises SSLWantReadError; b"" is close_notify
                    self.peer_closed = True
                    break
                chunks.append(chunk)
            return b"".join(chunks)

    def close(self) -> bytes:
        """Our close_notify, to send before closing the socket (best effort)."""
        with self._lock:
            # unwrap() then wants the peer's close_notify, which nobody waits for here.
            with contextlib.suppress(ssl.SSLError):
                self._object.unwrap()
            return self._outgoing.read()

    def encrypt(self, plaintext: bytes | memoryview) -> bytes:
        """The records carrying ``plaintext``, preceded by anything decrypt left to send."""
        with self._lock:
            if plaintext:
                self._object.write(plaintext)
            return self._outgoing.read()
