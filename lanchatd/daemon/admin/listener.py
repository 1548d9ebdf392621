"""The admin socket's listening end, and who may use it.

The socket file is created mode 0660 with the admin group (:func:`open_admin_socket`), or
handed in already listening, as systemd's socket activation does (:meth:`AdminListener.adopt`).
The kernel checks the file's mode; the daemon checks every connection again by its
credentials (SO_PEERCRED and SO_PEERGROUPS): root, the daemon's own user and members of the
admin group are served (:class:`AccessPolicy`).
"""

from __future__ import annotations

import contextlib
import errno
import grp
import os
import pwd
import socket
import stat
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from lanchatd.core import paths
from lanchatd.daemon.logs import Logger

_SO_PEERGROUPS: Final = getattr(socket, "SO_PEERGROUPS", 59)


class AdminSocketError(Exception):
    """The admin socket could not be set up; the message says where and why."""


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


def open_admin_socket(path: str | Path | None, group: str, log: Logger) -> AdminListener:
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


def _clear_stale(path: Path, log: Logger) -> None:
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
        pid = credentials_of(probe).pid
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
    """The process at the other end of an admin connection, as the kernel saw it connect."""

    pid: int
    uid: int
    gid: int
    groups: tuple[int, ...] = ()


def credentials_of(sock: socket.socket) -> Credentials:
    """The kernel's record of who is at the other end of ``sock``."""
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

    def allows(self, credentials: Credentials) -> bool:
        if credentials.uid in (0, os.geteuid()):
            return True
        gid = _group_id(self.group)
        if gid is None:
            return False
        if credentials.gid == gid or gid in credentials.groups:
            return True
        try:
            user = pwd.getpwuid(credentials.uid)
            members = grp.getgrgid(gid).gr_mem
        except KeyError:
            return False
        return user.pw_gid == gid or user.pw_name in members
