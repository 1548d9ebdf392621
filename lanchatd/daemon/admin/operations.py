"""The daemon's side of :class:`~lanchatd.daemon.admin.api.Operations`."""

from __future__ import annotations

import socket
import time
from collections.abc import Callable, Sequence
from typing import Any

from lanchatd import __version__
from lanchatd.core.framing import Framing
from lanchatd.daemon import interfaces, logs
from lanchatd.daemon.admin.api import Watcher
from lanchatd.daemon.bans import Ban, iso
from lanchatd.daemon.history import History
from lanchatd.daemon.moderation import BanOutcome, Moderation
from lanchatd.daemon.peer import Peer
from lanchatd.daemon.room import Room

#: The web page's scheme and listening sockets, or None when it is turned off.
WebListeners = Callable[[], tuple[str, Sequence[socket.socket]] | None]


class DaemonOperations:
    """What the admin commands may do, carried out by the room and moderation."""

    def __init__(
        self,
        room: Room,
        moderation: Moderation,
        request_reload: Callable[[float], dict[str, Any] | None],
        web_listeners: WebListeners = lambda: None,
    ) -> None:
        self._room = room
        self._moderation = moderation
        self._request_reload = request_reload
        self._web_listeners = web_listeners

    def who(self) -> list[Peer]:
        return self._room.members()

    def kick(self, nick: str, reason: str, admin_uid: int) -> tuple[Peer, str] | None:
        return self._moderation.kick(nick, reason, admin_uid)

    def address_of(self, target: str) -> str | None:
        return self._moderation.address_of(target)

    def ban(self, address: str, reason: str, duration: float | None, admin_uid: int) -> BanOutcome:
        return self._moderation.ban(address, reason, duration, admin_uid)

    def unban(self, address: str, admin_uid: int) -> tuple[Ban | None, str | None]:
        return self._moderation.unban(address, admin_uid)

    def bans(self) -> list[Ban]:
        return self._moderation.in_force()

    def notice(self, text: str, admin_uid: int) -> int:
        return self._room.notice(text, admin_uid)

    def elsewhere(self) -> tuple[str, list[tuple[str, str]]] | None:
        return self._room.elsewhere()

    def purged(self, nick: str, since: float | None) -> None:
        self._room.purged(nick, since)

    def kick_elsewhere(self, nick: str, reason: str) -> str | None:
        return self._room.kick_elsewhere(nick, reason or self._room.catalog("no_reason"))

    def stats(self, admin_connections: int) -> dict[str, Any]:
        room = self._room
        counters, delivery = room.stats, room.delivery
        return {
            "version": __version__,
            "started_at": iso(counters.started),
            "uptime_s": round(time.time() - counters.started, 1),
            "clients": len(room),
            "web_clients": sum(member.framing is Framing.WEB for member in room.members()),
            "peak_clients": counters.peak_clients,
            "connections": len(self._moderation.connections()),
            "messages_in": counters.messages,
            "messages_out": delivery.lines_out,
            "bytes_in": counters.bytes_in,
            "bytes_out": delivery.bytes_out,
            "slow_consumer_drops": counters.slow_consumer_drops,
            "kicks": counters.kicks,
            "bans": len(self._moderation.in_force()),
            "admin_connections": admin_connections,
            "watchers": len(room.watchers),
            "log_events_lost": logs.lost(),
            **self._history_stats(),
            "cluster": room.cluster_stats(),
        }

    def _history_stats(self) -> dict[str, Any]:
        """History's counters; null when history is turned off."""
        history = self._room.history
        if history is None:
            return dict.fromkeys(
                ("history_committed", "history_failed_writes", "history_unsaved", "history_lost")
            )
        counters = history.counters
        return {
            "history_committed": counters.committed,
            "history_failed_writes": counters.failed_writes,
            "history_unsaved": history.unsaved_count(),
            "history_lost": counters.lost,
        }

    def watch(self, watcher: Watcher) -> None:
        self._room.watch(watcher)

    def unwatch(self, watcher: Watcher) -> None:
        self._room.unwatch(watcher)

    def reload(self, timeout: float) -> dict[str, Any] | None:
        return self._request_reload(timeout)

    def history(self) -> History | None:
        return self._room.history

    def web_page(self) -> dict[str, Any] | None:
        found = self._web_listeners()
        if found is None:
            return None
        scheme, listeners = found
        port = listeners[0].getsockname()[1]
        found_addresses = (a for listener in listeners for a in interfaces.reachable(listener))
        addresses = list(dict.fromkeys(found_addresses))
        return {
            "scheme": scheme,
            "port": port,
            "listening": [listener.getsockname()[0] for listener in listeners],
            "addresses": addresses,
            "urls": [interfaces.url(scheme, address, port) for address in addresses],
        }
