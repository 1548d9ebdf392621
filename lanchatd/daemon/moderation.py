"""Moderation: kick, ban, unban, and keeping banned addresses out, in one place.

The admin commands and the accept path both come here, so what a banned client is told,
whether it is banned "until" a time or for good, is decided once. The room carries out the
exits (its one exit door); the ban store keeps the list and its file.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from lanchatd.core.catalog import Catalog
from lanchatd.core.nicknames import nick_key
from lanchatd.daemon.bans import Ban, BanStore, normalize_address, until_text
from lanchatd.daemon.peer import Peer
from lanchatd.daemon.room import Room


@dataclass(frozen=True, slots=True)
class BanOutcome:
    """A ban in force, whom it disconnected, and why it was not saved (None if it was)."""

    ban: Ban
    disconnected: list[str]
    save_error: str | None


class Moderation:
    """Kicks and bans in the room, and the ban check for every new connection."""

    def __init__(self, room: Room, bans: BanStore, connections: Callable[[], list[Peer]]) -> None:
        self.room = room
        self.bans = bans
        #: Every open client connection, joined or still choosing a nickname.
        self.connections = connections

    def refusal(self, host: str) -> str | None:
        """The line that turns a new connection from ``host`` away, if it is banned."""
        ban = self.bans.match(host)
        return None if ban is None else farewell(self.room.catalog, ban)

    def kick(self, nick: str, reason: str, admin_uid: int) -> tuple[Peer, str] | None:
        """Disconnect ``nick``; return it and the reason it was given. None if absent."""
        reason = reason or self.room.catalog("no_reason")
        peer = self.room.kick(nick, reason, admin_uid)
        return None if peer is None else (peer, reason)

    def address_of(self, target: str) -> str | None:
        """``target`` as an IP address, or the address of the nickname online; else None."""
        try:
            return normalize_address(target)
        except ValueError:
            key = nick_key(target)
            member = next((m for m in self.room.members() if m.key == key), None)
            return None if member is None else normalize_address(member.host)

    def ban(self, address: str, reason: str, duration: float | None, admin_uid: int) -> BanOutcome:
        """Ban ``address`` (for ``duration`` seconds, or for good) and disconnect its clients.

        Members are expelled with a line saying why; connections still choosing a
        nickname are simply closed.
        """
        now = time.time()
        ban = Ban(address, reason, now, None if duration is None else now + duration, admin_uid)
        save_error = self.bans.add(ban)
        matching = [peer for peer in self.connections() if host_is(peer.host, address)]
        room = self.room
        expelled = room.expel_banned(
            matching, reason or room.catalog("no_reason"), farewell(room.catalog, ban)
        )
        for connection in matching:
            if connection not in expelled:
                connection.shutdown()  # still choosing a nickname, or just joined
        nicks = [peer.nick for peer in expelled]
        room.emit("ban", **ban.to_json(), disconnected=nicks)
        return BanOutcome(ban, nicks, save_error)

    def unban(self, address: str, admin_uid: int) -> tuple[Ban | None, str | None]:
        """Lift the ban on ``address``; the ban (None if there was none) and a save error."""
        ban, save_error = self.bans.remove(address)
        if ban is not None:
            self.room.emit("unban", address=address, admin_uid=admin_uid)
        return ban, save_error

    def in_force(self) -> list[Ban]:
        """The bans in force, oldest first."""
        return self.bans.list()


def farewell(catalog: Catalog, ban: Ban) -> str:
    """What a banned client is told: the reason, and until when if the ban ends."""
    reason = ban.reason or catalog("no_reason")
    if ban.expires_at is None:
        return catalog("banned_you", reason=reason)
    return catalog("banned_you_until", until=until_text(ban.expires_at), reason=reason)


def host_is(host: str, address: str) -> bool:
    try:
        return normalize_address(host) == address
    except ValueError:
        return False
