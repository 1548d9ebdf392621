"""systemd glue without libsystemd: socket activation and service notifications.

Both halves follow the published protocols (sd_listen_fds(3), sd_notify(3)) so the daemon runs
the same under systemd, under `systemd-socket-activate`, and as a plain foreground process.
"""

from __future__ import annotations

import os
import socket
import time

import sdnotify

# sd_listen_fds(3): passed descriptors start right after stdin, stdout and stderr.
SD_LISTEN_FDS_START = 3

_LISTEN_VARS = ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES")


def listen_fds() -> dict[str, list[socket.socket]]:
    """Return the sockets systemd passed to this process, grouped by their FileDescriptorName=.

    The units name the chat listener(s) "chat" and the admin socket "admin"; a socket passed
    without a name is grouped under "unknown", as systemd itself calls it. Outside socket
    activation the result is empty and the daemon creates its own sockets.

    The three LISTEN_* variables are removed in every case: they describe this process only,
    and a child inheriting them could otherwise claim descriptors it does not own.
    Raises ValueError when the variables are present for this process but malformed.
    """
    env = {name: os.environ.pop(name, None) for name in _LISTEN_VARS}
    if env["LISTEN_PID"] is None or env["LISTEN_FDS"] is None:
        return {}
    try:
        pid = int(env["LISTEN_PID"])
        count = int(env["LISTEN_FDS"])
    except ValueError:
        raise ValueError(
            f"malformed socket activation: LISTEN_PID={env['LISTEN_PID']!r} "
            f"LISTEN_FDS={env['LISTEN_FDS']!r}"
        ) from None
    if pid != os.getpid():
        # Inherited from a parent that was activated; these descriptors are not ours.
        return {}
    if count < 0:
        raise ValueError(f"malformed socket activation: LISTEN_FDS={count}")
    names = env["LISTEN_FDNAMES"].split(":") if env["LISTEN_FDNAMES"] else ["unknown"] * count
    if len(names) != count:
        raise ValueError(
            f"malformed socket activation: {count} descriptors but "
            f"LISTEN_FDNAMES={env['LISTEN_FDNAMES']!r}"
        )
    sockets: dict[str, list[socket.socket]] = {}
    for fd, name in enumerate(names, start=SD_LISTEN_FDS_START):
        sock = socket.socket(fileno=fd)  # the kernel tells family and type
        sock.set_inheritable(False)  # systemd passes them inheritable; keep them out of children
        # Python assumes a new wrapper is blocking; make the descriptor agree even when a unit
        # sets NonBlocking=yes, so accept() behaves the same as on the daemon's own sockets.
        sock.setblocking(True)
        sockets.setdefault(name, []).append(sock)
    return sockets


class Notifier:
    """sd_notify(3) messages to the service manager; silent and free outside systemd.

    Without NOTIFY_SOCKET no socket is created and every method returns at once, so the daemon
    can call these unconditionally. Send errors are swallowed (by sdnotify): the service manager
    going away must never take the chat down.
    """

    def __init__(self) -> None:
        self._notifier = sdnotify.SystemdNotifier() if os.environ.get("NOTIFY_SOCKET") else None
        self._watchdog_interval = _watchdog_interval()

    @property
    def enabled(self) -> bool:
        """True under a service manager that listens for notifications."""
        return self._notifier is not None

    @property
    def watchdog_interval(self) -> float | None:
        """Seconds between watchdog pings (half of WatchdogSec=), or None when no watchdog.

        Pinging at half the timeout leaves room for one late ping, as sd_watchdog_enabled(3)
        recommends.
        """
        return self._watchdog_interval

    def ready(self, status: str) -> None:
        """Startup finished: the sockets listen. systemctl start returns only after this."""
        self._send("READY=1", f"STATUS={status}")

    def status(self, text: str) -> None:
        """Set the one-line StatusText= shown by `systemctl status`."""
        self._send(f"STATUS={text}")

    def reloading(self) -> None:
        """A SIGHUP reload began; call ready() when the new configuration is in force.

        MONOTONIC_USEC lets systemd >= 253 (Type=notify-reload) match this message to the
        reload request; older versions ignore it.
        """
        usec = time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000
        self._send("RELOADING=1", f"MONOTONIC_USEC={usec}")

    def stopping(self) -> None:
        """Shutdown began, so systemd reports "deactivating" instead of a dying service."""
        self._send("STOPPING=1")

    def watchdog(self) -> None:
        """Tell systemd the daemon is healthy; call only after checking that it is."""
        if self._watchdog_interval is not None:
            self._send("WATCHDOG=1")

    def _send(self, *assignments: str) -> None:
        if self._notifier is None:
            return
        # One datagram, one assignment per line: a newline inside a value (say, a nickname in
        # the status) would start a new assignment, so values are flattened to one line.
        message = "\n".join(" ".join(a.splitlines()) for a in assignments)
        # sdnotify encodes with latin-1 and drops the message silently if that fails (any
        # non-latin-1 nickname); systemd expects UTF-8, so hand over UTF-8 bytes as latin-1.
        self._notifier.notify(message.encode("utf-8").decode("latin-1"))


def _watchdog_interval() -> float | None:
    """Half of WATCHDOG_USEC in seconds if the watchdog is meant for this process."""
    pid = os.environ.get("WATCHDOG_PID")
    if pid is not None and pid != str(os.getpid()):
        return None
    try:
        usec = int(os.environ.get("WATCHDOG_USEC", ""))
    except ValueError:
        return None
    return usec / 2 / 1_000_000 if usec > 0 else None
