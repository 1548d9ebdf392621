"""Where the daemon keeps its admin socket and its state, shared with ``lanchatctl``.

The daemon and ``lanchatctl`` resolve the same default admin socket, so an administrator never
has to pass a path for the usual setups:

- under systemd with socket activation, ``lanchatd-admin.socket`` listens on
  :data:`SYSTEM_ADMIN_SOCKET` (directly under ``/run``: see systemd/lanchatd-admin.socket);
- under systemd without it, ``$RUNTIME_DIRECTORY/admin.sock``;
- run by root, ``/run/lanchatd/admin.sock``;
- run by anyone else, ``$XDG_RUNTIME_DIR/lanchatd/admin.sock``, or a private directory
  ``/tmp/lanchatd-UID`` when there is no ``XDG_RUNTIME_DIR``.

State (the ban list, the room's history) lives in ``$STATE_DIRECTORY``, else
``/var/lib/lanchatd`` for root, else ``$XDG_STATE_HOME/lanchatd`` (``~/.local/state/lanchatd``),
where systemd itself puts a user service's ``StateDirectory=``.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Final

#: The configuration file read when ``--config`` is not given (and it exists): the package's
#: conffile, so running ``lanchatd`` by hand uses the same settings as the service.
SYSTEM_CONFIG: Final = Path("/etc/lanchatd/lanchatd.toml")
#: The admin socket of the systemd socket unit (lanchatd-admin.socket).
SYSTEM_ADMIN_SOCKET: Final = Path("/run/lanchatd-admin.sock")
#: Root's runtime directory when systemd does not provide one.
ROOT_RUNTIME_DIR: Final = Path("/run/lanchatd")
ROOT_STATE_DIR: Final = Path("/var/lib/lanchatd")
ADMIN_SOCKET_NAME: Final = "admin.sock"
BANS_FILE_NAME: Final = "bans.json"
HISTORY_FILE_NAME: Final = "history.db"
#: ``lanchatctl`` reads this variable (after ``--socket``) to find the admin socket.
ADMIN_SOCKET_ENV: Final = "LANCHATD_ADMIN_SOCKET"
#: Longest path an AF_UNIX socket can be bound to on Linux (sun_path is 108 bytes with a NUL).
MAX_SOCKET_PATH_BYTES: Final = 107


class PathError(Exception):
    """A directory the daemon needs is missing, unsafe or cannot be made; the message says why."""


def _first(value: str | None) -> str | None:
    """systemd joins several directories with ``:``; the first one is ours."""
    if not value:
        return None
    return value.split(":", 1)[0] or None


def _env(env: Mapping[str, str] | None) -> Mapping[str, str]:
    return os.environ if env is None else env


def _uid(uid: int | None) -> int:
    return os.geteuid() if uid is None else uid


def runtime_dir(env: Mapping[str, str] | None = None, uid: int | None = None) -> Path:
    """The directory for the daemon's own admin socket."""
    env, uid = _env(env), _uid(uid)
    systemd = _first(env.get("RUNTIME_DIRECTORY"))
    if systemd:
        return Path(systemd)
    if uid == 0:
        return ROOT_RUNTIME_DIR
    xdg = env.get("XDG_RUNTIME_DIR")
    if xdg and os.path.isabs(xdg):
        return Path(xdg) / "lanchatd"
    return Path(f"/tmp/lanchatd-{uid}")


def default_admin_socket(env: Mapping[str, str] | None = None, uid: int | None = None) -> Path:
    """Where the daemon creates its admin socket when none is configured."""
    return runtime_dir(env, uid) / ADMIN_SOCKET_NAME


def admin_socket_candidates(
    env: Mapping[str, str] | None = None, uid: int | None = None
) -> list[Path]:
    """Where ``lanchatctl`` looks, in order, when given no path: system daemon first."""
    candidates = [
        SYSTEM_ADMIN_SOCKET,
        ROOT_RUNTIME_DIR / ADMIN_SOCKET_NAME,
        default_admin_socket(env, uid),
    ]
    return list(dict.fromkeys(candidates))


def state_dir(
    env: Mapping[str, str] | None = None, uid: int | None = None, home: Path | None = None
) -> Path:
    """The directory for persistent state (bans)."""
    env, uid = _env(env), _uid(uid)
    systemd = _first(env.get("STATE_DIRECTORY"))
    if systemd:
        return Path(systemd)
    if uid == 0:
        return ROOT_STATE_DIR
    xdg = env.get("XDG_STATE_HOME")
    if xdg and os.path.isabs(xdg):
        return Path(xdg) / "lanchatd"
    return (home or Path.home()) / ".local" / "state" / "lanchatd"


def ensure_runtime_dir(path: Path, *, private: bool) -> None:
    """Create the admin socket's directory if missing, and refuse an unsafe existing one.

    ``private`` directories (per-user, under ``/tmp`` or ``XDG_RUNTIME_DIR``) are mode 0700 and
    must belong to this user: anyone could have created ``/tmp/lanchatd-UID`` first to watch or
    replace the socket. Shared ones (``/run/lanchatd``) are 0755 so the admin group can reach
    the socket, whose own mode (0660) decides who may connect.
    """
    mode = 0o700 if private else 0o755
    try:
        path.mkdir(mode=mode, parents=True, exist_ok=True)
        info = path.lstat()
    except OSError as error:
        raise PathError(f"cannot create directory {path}: {error.strerror}") from None
    if not stat.S_ISDIR(info.st_mode):
        raise PathError(f"{path} is not a directory")
    if private and (info.st_uid != os.geteuid() or info.st_mode & 0o022):
        raise PathError(
            f"{path} belongs to uid {info.st_uid} or is writable by others; "
            "remove it or choose another --admin-socket"
        )


def untrusted_socket_dir(socket_path: Path) -> str | None:
    """Why a default socket's directory cannot be trusted, or None if it can.

    Trusted: owned by this user or root and writable by no one else, as the daemon requires
    of its own; or made by root in a directory only root can write to (systemd's
    ``RuntimeDirectory=`` under ``/run``, handed to the service's user). Anything else, such
    as ``/tmp/lanchatd-UID`` made first by another user, may hold someone else's listener.
    A directory that does not exist is not judged: there is nothing to connect to.
    """
    directory = socket_path.parent
    try:
        info = directory.lstat()
        parent = directory.parent.lstat()
    except OSError:
        return None
    if not stat.S_ISDIR(info.st_mode):
        return f"{directory} is not a directory"
    if info.st_mode & 0o022:
        return f"{directory} is writable by others"
    if info.st_uid in (0, os.geteuid()):
        return None
    if parent.st_uid == 0 and not parent.st_mode & 0o022:
        return None
    return f"{directory} belongs to uid {info.st_uid}, neither you nor root"


def is_private_default(path: Path, env: Mapping[str, str] | None = None) -> bool:
    """True for the per-user default directories, which must stay private (0700)."""
    env = _env(env)
    if _first(env.get("RUNTIME_DIRECTORY")) or os.geteuid() == 0:
        return False
    return path == runtime_dir(env)
