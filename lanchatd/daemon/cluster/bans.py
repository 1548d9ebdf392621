"""The ban list when several nodes serve the room: one list, in Redis and the stream.

Each node keeps its own file (so it still refuses banned addresses while Redis is away); a
ban or unban made on any node is written to the ``bans`` hash and appended to the stream,
and every node applies it in the stream's order (disconnecting its own clients from that
address). A node starting up takes the hash's bans into its own list.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

from lanchatd.daemon.bans import Ban, BanStore
from lanchatd.daemon.logs import Logger

if TYPE_CHECKING:
    from lanchatd.daemon.cluster.node import Cluster


class SharedBanStore(BanStore):
    """A node's ban list that tells the other nodes of every change made here."""

    def __init__(self, path: Path, log: Logger, cluster: Cluster) -> None:
        super().__init__(path, log)
        self._cluster = cluster

    def load(self) -> None:
        """The file, then the room's list from Redis (if it answers)."""
        super().load()
        for ban in self._cluster.bans():
            self.adopt(ban)

    def add(self, ban: Ban) -> str | None:
        error = super().add(ban)
        shared = self._cluster.share_ban(ban.address, json.dumps(ban.to_json()))
        return _join(error, shared)

    def remove(self, address: str) -> tuple[Ban | None, str | None]:
        ban, error = super().remove(address)
        if ban is None:
            return ban, error
        return ban, _join(error, self._cluster.share_unban(address))

    def adopt(self, ban: Ban) -> None:
        """A ban made on another node."""
        super().add(ban)

    def drop(self, address: str) -> None:
        """A ban lifted on another node."""
        super().remove(address)


def _join(*errors: str | None) -> str | None:
    found = [error for error in errors if error]
    return "; ".join(found) if found else None
