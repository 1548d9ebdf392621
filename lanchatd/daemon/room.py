"""The room: who is here, under which nickname, and the one order everything happens in.

One lock covers the nickname registry and the hand-over to delivery, so joins, messages,
leaves and kicks are applied in a single total order that every client observes. Work under
the lock is a few dictionary operations and list appends; encoding, logging and all socket
I/O happen outside it.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, TypeVar

from lanchatd.core import commands
from lanchatd.core.catalog import Catalog
from lanchatd.core.framing import Framing
from lanchatd.core.lines import chat_prefix
from lanchatd.core.nicknames import nick_key
from lanchatd.core.tags import MessageId
from lanchatd.daemon import logs
from lanchatd.daemon.bans import BanStore
from lanchatd.daemon.config import Settings
from lanchatd.daemon.delivery import Delivery
from lanchatd.daemon.history import Entry, History, Kind
from lanchatd.daemon.logs import Logger
from lanchatd.daemon.peer import Peer
from lanchatd.daemon.recall import Earlier, earlier, replay_lines, tagged_lines


class _HasNick(Protocol):
    """Someone ``/msg`` can name: a member here, or one on another node (cluster)."""

    @property
    def nick(self) -> str: ...


_Named = TypeVar("_Named", bound=_HasNick)

#: Leave reasons that still deliver the client's last lines before closing. A disconnect is
#: often only a half-close (``nc -N``, scripts): such a client still reads what it is owed.
_GRACEFUL = frozenset({"quit", "kicked", "shutdown", "disconnect"})


@dataclass(slots=True)
class Stats:
    """Counters for ``lanchatctl stats``; written under the room lock."""

    started: float
    peak_clients: int = 0
    messages: int = 0
    bytes_in: int = 0
    slow_consumer_drops: int = 0
    kicks: int = 0


class Room:
    """The chat room shared by every connection."""

    def __init__(self, settings: Settings, log: Logger, history: History | None = None) -> None:
        self.lock = threading.Lock()
        self.settings = settings
        self.catalog = Catalog(settings.lang)
        self.log = log
        self.stats = Stats(started=time.time())
        self._members: dict[str, Peer] = {}
        #: ``lanchatctl watch`` callbacks, called under the lock (they must only enqueue).
        #: Empty unless someone watches, so the hooks below cost one truth test.
        self.watchers: tuple[Callable[[dict[str, Any]], None], ...] = ()
        #: Every event the whole room sees, in the order it is broadcast (None: disabled).
        self.history = history
        self.delivery = Delivery(
            self.lock,
            settings.send_buffer_bytes,
            on_slow=lambda peer: self.leave(peer, "slow_consumer"),
            on_error=lambda peer: self.leave(peer, "disconnect"),
            history=history,
        )

    def reconfigure(self, settings: Settings) -> None:
        """Apply settings that can change while clients are connected."""
        with self.lock:
            self.settings = settings
            self.catalog = Catalog(settings.lang)
            self.delivery.send_buffer_bytes = settings.send_buffer_bytes
        if self.history is not None:
            self.history.configure(settings.history_keep, settings.history_keep_days)

    # Several nodes (docs/cluster.md): a single node has no other. ---------------------------

    def cluster_stats(self) -> dict[str, Any] | None:
        """This node's view of the room's nodes; None on a single node."""
        return None

    def elsewhere(self) -> tuple[str, list[tuple[str, str]]] | None:
        """This node's name and the members other nodes serve, as (nick, node); None alone."""
        return None

    def kick_elsewhere(self, nick: str, reason: str) -> str | None:
        """Have the node serving ``nick`` kick it; that node's name, None if nobody has it."""
        return None

    def purged(self, nick: str, since: float | None) -> None:
        """After ``nick``'s words were purged from history here: the other nodes too."""

    def ban_store(self, path: Path) -> BanStore:
        """The ban list (with several nodes, one that every node shares)."""
        return BanStore(path, self.log)

    def __len__(self) -> int:
        return len(self._members)

    def members(self) -> list[Peer]:
        """The joined clients, in join order."""
        with self.lock:
            return list(self._members.values())

    def join(self, peer: Peer, nick: str, after: MessageId | None = None) -> str | None:
        """Add ``peer`` as ``nick``; return a catalogue key if refused (taken, look-alike, full).

        A peer that negotiated ids and resumes ``after`` an id gets exactly the events since,
        decided here under the lock with its join, so the replay meets the live lines.
        """
        key = nick_key(nick)
        shown = self._earlier(peer, after)
        with self.lock:
            if (holder := self._members.get(key)) is not None:
                return (
                    "nick_taken" if holder.nick.casefold() == nick.casefold() else "nick_lookalike"
                )
            if len(self._members) >= self.settings.max_clients:
                return "server_full"
            peer.nick, peer.key = nick, key
            self._members[key] = peer
            self.stats.peak_clients = max(self.stats.peak_clients, len(self._members))
            delivery = self.delivery
            delivery.attach_locked(peer)
            shown = self._still_earlier_locked(shown)
            entry = self._record_locked(Kind.JOIN, nick)
            delivery.broadcast_locked(self.catalog("joined", nick=nick), entry)
            delivery.unicast_locked(peer, self.catalog("welcome"))
            for line, tags in shown.lines if shown is not None else ():
                delivery.unicast_locked(peer, line, tags)
            if self.watchers:
                self._emit_locked(
                    "join", nick=nick, host=peer.host, port=peer.port, mode=peer.framing.value
                )
        return None

    def say(self, peer: Peer, texts: list[str]) -> None:
        """Broadcast chat lines from ``peer``, then log them (outside the lock); the caller's
        thread sends them if no round is under way."""
        if all(map(str.isascii, texts)):  # a character a byte: no encoding to count them
            sizes = list(map(len, texts))
        else:
            sizes = [len(text.encode()) for text in texts]
        try:
            with self.lock:
                if peer.left:
                    return
                self._say_locked(peer, texts)
                self.stats.messages += len(texts)
                self.stats.bytes_in += sum(sizes)
                log_text = self.settings.log_message_text
                if self.watchers:
                    for text in texts:
                        self._emit_locked(
                            "message", nick=peer.nick, text=text if log_text else None
                        )
        finally:  # whatever went wrong after the lines were queued, they are sent
            self.delivery.deliver_now()
        logs.messages(peer.log, texts, sizes, log_text)

    def _say_locked(self, peer: Peer, texts: list[str]) -> None:
        """Hand chat lines to history and delivery (a cluster's room appends them instead)."""
        run = None
        if (history := self.history) is not None:
            run = history.append_many(Kind.MESSAGE, peer.nick, texts)
            self.delivery.recorded = run.last
        self.delivery.broadcast_many_locked(chat_prefix(peer.nick), texts, run)

    def command(self, peer: Peer, command: commands.Command) -> bool:
        """Carry out a slash command; False when the client asked to leave."""
        catalog = self.catalog
        match command:
            case commands.Quit():
                self.leave(peer, "quit")
                return False
            case commands.Who():
                nicks = [member.nick for member in self.members()]
                self.tell(peer, catalog("who", count=len(nicks), nicks=", ".join(nicks)))
            case commands.Help():
                self.tell(peer, catalog("help"))
            case commands.History(count):
                self._show_history(peer, count)
            case commands.Me(action):
                with self.lock:
                    if not peer.left:
                        entry = self._record_locked(Kind.ACTION, peer.nick, action)
                        self.delivery.broadcast_locked(
                            catalog("action", nick=peer.nick, text=action), entry
                        )
                        if self.watchers:
                            self._emit_locked("action", nick=peer.nick, text=action)
            case commands.PrivateMessage():
                self._private(peer, command)
            case commands.Usage(key):
                self.tell(peer, catalog(key))
            case commands.Unknown(name):
                self.tell(peer, catalog("unknown_command", command=name))
        return True

    def _earlier(self, peer: Peer, after: MessageId | None) -> Earlier | None:
        """What a line-mode (or web) newcomer is shown after the welcome: the last
        ``on_join`` events, or for a client resuming ``after`` an id, everything since.

        Classic clients get none: the original tutorial client's first lines stay as they
        always were.
        """
        count = self.settings.history_on_join
        if self.history is None or peer.framing is Framing.CLASSIC:
            return None
        if after is not None and peer.tagged:
            budget = self.settings.send_buffer_bytes // 2
            return earlier(self.history, count, self.catalog, after=after, budget=budget)
        if not count:
            return None
        return earlier(self.history, count, self.catalog, tagged=peer.tagged)

    def _still_earlier_locked(self, shown: Earlier | None) -> Earlier | None:
        """``shown``, read again if an event came since: under the lock, before the
        newcomer's own join is recorded, history and the live lines after it meet without a
        gap or a repeat."""
        if shown is None or self.history is None or shown.newest == self.history.newest():
            return shown
        return earlier(
            self.history,
            shown.count,
            self.catalog,
            tagged=shown.tagged,
            after=shown.after,
            budget=shown.budget,
        )

    def _show_history(self, peer: Peer, count: int) -> None:
        """``/history N``: read outside the lock (up to 500 rows), then queued to ``peer``."""
        catalog = self.catalog
        lines: list[tuple[str, str | None]]
        if self.history is None:
            lines = [(catalog("history_off"), None)]
        elif peer.tagged and (entries := self.history.last(count)):
            lines = tagged_lines(entries, catalog)
        else:
            lines = [(line, None) for line in replay_lines(self.history.last(count), catalog)]
        with self.lock:
            if not peer.left:
                for line, tags in lines:
                    self.delivery.unicast_locked(peer, line, tags)

    def _private(self, peer: Peer, message: commands.PrivateMessage) -> None:
        """Deliver ``/msg`` if exactly one reading names someone online; else say why not."""
        with self.lock:
            if peer.left:
                return
            found = [
                (member, start)
                for key, start in message.readings
                if (member := self._members.get(key)) is not None
            ]
            picked = self._pick(message, found)
            if isinstance(picked, str):
                self.delivery.unicast_locked(peer, picked)
                return
            target, text = picked
            self.delivery.unicast_locked(
                target, self.catalog("private_in", sender=peer.nick, text=text)
            )
            if target is not peer:
                self.delivery.unicast_locked(
                    peer, self.catalog("private_out", target=target.nick, text=text)
                )

    def _pick(
        self, message: commands.PrivateMessage, found: Sequence[tuple[_Named, int]]
    ) -> tuple[_Named, str] | str:
        """The one person ``/msg`` names (among ``found``: readings of online nicknames, with
        where their text starts) and that text; else the line saying why it is not sent.

        One home for the rules, whether the room looks its members up here or across nodes.
        """
        if len(found) != 1:
            if found:
                choices = ", ".join(f'"{member.nick}"' for member, _ in found)
                return self.catalog("msg_ambiguous", nicks=choices, example=found[-1][0].nick)
            return self.catalog("no_such_nick", nick=message.wanted)
        target, start = found[0]
        return target, message.argument[start:].strip()

    def tell(self, peer: Peer, text: str) -> None:
        """Send one line to ``peer`` alone, in order with the broadcasts it receives."""
        with self.lock:
            if not peer.left:
                self.delivery.unicast_locked(peer, text)

    def send_raw(self, peer: Peer, data: bytes) -> None:
        """Queue bytes already in ``peer``'s framing (a WebSocket pong), in order likewise."""
        with self.lock:
            if not peer.left:
                self.delivery.unicast_bytes_locked(peer, data)

    def leave(self, peer: Peer, reason: str) -> bool:
        """Remove ``peer`` (idempotent); everyone left behind is told. True if it was here."""
        with self.lock:
            if peer.left or self._members.get(peer.key) is not peer:
                return False
            self._exit_locked(peer, reason)
        self._exited(peer, reason)
        return True

    def shutdown(self) -> None:
        """Tell everyone the server is going away, then let delivery flush and finish."""
        with self.lock:
            self.delivery.broadcast_locked(self.catalog("shutdown"))
            members = list(self._members.values())
        for peer in members:
            self.leave(peer, "shutdown")
        with self.lock:
            self.delivery.stop_locked()

    # Administration (lanchatctl, through moderation.py) -----------------------------------

    def kick(self, nick: str, reason: str, admin_uid: int) -> Peer | None:
        """Disconnect ``nick``, telling it why; the others see it was kicked. None if absent."""
        with self.lock:
            peer = self._members.get(nick_key(nick))
            if peer is None:
                return None
            catalog = self.catalog
            self.stats.kicks += 1
            if self.watchers:
                self._emit_locked("kick", nick=peer.nick, reason=reason, admin_uid=admin_uid)
            self._exit_locked(
                peer,
                "kicked",
                catalog("kicked_you", reason=reason),
                catalog("kicked", nick=peer.nick, reason=reason),
                self._record_locked(Kind.KICK, peer.nick, reason=reason),
            )
        peer.log.info("client_kicked", reason=reason, admin_uid=admin_uid)
        self._exited(peer, "kicked")
        return peer

    def expel_banned(self, peers: list[Peer], reason: str, farewell: str) -> list[Peer]:
        """Disconnect the members among ``peers`` (a banned address), in join order.

        Each gets ``farewell`` as its last line; the others see it was banned for ``reason``.
        """
        expelled = []
        wanted = set(peers)
        with self.lock:
            catalog = self.catalog
            for peer in [member for member in self._members.values() if member in wanted]:
                announcement = catalog("banned", nick=peer.nick, reason=reason)
                entry = self._record_locked(Kind.BAN, peer.nick, reason=reason)
                self._exit_locked(peer, "banned", farewell, announcement, entry)
                expelled.append(peer)
        for peer in expelled:
            self._exited(peer, "banned")
        return expelled

    def notice(self, text: str, admin_uid: int) -> int:
        """Broadcast a server notice; return how many clients it went to."""
        with self.lock:
            entry = self._record_locked(Kind.NOTICE, "", text)
            self.delivery.broadcast_locked(self.catalog("notice", text=text), entry)
            recipients = len(self._members)
            if self.watchers:
                self._emit_locked("notice", text=text, admin_uid=admin_uid)
        self.log.info("notice", text=text, admin_uid=admin_uid, recipients=recipients)
        return recipients

    def _exit_locked(
        self,
        peer: Peer,
        reason: str,
        farewell: str | None = None,
        announcement: str = "",
        announced: Entry | None = None,
    ) -> None:
        """The one way out of the room for a member: leaving, being kicked or banned.

        An expelled member gets ``farewell`` as its last line and the rest ``announcement``
        (the history entry ``announced``);
        the usual leave line follows, so clients that track who is online by joins and
        leaves see this one go too. At shutdown nobody is told (the room is going away).
        """
        peer.left = True
        del self._members[peer.key]
        delivery = self.delivery
        if farewell is not None:
            delivery.unicast_locked(peer, farewell)
            delivery.detach_locked(peer, graceful=True, reason=reason)
            delivery.broadcast_locked(announcement, announced)
            entry = self._record_locked(Kind.LEAVE, peer.nick)
            delivery.broadcast_locked(self.catalog("left", nick=peer.nick), entry)
        elif reason == "shutdown":
            delivery.detach_locked(peer, graceful=True, reason=reason)
        else:
            entry = self._record_locked(Kind.LEAVE, peer.nick)
            delivery.broadcast_locked(self.catalog("left", nick=peer.nick), entry)
            delivery.detach_locked(peer, graceful=reason in _GRACEFUL, reason=reason)
        if reason == "slow_consumer":
            self.stats.slow_consumer_drops += 1
        if self.watchers:
            self._emit_locked("leave", nick=peer.nick, reason=reason)

    def _record_locked(
        self, kind: Kind, nick: str, text: str = "", reason: str = ""
    ) -> Entry | None:
        """Keep an event the whole room is about to be sent, so its id can tag the line;
        delivery commits it before sending. None when history is off."""
        if self.history is None:
            return None
        entry = self.history.append(kind, nick, text, reason)
        self.delivery.recorded = entry.id
        return entry

    @staticmethod
    def _exited(peer: Peer, reason: str) -> None:
        """After :meth:`_exit_locked`, outside the lock: let the reader go, log the leave."""
        peer.stop_reading()
        peer.log.info("client_left", reason=reason)

    def watch(self, callback: Callable[[dict[str, Any]], None]) -> None:
        """Call ``callback(event)`` for every join, leave, message, action, kick and notice.

        It is called with the room lock held, in the order clients see things, so it must
        not block: append to a queue and return.
        """
        with self.lock:
            self.watchers = (*self.watchers, callback)

    def unwatch(self, callback: Callable[[dict[str, Any]], None]) -> None:
        with self.lock:
            self.watchers = tuple(w for w in self.watchers if w is not callback)

    def emit(self, kind: str, **fields: Any) -> None:
        """Report an event that is not a room change (a ban, say) to the watchers."""
        with self.lock:
            if self.watchers:
                self._emit_locked(kind, **fields)

    def _emit_locked(self, kind: str, **fields: Any) -> None:
        event = {"type": kind, "time": time.time(), **fields}
        for watcher in self.watchers:
            watcher(event)
