"""A minimal chat client for the checks inside the container (stdlib only, Debian's python3).

    probe.py nick                   connect to 127.0.0.1:5001 and expect the 4 bytes NICK
    probe.py join NICK              ... then join in line mode and print the two greeting lines
    probe.py join NICK --until-eof  ... then keep printing lines until the server closes
    probe.py session NICK           join, then relay: every byte received goes to stdout as is,
                                    every line read from stdin is sent (see below)
    probe.py read                   print every byte received until the server closes (a
                                    connection refused before the handshake, e.g. a ban)

--source ADDR binds the client's end to ADDR first (127.0.0.2 is a different peer address on
the same loopback). Every wait is bounded by --timeout; the exit status is 0 only if the server
behaved.

A session answers NICK, then sends each stdin line as one message: with a newline in line
mode, or, with --classic, exactly as the original tutorial client does: the nickname and every
message with no newline, one send each (so the caller must let one message arrive before it
writes the next). What the server sends is copied to stdout unchanged (NICK included), so the
caller can compare it byte for byte. At the end of stdin the session ends: by closing the
connection (it fails if the server closed it first), or with --until-eof by waiting for the
server to close it (it fails if the server does not, within --timeout). Notes go to stderr.
"""

from __future__ import annotations

import argparse
import socket
import sys
import threading
import time


def connect(args: argparse.Namespace) -> socket.socket:
    source = (args.source, 0) if args.source else None
    return socket.create_connection(
        ("127.0.0.1", args.port), timeout=args.timeout, source_address=source
    )


def note(text: str) -> None:
    print(f"probe: {text}", file=sys.stderr, flush=True)


def receive_greeting(sock: socket.socket) -> bytes:
    greeting = b""
    while len(greeting) < 4 and (chunk := sock.recv(4 - len(greeting))):
        greeting += chunk
    return greeting


def join(args: argparse.Namespace) -> int:
    with connect(args) as sock:
        greeting = receive_greeting(sock)
        print(greeting.decode("utf-8", "replace"), flush=True)
        if greeting != b"NICK":
            return 1
        if args.command == "nick":
            return 0
        sock.sendall(args.nick.encode() + b"\n")
        lines = sock.makefile("r", encoding="utf-8", newline="\n")
        greetings = [lines.readline(), lines.readline()]
        for line in greetings:
            print(line.rstrip("\n"), flush=True)
        if args.nick not in greetings[0]:
            return 1
        if args.until_eof:
            sock.settimeout(None)  # the caller bounds how long the server may take to close
            for line in lines:
                print(line.rstrip("\n"), flush=True)
    return 0


class Receiver(threading.Thread):
    """Copies what the server sends to stdout, as it arrives, until the connection ends."""

    def __init__(self, sock: socket.socket) -> None:
        super().__init__(daemon=True)
        self.sock = sock
        self.closed = threading.Event()
        self.error: str | None = None

    def run(self) -> None:
        out = sys.stdout.buffer
        try:
            while chunk := self.sock.recv(1024):  # the tutorial client's read size
                out.write(chunk)
                out.flush()
        except OSError as error:
            self.error = f"{type(error).__name__}: {error}"
        self.closed.set()


def session(args: argparse.Namespace) -> int:
    with connect(args) as sock:
        greeting = receive_greeting(sock)
        sys.stdout.buffer.write(greeting)
        sys.stdout.flush()
        if greeting != b"NICK":
            note(f"expected NICK, got {greeting!r}")
            return 1
        end = b"" if args.classic else b"\n"
        sock.sendall(args.nick.encode() + end)
        sock.settimeout(None)  # the receiver blocks until the server sends or closes
        receiver = Receiver(sock)
        receiver.start()
        while line := sys.stdin.buffer.readline():
            if receiver.closed.is_set():
                note(f"cannot send {line!r}: the server closed the connection")
                return 1
            sock.sendall(line.rstrip(b"\n") + end)
        if args.until_eof:
            if not receiver.closed.wait(args.timeout):
                note(f"the server did not close the connection within {args.timeout:g} s")
                return 1
            receiver.join()
            if receiver.error:
                note(f"the connection ended with {receiver.error}, not a clean close")
                return 1
            return 0
        if receiver.closed.is_set():
            note(f"the server closed the connection early ({receiver.error or 'end of file'})")
            return 1
    return 0


def read(args: argparse.Namespace) -> int:
    deadline = time.monotonic() + args.timeout
    with connect(args) as sock:
        out = sys.stdout.buffer
        while (left := deadline - time.monotonic()) > 0:
            sock.settimeout(left)
            try:
                chunk = sock.recv(1024)
            except TimeoutError:
                break
            if not chunk:
                return 0
            out.write(chunk)
            out.flush()
    note(f"the connection was still open after {args.timeout:g} s")
    return 1


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--timeout", type=float, default=5.0)
    parser.add_argument("--port", type=int, default=5001)
    parser.add_argument("--source", metavar="ADDR", help="local address to connect from")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("nick")
    join_parser = sub.add_parser("join")
    join_parser.add_argument("nick")
    join_parser.add_argument("--until-eof", action="store_true")
    session_parser = sub.add_parser("session")
    session_parser.add_argument("nick")
    session_parser.add_argument("--classic", action="store_true")
    session_parser.add_argument("--until-eof", action="store_true")
    sub.add_parser("read")
    args = parser.parse_args()
    if args.command == "session":
        return session(args)
    if args.command == "read":
        return read(args)
    return join(args)


if __name__ == "__main__":
    sys.exit(main())
