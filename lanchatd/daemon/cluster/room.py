"""The room when several nodes serve it: events go to the stream, delivery follows it.

:class:`SharedRoom` is the single-node :class:`~lanchatd.daemon.room.Room` with one change of
direction: where the room would hand a line to delivery and record it, it appends the event
to the stream instead (:mod:`.node`), and :meth:`SharedRoom.apply` delivers and records what
the stream gives back, in the stream's order, for every node's events alike. A newcomer is
attached to delivery when its own join comes back, so it sees exactly the entries after it;
the on-join history is read at that moment and holds exactly the entries before it.

Single-node mode never loads this module: its hot path is the unchanged Room.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from lanchatd.core import commands
from lanchatd.core.nicknames import nick_key
from lanchatd.core.tags import MessageId
from lanchatd.daemon.bans import Ban, BanStore
from lanchatd.daemon.cluster.bans import SharedBanStore
from lanchatd.daemon.cluster.entries import CONTROL_KINDS, Control, StreamEvent
from lanchatd.daemon.cluster.node import Cluster, Member
from lanchatd.daemon.config import Settings
from lanchatd.daemon.history import Entry, History, HistoryError, Kind
from lanchatd.daemon.logs import Logger
from lanchatd.daemon.moderation import farewell, host_is
from lanchatd.daemon.peer import Peer
from lanchatd.daemon.recall import event_line
from lanchatd.daemon.room import _GRACEFUL, Room


class SharedRoom(Room):
    """One room across nodes: this node's members, delivered in the stream's order."""

    def __init__(self, settings: Settings, log: Logger, history: History | None = None) -> None:
        super().__init__(settings, log, history)
        self.cluster = Cluster(settings, self, log)
        #: The ban list, once the server has asked for it.
        self.bans: SharedBanStore | None = None
        #: Members whose join has not come back from the stream yet (not attached).
        #: Each with the id it resumes after (``/cap ids after=``), if any.
        self._joining: dict[Peer, MessageId | None] = {}
        self.cluster.start()

    def shutdown(self) -> None:
        """As on one node, and the leaves reach the stream before this node leaves it."""
        super().shutdown()
        self.cluster.close()

    def ban_store(self, path: Path) -> BanStore:
        self.bans = SharedBanStore(path, self.log, self.cluster)
        return self.bans

    def purged(self, nick: str, since: float | None) -> None:
        if not self.cluster.purge(nick, since):
            raise HistoryError("purged here, but Redis cannot be reached: not on the other nodes")

    def cluster_stats(self) -> dict[str, Any] | None:
        return self.cluster.stats()

    def join(self, peer: Peer, nick: str, after: MessageId | None = None) -> str | None:
        """Claim ``nick`` room-wide, then append the join; attached when it comes back, with
        what it is owed (on-join history, or every event after ``after``) read then."""
        cluster = self.cluster
        refused = cluster.claim(nick)
        if refused:
            return refused
        key = nick_key(nick)
        with self.lock:
            full = len(self._members) >= self.settings.max_clients
            if not full:
                peer.nick, peer.key = nick, key
                self._members[key] = peer
                self._joining[peer] = after
                self.stats.peak_clients = max(self.stats.peak_clients, len(self._members))
        if not full and cluster.append_now(cluster.event(Kind.JOIN, nick)) is not None:
            self.emit("join", nick=nick, host=peer.host, port=peer.port, mode=peer.framing.value)
            return None
        with self.lock:
            if self._members.get(key) is peer:
                del self._members[key]
                self._joining.pop(peer, None)
            cluster.publish(None, release=key)
        return "server_full" if full else "cluster_unavailable"

    def _say_locked(self, peer: Peer, texts: list[str]) -> None:
        """Append chat lines from ``peer``; they are delivered when they come back."""
        cluster = self.cluster
        for text in texts:
            cluster.publish(cluster.event(Kind.MESSAGE, peer.nick, text=text), peer)

    def command(self, peer: Peer, command: commands.Command) -> bool:
        """``/me`` goes to the stream and ``/who`` lists every node; the rest as on one node."""
        match command:
            case commands.Me(action):
                with self.lock:
                    if not peer.left:
                        event = self.cluster.event(Kind.ACTION, peer.nick, text=action)
                        self.cluster.publish(event, peer)
                        if self.watchers:
                            self._emit_locked("action", nick=peer.nick, text=action)
                return True
            case commands.Who():
                nicks = [member.nick for member in self.everyone()]
                self.tell(peer, self.catalog("who", count=len(nicks), nicks=", ".join(nicks)))
                return True
        return super().command(peer, command)

    def everyone(self) -> list[Member]:
        """Every member on every node; this node's alone while Redis cannot be reached."""
        found = self.cluster.members()
        if found or not self.cluster.degraded:
            return found
        node, ident = self.cluster.node, self.cluster.ident
        return [Member(peer.nick, node, ident) for peer in self.members()]

    def notice(self, text: str, admin_uid: int) -> int:
        """Append a server notice for every node; -1 if Redis cannot be reached."""
        cluster = self.cluster
        if cluster.append_now(cluster.event(Kind.NOTICE, "", text=text)) is None:
            return -1
        self.emit("notice", text=text, admin_uid=admin_uid)
        self.log.info("notice", text=text, admin_uid=admin_uid)
        return len(self.everyone())

    def kick(self, nick: str, reason: str, admin_uid: int) -> Peer | None:
        """Kick a member of this node; others are kicked through :meth:`kick_elsewhere`."""
        with self.lock:
            peer = self._members.get(nick_key(nick))
            if peer is None:
                return None
            self.stats.kicks += 1
            if self.watchers:
                self._emit_locked("kick", nick=peer.nick, reason=reason, admin_uid=admin_uid)
            self._expel_locked(peer, "kicked", Kind.KICK, reason)
        peer.log.info("client_kicked", reason=reason, admin_uid=admin_uid)
        self._exited(peer, "kicked")
        return peer

    def kick_elsewhere(self, nick: str, reason: str) -> str | None:
        """Ask the node holding ``nick`` to kick it; None if nobody holds it (or no Redis)."""
        member = self.cluster.find(nick)
        if member is None:
            return None
        event = self.cluster.event(Kind.KICK, member.nick, reason=reason, target=member.ident)
        return member.node if self.cluster.append_now(event) is not None else None

    def elsewhere(self) -> tuple[str, list[tuple[str, str]]] | None:
        ident = self.cluster.ident
        others = [(m.nick, m.node) for m in self.cluster.members() if m.ident != ident]
        return self.cluster.node, others

    def expel_banned(self, peers: list[Peer], reason: str, farewell: str) -> list[Peer]:
        """Disconnect this node's members among ``peers``; the ban line goes to every node."""
        expelled = []
        wanted = set(peers)
        with self.lock:
            for peer in [member for member in self._members.values() if member in wanted]:
                self._expel_locked(peer, "banned", Kind.BAN, reason, farewell)
                expelled.append(peer)
        for peer in expelled:
            self._exited(peer, "banned")
        return expelled

    def _expel_locked(
        self, peer: Peer, why: str, kind: Kind, reason: str, farewell: str | None = None
    ) -> None:
        """Close a member with its last line; the room hears ``kind`` (kick, ban), then leave."""
        if farewell is None:
            farewell = self.catalog("kicked_you", reason=reason)
        self.cluster.publish(self.cluster.event(kind, peer.nick, reason=reason))
        self._exit_locked(peer, why, farewell)

    def _exit_locked(
        self,
        peer: Peer,
        reason: str,
        farewell: str | None = None,
        announcement: str = "",
        announced: Entry | None = None,
    ) -> None:
        """The one way out, as on one node; the leave line reaches everyone via the stream.

        A client that leaves no longer sees its own leave line (it is closed before the
        entry comes back).
        """
        peer.left = True
        del self._members[peer.key]
        if peer in self._joining:
            del self._joining[peer]
        else:
            if farewell is not None:
                self.delivery.unicast_locked(peer, farewell)
            graceful = farewell is not None or reason in _GRACEFUL
            self.delivery.detach_locked(peer, graceful=graceful)
        cluster = self.cluster
        cluster.publish(cluster.event(Kind.LEAVE, peer.nick, reason=reason), release=peer.key)
        if reason == "slow_consumer":
            self.stats.slow_consumer_drops += 1
        if self.watchers:
            self._emit_locked("leave", nick=peer.nick, reason=reason)

    # -- called by the cluster's threads --------------------------------------------

    def apply(self, events: list[StreamEvent]) -> None:
        """Deliver and record entries read back from the stream, in its order."""
        controls: list[StreamEvent] = []
        with self.lock:
            for event in events:
                if event.kind in CONTROL_KINDS:
                    controls.append(event)
                else:
                    self._apply_locked(event)
        for event in controls:  # outside the lock: they take it themselves, or write files
            if event.origin != self.cluster.ident:  # done here already
                self._control(event)

    def _control(self, event: StreamEvent) -> None:
        """A purge, ban or unban made on another node."""
        match event.kind:
            case Control.PURGE if self.history is not None:
                self.history.purge(event.nick, float(event.text) if event.text else None)
            case Control.EXPEL if self.bans is not None:
                try:
                    ban = Ban.from_json(json.loads(event.data))
                except (ValueError, TypeError, KeyError):
                    return
                self.bans.adopt(ban)
                peers = [peer for peer in self.members() if host_is(peer.host, ban.address)]
                self.expel_banned(
                    peers, ban.reason or self.catalog("no_reason"), farewell(self.catalog, ban)
                )
            case Control.UNBAN if self.bans is not None:
                self.bans.drop(event.target)

    def _apply_locked(self, event: StreamEvent) -> None:
        entry = event.entry()
        mine = event.origin == self.cluster.ident
        joined, after = None, None
        if event.kind == Kind.JOIN and mine:
            peer = self._members.get(nick_key(event.nick))
            if peer is not None and peer in self._joining:
                after = self._joining.pop(peer)
                self.delivery.attach_locked(peer)
                joined = peer
        elif event.kind == Kind.KICK and event.target == self.cluster.ident:
            peer = self._members.get(nick_key(event.nick))
            if peer is not None and peer.nick == event.nick:
                self.stats.kicks += 1
                self._exit_locked(peer, "kicked", self.catalog("kicked_you", reason=event.reason))
                peer.stop_reading()
        shown = self._earlier(joined, after) if joined is not None else None
        self.delivery.broadcast_locked(event_line(entry, self.catalog), entry)
        if self.history is not None:
            recorded = self.history.record(entry)
            if recorded is not None:
                self.delivery.recorded = recorded
        if joined is not None:
            self.delivery.unicast_locked(joined, self.catalog("welcome"))
            for line in shown.lines if shown is not None else ():
                self.delivery.unicast_locked(joined, *line)

    def not_sent(self, peer: Peer, text: str) -> None:
        """Tell ``peer`` a message of theirs could not be appended (Redis unreachable)."""
        self.tell(peer, self.catalog("cluster_not_sent", text=text))

    def drop(self, peer: Peer, line: str) -> None:
        """Close a member with ``line`` as its last (its nickname was lost to another)."""
        with self.lock:
            if peer.left or self._members.get(peer.key) is not peer:
                return
            self._exit_locked(peer, "cluster", line)
        self._exited(peer, "cluster")

    def history_reset(self) -> None:
        """Redis lost its data: say so to this node's clients (a line, not a room event)."""
        with self.lock:
            self.delivery.broadcast_locked(self.catalog("cluster_history_reset"))
