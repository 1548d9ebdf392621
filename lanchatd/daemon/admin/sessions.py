"""The admin server: accepts admin connections and serves each in its own thread.

Every admin connection has its own thread, and the chat never waits for one: a command only
takes the room lock for a few dictionary operations (as a chat message does), reads and
writes have timeouts, and ``watch`` events go through a bounded queue that the room only
appends to. Requests are decoded by the shared codec (lanchatd.core.adminwire), looked up in
the command table (commands.py) and carried out through :class:`Operations`.
"""

from __future__ import annotations

import contextlib
import queue
import select
import selectors
import socket
import threading
import time
from typing import Any, Final

from lanchatd import __version__
from lanchatd.core import adminwire
from lanchatd.core.adminwire import MAX_REQUEST_BYTES, Code, CommandError
from lanchatd.core.framing import TOO_LONG, LineSplitter
from lanchatd.daemon.admin import commands
from lanchatd.daemon.admin.api import Caller, Operations
from lanchatd.daemon.admin.listener import (
    AccessPolicy,
    AdminListener,
    Credentials,
    credentials_of,
)
from lanchatd.daemon.logs import Logger

#: An admin connection idle for this long between requests is closed.
IDLE_TIMEOUT: Final = 600.0
#: An admin client that does not read what it is sent for this long is dropped.
SEND_TIMEOUT: Final = 10.0
#: Admin connections served at once; more are told the daemon is busy.
MAX_CONNECTIONS: Final = 64
#: Events a watcher may fall behind by before it is dropped.
WATCH_QUEUE_LIMIT: Final = 10_000
#: How often a quiet watch connection checks whether its client went away.
WATCH_POLL: Final = 0.5


class _Watcher:
    """One ``watch`` connection's queue: the room appends, the connection thread sends."""

    __slots__ = ("overflowed", "queue")

    def __init__(self) -> None:
        self.queue: queue.SimpleQueue[dict[str, Any]] = queue.SimpleQueue()
        self.overflowed = False

    def __call__(self, event: dict[str, Any]) -> None:
        if self.overflowed:
            return
        if self.queue.qsize() >= WATCH_QUEUE_LIMIT:
            self.overflowed = True
            return
        self.queue.put(event)


class AdminServer:
    """Accepts admin connections and serves each in its own thread."""

    def __init__(self, ops: Operations, listener: AdminListener, group: str, log: Logger) -> None:
        self.ops = ops
        self.listener = listener
        self.policy = AccessPolicy(group)
        self.log = log
        self._sessions: set[socket.socket] = set()
        self._sessions_lock = threading.Lock()
        self._wake_r, self._wake_w = socket.socketpair()
        self._thread = threading.Thread(target=self._accept_loop, name="admin", daemon=True)

    @property
    def sessions(self) -> int:
        return len(self._sessions)

    def start(self) -> None:
        self.listener.sock.setblocking(False)
        self._thread.start()
        self.log.info("admin_listening", socket=self.listener.name, group=self.policy.group)

    def stop(self) -> None:
        """Stop accepting, end every admin connection, remove the socket file."""
        with contextlib.suppress(OSError):
            self._wake_w.send(b"x")
        self._thread.join(2.0)
        self.listener.close()
        with self._sessions_lock:
            sessions = list(self._sessions)
        for conn in sessions:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        self._wake_r.close()
        self._wake_w.close()

    # Accepting -------------------------------------------------------------------------------

    def _accept_loop(self) -> None:
        with selectors.DefaultSelector() as selector:
            selector.register(self.listener.sock, selectors.EVENT_READ)
            selector.register(self._wake_r, selectors.EVENT_READ)
            while True:
                for key, _ in selector.select():
                    if key.fileobj is self._wake_r:
                        return
                    self._accept()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as error:
                self.log.error("admin_accept_failed", error=error.strerror)
                time.sleep(0.05)
                return
            conn.setblocking(True)
            with self._sessions_lock:
                busy = len(self._sessions) >= MAX_CONNECTIONS
                if not busy:
                    self._sessions.add(conn)
            if busy:
                self.log.warning("admin_busy", limit=MAX_CONNECTIONS)
                refusal = adminwire.error(None, Code.BUSY, "too many admin connections; try again")
                with contextlib.suppress(OSError):
                    conn.send(adminwire.encode(refusal), socket.MSG_DONTWAIT)
                conn.close()
                continue
            thread = threading.Thread(target=self._session, args=(conn,), daemon=True)
            thread.name = "admin session"
            thread.start()

    # One connection --------------------------------------------------------------------------

    def _session(self, conn: socket.socket) -> None:
        try:
            conn.settimeout(SEND_TIMEOUT)
            credentials = credentials_of(conn)
            log = self.log.bind(admin_uid=credentials.uid, admin_pid=credentials.pid)
            if not self.policy.allows(credentials):
                log.warning("admin_refused", gid=credentials.gid)
                conn.sendall(adminwire.encode(self._refusal(credentials)))
                return
            hello = adminwire.hello(__version__, commands.NAMES, credentials.uid)
            conn.sendall(adminwire.encode(hello))
            self._requests(conn, credentials.uid, log)
        except OSError:
            pass  # the admin client went away or stopped reading
        except Exception:
            self.log.exception("admin_session_error")
        finally:
            with self._sessions_lock:
                self._sessions.discard(conn)
            conn.close()

    def _refusal(self, credentials: Credentials) -> dict[str, Any]:
        group = self.policy.group
        return adminwire.error(
            None,
            Code.PERMISSION_DENIED,
            f"uid {credentials.uid} may not administer lanchatd: only root, the daemon's user "
            f"and members of the group {group!r} may",
            group=group,
        )

    def _requests(self, conn: socket.socket, uid: int, log: Logger) -> None:
        splitter = LineSplitter(MAX_REQUEST_BYTES)
        while True:
            conn.settimeout(IDLE_TIMEOUT)
            data = conn.recv(65536)
            if not data:
                return
            conn.settimeout(SEND_TIMEOUT)
            for line in splitter.feed(data):
                if line is TOO_LONG:
                    message = f"request longer than {MAX_REQUEST_BYTES} bytes; skipped"
                    refusal = adminwire.error(None, Code.REQUEST_TOO_LARGE, message)
                    conn.sendall(adminwire.encode(refusal))
                    continue
                assert isinstance(line, bytes)
                if not line.strip():
                    continue
                watcher = self._respond(conn, line, uid, log)
                if watcher is not None:
                    self._stream(conn, watcher, log)
                    return

    def _respond(self, conn: socket.socket, line: bytes, uid: int, log: Logger) -> _Watcher | None:
        """Answer one request line; return a watcher if the connection now streams events."""
        request_id = None
        try:
            request = adminwire.decode_request(line)
            request_id = request.id
            command = commands.lookup(request.command)
            command.check(request.args)
            caller = Caller(uid, log, self.sessions)
            result = command.handler(self.ops, request.args, caller)
            if command.streams:
                watcher = _Watcher()
                self.ops.watch(watcher)
                try:
                    conn.sendall(adminwire.encode(adminwire.ok(request_id, result)))
                except BaseException:
                    self.ops.unwatch(watcher)
                    raise
                return watcher
            response = adminwire.ok(request_id, result)
        except CommandError as error:
            response = adminwire.refusal(error, request_id)
        except Exception:
            log.exception("admin_command_failed")
            response = adminwire.error(
                request_id, Code.INTERNAL_ERROR, "internal error; see the daemon log"
            )
        conn.sendall(adminwire.encode(response))
        return None

    def _stream(self, conn: socket.socket, watcher: _Watcher, log: Logger) -> None:
        """Send room events until the client goes away (or falls too far behind)."""
        events = watcher.queue
        try:
            while True:
                try:
                    batch = [events.get(timeout=WATCH_POLL)]
                except queue.Empty:
                    if _closed_by_client(conn):
                        return
                    batch = []
                while len(batch) < 256:
                    try:
                        batch.append(events.get_nowait())
                    except queue.Empty:
                        break
                if watcher.overflowed:
                    log.warning("admin_watch_overflow", limit=WATCH_QUEUE_LIMIT)
                    message = f"watch stopped: fell more than {WATCH_QUEUE_LIMIT} events behind"
                    overflow = adminwire.error(None, Code.WATCH_OVERFLOW, message)
                    conn.sendall(adminwire.encode(overflow))
                    return
                if batch:
                    conn.sendall(b"".join(adminwire.encode(adminwire.event(e)) for e in batch))
        finally:
            self.ops.unwatch(watcher)


def _closed_by_client(conn: socket.socket) -> bool:
    """True once the client has closed its end; anything it sends meanwhile is discarded."""
    poller = select.poll()
    poller.register(conn, select.POLLIN)
    if not poller.poll(0):
        return False
    return not conn.recv(4096)  # readable: returns at once despite the socket's timeout
