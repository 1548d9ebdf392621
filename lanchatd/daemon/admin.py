"""The admin socket: a Unix socket that ``lanchatctl`` uses to manage the running daemon.

The wire format is newline-delimited JSON, one object per line in each direction, described in
docs/admin-protocol.md. In short: the daemon greets with ``{"version": 1, "hello": {...}}``;
each request ``{"version": 1, "id": ..., "command": "kick", "args": {...}}`` gets exactly one
response ``{"version": 1, "id": ..., "ok": true, "result": {...}}`` or ``"ok": false`` with an
``error`` object; ``watch`` then turns the connection into a stream of ``{"event": {...}}``.

Every admin connection has its own thread, and the chat never waits for one: a handler only
takes the room lock for a few dictionary operations (as a chat message does), reads and writes
have timeouts, and ``watch`` events go through a bounded queue that the room only appends to.

Who may connect: the socket file is mode 0660 with the admin group, and the daemon checks
every peer again (SO_PEERCRED and SO_PEERGROUPS): root, the daemon's own user, and members of
the admin group are served; anyone else gets a ``permission_denied`` error and is closed.

The listening socket is either created here (:func:`open_admin_socket`) or handed in already
listening, as systemd's socket activation does (:meth:`AdminListener.adopt`).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import grp
import json
import os
import pwd
import queue
import select
import selectors
import socket
import stat
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

from lanchatd import __version__
from lanchatd.core import paths
from lanchatd.core.framing import TOO_LONG, LineSplitter
from lanchatd.daemon import logs
from lanchatd.daemon.bans import MAX_REASON_CHARS, iso, normalize_address

if TYPE_CHECKING:
    from lanchatd.daemon.server import Server

PROTOCOL_VERSION: Final = 1
#: Longest request line; anything longer is answered with ``request_too_large`` and skipped.
MAX_REQUEST_BYTES: Final = 64 * 1024
#: Longest notice text, in UTF-8 bytes.
MAX_NOTICE_BYTES: Final = 2000
#: An admin connection idle for this long between requests is closed.
IDLE_TIMEOUT: Final = 600.0
#: An admin client that does not read what it is sent for this long is dropped.
SEND_TIMEOUT: Final = 10.0
#: How long ``reload`` waits for the main thread to apply the configuration.
RELOAD_TIMEOUT: Final = 10.0
#: Admin connections served at once; more are told the daemon is busy.
MAX_CONNECTIONS: Final = 64
#: Events a watcher may fall behind by before it is dropped.
WATCH_QUEUE_LIMIT: Final = 10_000
#: How often a quiet watch connection checks whether its client went away.
WATCH_POLL: Final = 0.5
_SO_PEERGROUPS: Final = getattr(socket, "SO_PEERGROUPS", 59)
COMMANDS: Final = ("who", "kick", "broadcast", "stats", "ban", "unban", "bans", "watch", "reload")


class AdminSocketError(Exception):
    """The admin socket could not be set up; the message says where and why."""


class CommandError(Exception):
    """A request the daemon refuses; becomes an ``"ok": false`` response."""

    def __init__(self, code: str, message: str, **details: Any) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.details = details


# The listening socket ------------------------------------------------------------------------


@dataclass(slots=True)
class AdminListener:
    """The listening admin socket, and the file to remove at exit if the daemon made it."""

    sock: socket.socket
    path: Path | None = None
    identity: tuple[int, int] | None = None

    @classmethod
    def adopt(cls, sock: socket.socket) -> AdminListener:
        """Use a socket that is already listening (systemd socket activation).

        Its file belongs to whoever created it (``RemoveOnStop=`` in the socket unit), so it
        is left alone at exit.
        """
        if sock.family != socket.AF_UNIX:
            raise AdminSocketError(f"the admin socket passed in is not a Unix socket: {sock!r}")
        return cls(sock)

    @property
    def name(self) -> str:
        if self.path is not None:
            return str(self.path)
        with contextlib.suppress(OSError):
            name = self.sock.getsockname()
            return name if isinstance(name, str) and name else "(passed in)"
        return "(passed in)"

    def close(self) -> None:
        """Stop listening and remove the socket file, unless another daemon replaced it."""
        self.sock.close()
        if self.path is None or self.identity is None:
            return
        with contextlib.suppress(OSError):
            info = self.path.lstat()
            if (info.st_dev, info.st_ino) == self.identity:
                self.path.unlink()


def open_admin_socket(path: str | Path | None, group: str, log: Any) -> AdminListener:
    """Create and listen on the admin socket (mode 0660, group ``group`` if it exists).

    A socket file left by a daemon that died is replaced; a live daemon's is never taken.
    """
    configured = path is not None
    path = Path(path) if path is not None else paths.default_admin_socket()
    if len(os.fsencode(path)) > paths.MAX_SOCKET_PATH_BYTES:
        raise AdminSocketError(
            f"admin socket path {path} is too long (at most "
            f"{paths.MAX_SOCKET_PATH_BYTES} bytes for a Unix socket)"
        )
    directory = path.parent
    try:
        paths.ensure_runtime_dir(
            directory, private=not configured and paths.is_private_default(directory)
        )
    except paths.PathError as error:
        raise AdminSocketError(f"admin socket {path}: {error}") from None
    _clear_stale(path, log)
    gid = _group_id(group)
    temporary = directory / f".{path.name}.{os.getpid()}"
    with contextlib.suppress(FileNotFoundError):
        temporary.unlink()
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        # Created 0660 outright (no moment where it is more open), then given its group
        # under a name nobody looks at, then linked into place: it appears complete.
        previous = os.umask(0o117)
        try:
            sock.bind(os.fsencode(temporary))
        finally:
            os.umask(previous)
        os.chmod(temporary, 0o660)
        if gid is not None and gid != os.getegid():
            try:
                os.chown(temporary, -1, gid)
            except OSError as error:
                log.warning(
                    "admin_socket_group_not_set", path=str(path), group=group, error=error.strerror
                )
        sock.listen(64)
        _link_into_place(temporary, path)
        info = path.lstat()
    except OSError as error:
        sock.close()
        with contextlib.suppress(OSError):
            temporary.unlink()
        raise AdminSocketError(f"cannot create admin socket {path}: {error.strerror}") from None
    except AdminSocketError:
        sock.close()
        with contextlib.suppress(OSError):
            temporary.unlink()
        raise
    if gid is None:
        log.warning("admin_group_missing", group=group, path=str(path))
    return AdminListener(sock, path, (info.st_dev, info.st_ino))


def _clear_stale(path: Path, log: Any) -> None:
    """Remove a dead daemon's socket at ``path``; refuse if anything else is there."""
    try:
        info = path.lstat()
    except FileNotFoundError:
        return
    except OSError as error:
        raise AdminSocketError(f"cannot check admin socket {path}: {error.strerror}") from None
    if not stat.S_ISSOCK(info.st_mode):
        raise AdminSocketError(
            f"{path} exists and is not a socket; remove it or choose another admin socket"
        )
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(2.0)
    try:
        probe.connect(os.fsencode(path))
    except ConnectionRefusedError:
        pass  # nobody listens: a socket left by a daemon that died
    except FileNotFoundError:
        return
    except OSError as error:
        raise AdminSocketError(f"cannot check admin socket {path}: {error.strerror}") from None
    else:
        pid = _credentials(probe).pid
        raise AdminSocketError(
            f"another lanchatd (pid {pid}) is already running with admin socket {path}; "
            "stop it first, or give this one another --admin-socket"
        )
    finally:
        probe.close()
    try:
        path.unlink()
    except FileNotFoundError:
        return
    except OSError as error:
        raise AdminSocketError(
            f"cannot remove stale admin socket {path}: {error.strerror}"
        ) from None
    log.info("admin_socket_stale_removed", path=str(path))


def _link_into_place(temporary: Path, path: Path) -> None:
    """Give the bound socket its real name without replacing anything that appeared there."""
    try:
        os.link(temporary, path)
    except FileExistsError:
        raise AdminSocketError(
            f"{path} appeared while this daemon was starting (another lanchatd?); not replacing it"
        ) from None
    except OSError as error:
        if error.errno not in (errno.EPERM, errno.EOPNOTSUPP, errno.EXDEV):
            raise
        os.replace(temporary, path)  # a file system without hard links
        return
    temporary.unlink()


def _group_id(name: str) -> int | None:
    try:
        return grp.getgrnam(name).gr_gid
    except KeyError:
        return None


# Who is asking ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Credentials:
    """The peer process of an admin connection, as the kernel saw it when it connected."""

    pid: int
    uid: int
    gid: int
    groups: tuple[int, ...] = ()


def _credentials(sock: socket.socket) -> Credentials:
    pid, uid, gid = struct.unpack("3i", sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, 12))
    groups: tuple[int, ...] = ()
    for size in (64, 65536):
        try:
            raw = sock.getsockopt(socket.SOL_SOCKET, _SO_PEERGROUPS, 4 * size)
        except OSError as error:
            if error.errno == errno.ERANGE:
                continue
            break  # not supported by this kernel: the group database decides
        groups = struct.unpack(f"{len(raw) // 4}I", raw)
        break
    return Credentials(pid, uid, gid, groups)


class AccessPolicy:
    """Root, the daemon's own user and members of the admin group may administer."""

    def __init__(self, group: str) -> None:
        self.group = group

    def allows(self, peer: Credentials) -> bool:
        if peer.uid in (0, os.geteuid()):
            return True
        gid = _group_id(self.group)
        if gid is None:
            return False
        if peer.gid == gid or gid in peer.groups:
            return True
        try:
            user = pwd.getpwuid(peer.uid)
            members = grp.getgrgid(gid).gr_mem
        except KeyError:
            return False
        return user.pw_gid == gid or user.pw_name in members


# The server ---------------------------------------------------------------------------------


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

    def __init__(self, daemon: Server, listener: AdminListener, group: str, log: Any) -> None:
        self.daemon = daemon
        self.listener = listener
        self.policy = AccessPolicy(group)
        self.log = log
        self._sessions: set[socket.socket] = set()
        self._sessions_lock = threading.Lock()
        self._wake_r, self._wake_w = socket.socketpair()
        self._thread = threading.Thread(target=self._accept_loop, name="admin", daemon=True)
        self._handlers: dict[str, Callable[[dict[str, Any], Credentials, Any], dict[str, Any]]]
        self._handlers = {
            "who": self._who,
            "kick": self._kick,
            "broadcast": self._broadcast,
            "stats": self._stats,
            "ban": self._ban,
            "unban": self._unban,
            "bans": self._bans,
            "reload": self._reload,
        }

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
                with contextlib.suppress(OSError):
                    conn.send(
                        _encode(_error(None, "busy", "too many admin connections; try again")),
                        socket.MSG_DONTWAIT,
                    )
                conn.close()
                continue
            thread = threading.Thread(target=self._session, args=(conn,), daemon=True)
            thread.name = "admin session"
            thread.start()

    # One connection --------------------------------------------------------------------------

    def _session(self, conn: socket.socket) -> None:
        try:
            conn.settimeout(SEND_TIMEOUT)
            peer = _credentials(conn)
            log = self.log.bind(admin_uid=peer.uid, admin_pid=peer.pid)
            if not self.policy.allows(peer):
                log.warning("admin_refused", gid=peer.gid)
                conn.sendall(_encode(self._refusal(peer)))
                return
            conn.sendall(_encode(self._hello(peer)))
            self._requests(conn, peer, log)
        except OSError:
            pass  # the admin client went away or stopped reading
        except Exception:
            self.log.exception("admin_session_error")
        finally:
            with self._sessions_lock:
                self._sessions.discard(conn)
            conn.close()

    def _hello(self, peer: Credentials) -> dict[str, Any]:
        return {
            "version": PROTOCOL_VERSION,
            "hello": {
                "daemon": "lanchatd",
                "daemon_version": __version__,
                "commands": list(COMMANDS),
                "uid": peer.uid,
            },
        }

    def _refusal(self, peer: Credentials) -> dict[str, Any]:
        group = self.policy.group
        return _error(
            None,
            "permission_denied",
            f"uid {peer.uid} may not administer lanchatd: only root, the daemon's user "
            f"and members of the group {group!r} may",
            group=group,
        )

    def _requests(self, conn: socket.socket, peer: Credentials, log: Any) -> None:
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
                    conn.sendall(_encode(_error(None, "request_too_large", message)))
                    continue
                assert isinstance(line, bytes)
                if not line.strip():
                    continue
                watcher = self._respond(conn, line, peer, log)
                if watcher is not None:
                    self._stream(conn, watcher, log)
                    return

    def _respond(
        self, conn: socket.socket, line: bytes, peer: Credentials, log: Any
    ) -> _Watcher | None:
        """Answer one request line; return a watcher if the connection now streams events."""
        request_id = None
        try:
            try:
                request = json.loads(line)
            except ValueError as error:
                raise CommandError("bad_json", f"request is not valid JSON: {error}") from None
            except RecursionError:
                raise CommandError("bad_json", "request is nested too deeply") from None
            if not isinstance(request, dict):
                raise CommandError("bad_request", "a request must be a JSON object")
            request_id = request.get("id")
            version = request.get("version", PROTOCOL_VERSION)
            if type(version) is not int or version != PROTOCOL_VERSION:  # 1.0 and true are not 1
                raise CommandError(
                    "unsupported_version",
                    f"protocol version {version!r} is not supported; this daemon speaks "
                    f"version {PROTOCOL_VERSION}",
                    supported=[PROTOCOL_VERSION],
                )
            command = request.get("command")
            args = request.get("args", {})
            if not isinstance(command, str):
                raise CommandError("bad_request", "missing or non-string 'command'")
            if not isinstance(args, dict):
                raise CommandError("bad_request", "'args' must be a JSON object")
            if command == "watch":
                _check_args(command, args, {})
                watcher = _Watcher()
                self.daemon.room.watch(watcher)
                try:
                    conn.sendall(_encode(_ok(request_id, {"watching": True})))
                except BaseException:
                    self.daemon.room.unwatch(watcher)
                    raise
                return watcher
            handler = self._handlers.get(command)
            if handler is None:
                raise CommandError(
                    "unknown_command",
                    f"unknown command {command!r}; commands: {', '.join(COMMANDS)}",
                )
            response = _ok(request_id, handler(args, peer, log))
        except CommandError as error:
            response = _error(request_id, error.code, error.message, **error.details)
        except Exception:
            log.exception("admin_command_failed")
            response = _error(request_id, "internal_error", "internal error; see the daemon log")
        conn.sendall(_encode(response))
        return None

    def _stream(self, conn: socket.socket, watcher: _Watcher, log: Any) -> None:
        """Send room events until the client goes away (or falls too far behind)."""
        events = watcher.queue
        try:
            while True:
                try:
                    batch = [events.get(timeout=WATCH_POLL)]
                except queue.Empty:
                    if _closed_by_peer(conn):
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
                    conn.sendall(_encode(_error(None, "watch_overflow", message)))
                    return
                if batch:
                    conn.sendall(b"".join(_encode(_event(event)) for event in batch))
        finally:
            self.daemon.room.unwatch(watcher)

    # Commands --------------------------------------------------------------------------------

    def _who(self, args: dict[str, Any], peer: Credentials, log: Any) -> dict[str, Any]:
        _check_args("who", args, {})
        now = time.monotonic()
        return {
            "clients": [
                {
                    "nick": member.nick,
                    "host": member.host,
                    "port": member.port,
                    "mode": member.framing.value,
                    "connected_at": iso(member.connected_at),
                    "idle_s": round(max(0.0, now - member.last_active), 1),
                    "messages": member.messages,
                }
                for member in self.daemon.room.members()
            ]
        }

    def _kick(self, args: dict[str, Any], peer: Credentials, log: Any) -> dict[str, Any]:
        _check_args("kick", args, {"nick": str}, {"reason": str})
        kicked = self.daemon.moderation.kick(args["nick"], _reason(args.get("reason")), peer.uid)
        if kicked is None:
            raise CommandError("no_such_nick", f"no such nickname: {args['nick']}")
        member, reason = kicked
        return {"nick": member.nick, "host": member.host, "port": member.port, "reason": reason}

    def _broadcast(self, args: dict[str, Any], peer: Credentials, log: Any) -> dict[str, Any]:
        _check_args("broadcast", args, {"text": str})
        text = args["text"].strip()
        if not text:
            raise CommandError("bad_request", "the notice text is empty")
        _check_text("text", text)
        if len(text.encode()) > MAX_NOTICE_BYTES:
            raise CommandError("bad_request", f"the notice is over {MAX_NOTICE_BYTES} bytes")
        return {"recipients": self.daemon.room.notice(text, peer.uid), "text": text}

    def _stats(self, args: dict[str, Any], peer: Credentials, log: Any) -> dict[str, Any]:
        _check_args("stats", args, {})
        room = self.daemon.room
        counters, delivery = room.stats, room.delivery
        return {
            "version": __version__,
            "started_at": iso(counters.started),
            "uptime_s": round(time.time() - counters.started, 1),
            "clients": len(room),
            "peak_clients": counters.peak_clients,
            "connections": len(self.daemon.peers()),
            "messages_in": counters.messages,
            "messages_out": delivery.lines_out,
            "bytes_in": counters.bytes_in,
            "bytes_out": delivery.bytes_out,
            "slow_consumer_drops": counters.slow_consumer_drops,
            "kicks": counters.kicks,
            "bans": len(self.daemon.moderation.in_force()),
            "admin_connections": self.sessions,
            "watchers": len(room.watchers),
            "log_events_lost": logs.lost(),
        }

    def _ban(self, args: dict[str, Any], peer: Credentials, log: Any) -> dict[str, Any]:
        _check_args("ban", args, {"target": str}, {"reason": str, "duration_s": (int, float)})
        target, duration = args["target"].strip(), args.get("duration_s")
        if duration is not None and not 0 < duration <= 100 * 365 * 86400:
            raise CommandError("bad_request", "duration_s must be positive (at most 100 years)")
        moderation = self.daemon.moderation
        address = moderation.address_of(target)
        if address is None:
            raise CommandError("no_such_target", f"no such nickname or IP address: {target}")
        reason = _reason(args.get("reason"))
        outcome = moderation.ban(address, reason, duration, peer.uid)
        details, nicks = outcome.ban.to_json(), outcome.disconnected
        log.info(
            "ban_added",
            address=address,
            reason=reason,
            expires_at=details["expires_at"],
            disconnected=nicks,
            saved=outcome.save_error is None,
        )
        if outcome.save_error:
            raise CommandError(
                "not_saved",
                f"{address} is banned now, but the ban was not saved and will not survive "
                f"a restart: {outcome.save_error}",
                ban=details,
                disconnected=nicks,
            )
        return {"ban": details, "disconnected": nicks}

    def _unban(self, args: dict[str, Any], peer: Credentials, log: Any) -> dict[str, Any]:
        _check_args("unban", args, {"address": str})
        try:
            address = normalize_address(args["address"])
        except ValueError:
            raise CommandError(
                "bad_request", f"not an IP address: {args['address']} (unban takes an address)"
            ) from None
        ban, save_error = self.daemon.moderation.unban(address, peer.uid)
        if ban is None:
            raise CommandError("not_banned", f"{address} is not banned")
        log.info("ban_removed", address=address, saved=save_error is None)
        if save_error:
            raise CommandError(
                "not_saved",
                f"the ban on {address} is lifted now, but that was not saved: it comes back "
                f"after a restart: {save_error}",
                ban=ban.to_json(),
            )
        return {"ban": ban.to_json()}

    def _bans(self, args: dict[str, Any], peer: Credentials, log: Any) -> dict[str, Any]:
        _check_args("bans", args, {})
        return {"bans": [ban.to_json() for ban in self.daemon.moderation.in_force()]}

    def _reload(self, args: dict[str, Any], peer: Credentials, log: Any) -> dict[str, Any]:
        _check_args("reload", args, {})
        log.info("reload_requested")
        outcome = self.daemon.request_reload(RELOAD_TIMEOUT)
        if outcome is None:
            raise CommandError("reload_failed", "the daemon did not finish reloading in time")
        if "error" in outcome:
            raise CommandError("reload_failed", f"configuration not reloaded: {outcome['error']}")
        return outcome


# Helpers ------------------------------------------------------------------------------------


def _check_args(
    command: str,
    args: dict[str, Any],
    required: dict[str, type | tuple[type, ...]],
    optional: dict[str, type | tuple[type, ...]] | None = None,
) -> None:
    optional = optional or {}
    for name, value in args.items():
        expected = required.get(name) or optional.get(name)
        if expected is None:
            raise CommandError("bad_request", f"{command}: unknown argument {name!r}")
        if value is None and name in optional:
            continue
        if not isinstance(value, expected) or isinstance(value, bool):
            raise CommandError("bad_request", f"{command}: argument {name!r} has the wrong type")
    for name in required:
        if name not in args:
            raise CommandError("bad_request", f"{command}: missing argument {name!r}")


def _check_text(name: str, text: str) -> None:
    """Refuse control characters: a newline would let an admin forge extra chat lines."""
    if any(ord(c) < 32 or 127 <= ord(c) < 160 or c in "\u2028\u2029" for c in text):
        raise CommandError("bad_request", f"{name} may not contain control characters")


def _reason(value: str | None) -> str:
    reason = (value or "").strip()
    _check_text("reason", reason)
    if len(reason) > MAX_REASON_CHARS:
        raise CommandError("bad_request", f"reason is over {MAX_REASON_CHARS} characters")
    return reason


def _closed_by_peer(conn: socket.socket) -> bool:
    """True once the client has closed its end; anything it sends meanwhile is discarded."""
    poller = select.poll()
    poller.register(conn, select.POLLIN)
    if not poller.poll(0):
        return False
    return not conn.recv(4096)  # readable: returns at once despite the socket's timeout


def _ok(request_id: Any, result: dict[str, Any]) -> dict[str, Any]:
    response: dict[str, Any] = {"version": PROTOCOL_VERSION}
    if request_id is not None:
        response["id"] = request_id
    response["ok"] = True
    response["result"] = result
    return response


def _error(request_id: Any, code: str, message: str, **details: Any) -> dict[str, Any]:
    response: dict[str, Any] = {"version": PROTOCOL_VERSION}
    if request_id is not None:
        response["id"] = request_id
    response["ok"] = False
    response["error"] = {"code": code, "message": message, **details}
    return response


def _event(event: dict[str, Any]) -> dict[str, Any]:
    fields = {key: value for key, value in event.items() if value is not None}
    moment = dt.datetime.fromtimestamp(fields["time"], dt.UTC)
    fields["time"] = moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return {"version": PROTOCOL_VERSION, "event": fields}


def _encode(message: dict[str, Any]) -> bytes:
    return json.dumps(message, separators=(",", ":")).encode() + b"\n"
