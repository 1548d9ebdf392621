"""The lock that gives one daemon its state directory.

Only the daemon takes it (``lanchatctl`` never does), so it lives here rather than in the
core's shared ``lanchatd.core.paths``, whose import contract (pyproject.toml) forbids fcntl.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path
from typing import Final

from lanchatd.core.paths import PathError

#: Held (flock) by the daemon that owns the state directory, and names its pid.
LOCK_FILE_NAME: Final = "lanchatd.lock"


class StateInUse(PathError):
    """Another daemon holds the state directory; the message names its pid."""


def lock_state_dir(path: Path) -> int | None:
    """Take the state directory for this daemon; return the lock's descriptor (keep it open).

    Two daemons on one directory would overwrite each other's bans, so the second is refused
    (:class:`StateInUse`). The lock is an ``flock`` on :data:`LOCK_FILE_NAME`, released by the
    kernel when the daemon exits however it exits, so a stale file never blocks a restart.
    None when the directory cannot be made or written: bans then live in memory only, as
    bans.py already handles, and nothing on disk needs protecting.
    """
    try:
        path.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(path / LOCK_FILE_NAME, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    except OSError:
        return None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = os.pread(fd, 32, 0).decode(errors="replace").strip() or "unknown"
        os.close(fd)
        raise StateInUse(
            f"state directory {path} is in use by another lanchatd (pid {holder}); "
            "give each daemon its own STATE_DIRECTORY"
        ) from None
    except OSError:
        os.close(fd)
        return None
    with contextlib.suppress(OSError):  # the pid is only for the message above
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
    return fd
