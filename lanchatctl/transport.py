"""A client for lanchatd's admin socket (protocol: docs/admin-protocol.md).

Every failure is an :class:`AdminError` carrying the exit status ``lanchatctl`` ends with and a
message for a person: where it looked, what to check, which group to join.
"""

from __future__ import annotations

import grp
import os
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Final

from lanchatd.core import adminwire, paths
from lanchatd.core.adminwire import PROTOCOL_VERSION, Code

#: How long to wait for the daemon to answer; reload may take a moment, the rest is instant.
TIMEOUT: Final = 15.0
DEFAULT_GROUP: Final = "lanchat"

# Exit statuses besides 0 (lanchatctl --help lists them).
REFUSED: Final = 1
USAGE: Final = 2
UNREACHABLE: Final = 3
DENIED: Final = 4

_STATUS_HINT: Final = "is lanchatd running? Check with: systemctl status lanchatd"


class AdminError(Exception):
    """Why a command could not be carried out, and the exit status for it."""

    def __init__(self, status: int, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.code = code


class _Missing(AdminError):
    """No socket file at a candidate path."""


def socket_candidates(explicit: str | os.PathLike[str] | None) -> list[Path]:
    """Where to connect, in order.

    An explicit path (``--socket`` or ``LANCHATD_ADMIN_SOCKET``) is the only one. Otherwise
    the system daemon's sockets come first, then this user's own daemon's; the first that
    answers is used, so a stale or missing one never hides a live daemon further down.
    """
    if explicit:
        return [Path(explicit)]
    return paths.admin_socket_candidates()


def _permission_hint(path: Path) -> str:
    """Which group grants access to ``path``: the socket file's own group, when visible."""
    try:
        group = grp.getgrgid(path.stat().st_gid).gr_name
    except (OSError, KeyError):
        group = DEFAULT_GROUP
    if group == "root":
        return "run it as root (for example with sudo)"
    return (
        f"join the group '{group}' (an administrator runs: adduser $USER {group}), "
        "then log in again; or run it as root"
    )


class AdminClient:
    """One connection to the admin socket (the first candidate that answers)."""

    def __init__(
        self, candidates: list[Path], timeout: float = TIMEOUT, *, defaults: bool = False
    ) -> None:
        self.candidates = candidates
        #: The candidates are the default places (no path given): their directories are
        #: checked before anything is sent there.
        self.defaults = defaults
        self.path = candidates[0]
        self.timeout = timeout
        self.hello: dict[str, Any] = {}
        self._sock: socket.socket | None = None
        self._reader: Any = None
        self._next_id = 1

    @classmethod
    def at(cls, explicit: str | os.PathLike[str] | None, timeout: float = TIMEOUT) -> AdminClient:
        """A client for ``--socket`` (or the variable) if given, else for the default places."""
        return cls(socket_candidates(explicit), timeout, defaults=not explicit)

    def __enter__(self) -> AdminClient:
        self.connect()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()
        if self._sock is not None:
            self._sock.close()
        self._sock = self._reader = None

    def connect(self) -> dict[str, Any]:
        """Connect and read the daemon's greeting; return it."""
        failures: list[tuple[str, AdminError]] = []
        for path in self.candidates:
            try:
                self._check_place(path)
                self._sock = self._open(path)
            except _Missing as missing:
                failures.append(("missing", missing))
                continue
            except AdminError as error:
                failures.append(("failed", error))
                continue
            self.path = path
            break
        else:
            raise self._failure(failures)
        self._reader = self._sock.makefile("rb")
        greeting = self._receive()
        if "hello" not in greeting:
            self._raise(greeting)
        if greeting.get("version") != PROTOCOL_VERSION:
            raise AdminError(
                REFUSED,
                f"lanchatd at {self.path} speaks admin protocol version "
                f"{greeting.get('version')!r}; this lanchatctl speaks {PROTOCOL_VERSION}",
            )
        self.hello = greeting["hello"]
        return self.hello

    def _check_place(self, path: Path) -> None:
        """Refuse a default socket in a directory someone else could have made."""
        if not self.defaults:
            return
        problem = paths.untrusted_socket_dir(path)
        if problem:
            raise AdminError(
                DENIED,
                f"not using {path}: {problem}, so another user may be listening there; "
                "remove that directory, or pass --socket if you trust it",
            )

    def _open(self, path: Path) -> socket.socket:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            sock.connect(os.fsencode(path))
        except FileNotFoundError:
            sock.close()
            raise _Missing(UNREACHABLE, f"no admin socket at {path}; {_STATUS_HINT}") from None
        except ConnectionRefusedError:
            sock.close()
            raise AdminError(
                UNREACHABLE,
                f"nothing is listening on {path} (a socket left by a daemon that is not "
                f"running); {_STATUS_HINT}",
            ) from None
        except PermissionError:
            sock.close()
            raise AdminError(
                DENIED, f"permission denied on {path}: {_permission_hint(path)}"
            ) from None
        except OSError as error:
            sock.close()
            raise AdminError(
                UNREACHABLE, f"cannot connect to {path}: {error.strerror}; {_STATUS_HINT}"
            ) from None
        return sock

    def _failure(self, failures: list[tuple[str, AdminError]]) -> AdminError:
        """The most useful of the errors met: a denial, then a dead daemon, then absence."""
        errors = [error for _, error in failures]
        for error in errors:
            if error.status == DENIED:
                return error
        found = [error for kind, error in failures if kind != "missing"]
        if found or len(errors) == 1:
            return (found or errors)[0]
        where = ", ".join(map(str, self.candidates))
        return AdminError(UNREACHABLE, f"no admin socket found; looked at {where}; {_STATUS_HINT}")

    def request(self, command: str, **args: Any) -> dict[str, Any]:
        """Send one command and return its result; raise AdminError if it is refused."""
        request_id = self.send(command, **args)
        response = self._receive()
        if response.get("id") != request_id or "ok" not in response:
            raise AdminError(REFUSED, f"unexpected answer from lanchatd: {response!r}")
        if not response["ok"]:
            self._raise(response)
        result = response.get("result")
        return result if isinstance(result, dict) else {}

    def send(self, command: str, **args: Any) -> int:
        """Send one request without waiting; return its id."""
        assert self._sock is not None, "not connected"
        request_id, self._next_id = self._next_id, self._next_id + 1
        given = {name: value for name, value in args.items() if value is not None}
        data = adminwire.encode(adminwire.request(request_id, command, given))
        try:
            self._sock.sendall(data)
        except OSError as error:
            raise AdminError(
                UNREACHABLE, f"lost the connection to {self.path}: {error.strerror}"
            ) from None
        return request_id

    def events(self) -> Iterator[dict[str, Any]]:
        """Start ``watch`` and yield events until the daemon ends the stream."""
        self.request("watch")
        assert self._sock is not None
        self._sock.settimeout(None)
        while True:
            message = self._receive(eof_ok=True)
            if not message:
                raise AdminError(UNREACHABLE, "lanchatd closed the connection (stopped?)")
            if "event" in message:
                yield message["event"]
            elif message.get("ok") is False:
                self._raise(message)

    def _receive(self, *, eof_ok: bool = False) -> dict[str, Any]:
        try:
            line = self._reader.readline()
        except TimeoutError:
            raise AdminError(
                UNREACHABLE, f"lanchatd did not answer within {self.timeout:g} s on {self.path}"
            ) from None
        except OSError as error:
            raise AdminError(
                UNREACHABLE, f"lost the connection to {self.path}: {error.strerror}"
            ) from None
        if not line:
            if eof_ok:
                return {}
            raise AdminError(UNREACHABLE, f"lanchatd closed the connection on {self.path}")
        try:
            return adminwire.decode(line)
        except ValueError:
            raise AdminError(
                REFUSED, f"{self.path} does not speak the lanchatd admin protocol"
            ) from None

    def _raise(self, response: dict[str, Any]) -> None:
        error = response.get("error")
        if not isinstance(error, dict):
            raise AdminError(REFUSED, f"unexpected answer from lanchatd: {response!r}")
        code, message = error.get("code"), str(error.get("message", "refused"))
        if code == Code.BUSY:
            raise AdminError(UNREACHABLE, f"lanchatd at {self.path} is busy: {message}", code)
        if code == Code.PERMISSION_DENIED:
            group = error.get("group") or DEFAULT_GROUP
            raise AdminError(
                DENIED,
                f"{message}; join the group '{group}' (an administrator runs: "
                f"adduser $USER {group}), then log in again",
                code,
            )
        raise AdminError(REFUSED, message, code)
