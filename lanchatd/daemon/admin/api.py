"""What an admin command sees: the daemon's few operations, the caller, its arguments' schema.

Handlers get :class:`Operations`, not the server: the handful of things an administrator may
do, so a command cannot reach into the room's or the server's internals, and another daemon
(a room shared by several nodes, say) only has to offer these.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from lanchatd.core.adminwire import Code, CommandError
from lanchatd.daemon.bans import MAX_REASON_CHARS, Ban
from lanchatd.daemon.history import History
from lanchatd.daemon.logs import Logger
from lanchatd.daemon.moderation import BanOutcome
from lanchatd.daemon.peer import Peer

Watcher = Callable[[dict[str, Any]], None]


class Operations(Protocol):
    """The daemon as the admin commands may use it."""

    def who(self) -> list[Peer]:
        """The joined clients, in join order."""
        ...

    def kick(self, nick: str, reason: str, admin_uid: int) -> tuple[Peer, str] | None:
        """Disconnect ``nick``; it and the reason given, or None if nobody has that nick."""
        ...

    def address_of(self, target: str) -> str | None:
        """An IP address, or the address of the nickname online; None if neither."""
        ...

    def ban(self, address: str, reason: str, duration: float | None, admin_uid: int) -> BanOutcome:
        """Ban ``address`` and disconnect its clients."""
        ...

    def unban(self, address: str, admin_uid: int) -> tuple[Ban | None, str | None]:
        """Lift a ban: the ban lifted (None if there was none) and a save error."""
        ...

    def bans(self) -> list[Ban]:
        """The bans in force, oldest first."""
        ...

    def notice(self, text: str, admin_uid: int) -> int:
        """Tell every client ``text``; return how many it went to (-1: the cluster's Redis
        could not be reached, nobody was told)."""
        ...

    def elsewhere(self) -> tuple[str, list[tuple[str, str]]] | None:
        """With several nodes: this node's name, the others' members as (nick, node)."""
        ...

    def kick_elsewhere(self, nick: str, reason: str) -> str | None:
        """With several nodes: kick ``nick`` on the node serving it; that node, or None."""
        ...

    def purged(self, nick: str, since: float | None) -> None:
        """With several nodes: after a purge here, the stream and every node forget it too
        (HistoryError if Redis cannot be reached)."""
        ...

    def stats(self, admin_connections: int) -> dict[str, Any]:
        """The counters ``stats`` reports."""
        ...

    def watch(self, watcher: Watcher) -> None:
        """Call ``watcher`` with every room event from now on (it must only enqueue)."""
        ...

    def unwatch(self, watcher: Watcher) -> None:
        """Stop calling ``watcher``."""
        ...

    def reload(self, timeout: float) -> dict[str, Any] | None:
        """Reload the configuration as SIGHUP does; None if it did not finish in time."""
        ...

    def history(self) -> History | None:
        """The room's history store; None when ``[history] enabled`` is off."""
        ...

    def web_page(self) -> dict[str, Any] | None:
        """Where people open the web page: ``scheme``, ``port``, the ``addresses`` other
        machines reach it at and their ``urls``; None when ``[web] enabled`` is off."""
        ...


@dataclass(frozen=True, slots=True)
class Caller:
    """Who sent a request: the uid events name, the log bound to the caller."""

    uid: int
    log: Logger
    #: Admin connections open when the request came (``stats`` reports it).
    admin_connections: int


Handler = Callable[[Operations, dict[str, Any], Caller], dict[str, Any]]
ArgType = type | tuple[type, ...]


@dataclass(frozen=True, slots=True)
class Command:
    """One row of the command table: the name, the handler and the arguments it takes."""

    name: str
    handler: Handler
    required: Mapping[str, ArgType] = field(default_factory=dict)
    optional: Mapping[str, ArgType] = field(default_factory=dict)
    #: After its response the connection carries only events (``watch``).
    streams: bool = False

    def check(self, args: dict[str, Any]) -> None:
        """Refuse unknown, missing and mistyped arguments (None leaves an optional one out)."""
        for name, value in args.items():
            expected = self.required.get(name) or self.optional.get(name)
            if expected is None:
                raise CommandError(Code.BAD_REQUEST, f"{self.name}: unknown argument {name!r}")
            if value is None and name in self.optional:
                continue
            if not isinstance(value, expected) or isinstance(value, bool):
                raise CommandError(
                    Code.BAD_REQUEST, f"{self.name}: argument {name!r} has the wrong type"
                )
        for name in self.required:
            if name not in args:
                raise CommandError(Code.BAD_REQUEST, f"{self.name}: missing argument {name!r}")


def check_text(name: str, text: str) -> None:
    """Refuse control characters: a newline would let an admin forge extra chat lines."""
    if any(ord(c) < 32 or 127 <= ord(c) < 160 or c in "\u2028\u2029" for c in text):
        raise CommandError(Code.BAD_REQUEST, f"{name} may not contain control characters")


def reason(value: str | None) -> str:
    """A kick or ban reason, trimmed and checked ("" when none was given)."""
    text = (value or "").strip()
    check_text("reason", text)
    if len(text) > MAX_REASON_CHARS:
        raise CommandError(Code.BAD_REQUEST, f"reason is over {MAX_REASON_CHARS} characters")
    return text
