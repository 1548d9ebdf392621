"""The room: who is here, under which nickname, and the one order everything happens in.

One lock covers the nickname registry and the hand-over to delivery, so joins, messages,
leaves and kicks are applied in a single total order that every client observes. Work under
the lock is a few dictionary operations and list appends; encoding, logging and all socket
I/O happen outside it.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Any

from lanchatd import commands
from lanchatd.catalog import Catalog
from lanchatd.config import Settings
from lanchatd.delivery import Delivery
from lanchatd.nicknames import nick_key
from lanchatd.peer import Peer

#: Leave reasons that still deliver the client's last lines before closing.
_GRACEFUL = frozenset({"quit", "kicked", "shutdown"})


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

    def __init__(self, settings: Settings, log: Any) -> None:
        self.lock = threading.Lock()
        self.settings = settings
        self.catalog = Catalog(settings.lang)
        self.log = log
        self.stats = Stats(started=time.time())
        self._members: dict[str, Peer] = {}
        self.delivery = Delivery(
            self.lock,
            settings.send_buffer_bytes,
            on_slow=lambda peer: self.leave(peer, "slow_consumer"),
            on_error=lambda peer: self.leave(peer, "disconnect"),
        )

    def reconfigure(self, settings: Settings) -> None:
        """Apply settings that can change while clients are connected."""
        with self.lock:
            self.settings = settings
            self.catalog = Catalog(settings.lang)
            self.delivery.send_buffer_bytes = settings.send_buffer_bytes

    def __len__(self) -> int:
        return len(self._members)

    def members(self) -> list[Peer]:
        """The joined clients, in join order."""
        with self.lock:
            return list(self._members.values())

    def join(self, peer: Peer, nick: str) -> str | None:
        """Add ``peer`` as ``nick``; return a catalogue key if refused (nickname taken)."""
        key = nick_key(nick)
        with self.lock:
            if key in self._members:
                return "nick_taken"
            peer.nick, peer.key, peer.joined_at = nick, key, time.time()
            self._members[key] = peer
            self.stats.peak_clients = max(self.stats.peak_clients, len(self._members))
            delivery = self.delivery
            delivery.attach_locked(peer)
            delivery.broadcast_locked(self.catalog("joined", nick=nick))
            delivery.private_locked(peer, self.catalog("welcome"))
        return None

    def say(self, peer: Peer, texts: list[str]) -> None:
        """Broadcast chat lines from ``peer``, then log them (outside the lock)."""
        prefix = peer.nick + ": "
        sizes = [len(text.encode()) for text in texts]
        with self.lock:
            if peer.left:
                return
            broadcast = self.delivery.broadcast_locked
            for text in texts:
                broadcast(prefix + text)
            self.stats.messages += len(texts)
            self.stats.bytes_in += sum(sizes)
            log_text = self.settings.log_message_text
        info = peer.log.info
        for text, size in zip(texts, sizes, strict=True):
            if log_text:
                info("message", text=text, bytes=size)
            else:
                info("message", bytes=size)

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
            case commands.Me(action):
                with self.lock:
                    if not peer.left:
                        self.delivery.broadcast_locked(
                            catalog("action", nick=peer.nick, text=action)
                        )
            case commands.PrivateMessage(argument):
                self._private(peer, argument)
            case commands.Usage(key):
                self.tell(peer, catalog(key))
            case commands.Unknown(name):
                self.tell(peer, catalog("unknown_command", command=name))
        return True

    def _private(self, peer: Peer, argument: str) -> None:
        catalog = self.catalog
        with self.lock:
            target, text = self._resolve_target(argument)
            if peer.left:
                return
            if target is None:
                self.delivery.private_locked(
                    peer, catalog("no_such_nick", nick=argument.partition(" ")[0])
                )
                return
            self.delivery.private_locked(target, catalog("private_in", sender=peer.nick, text=text))
            if target is not peer:
                self.delivery.private_locked(
                    peer, catalog("private_out", target=target.nick, text=text)
                )

    def _resolve_target(self, argument: str) -> tuple[Peer | None, str]:
        """The longest leading words of ``argument`` that name a member (nicks may hold spaces)."""
        words = argument.split(" ")
        for cut in range(len(words) - 1, 0, -1):
            target = self._members.get(nick_key(" ".join(words[:cut])))
            text = " ".join(words[cut:]).strip()
            if target is not None and text:
                return target, text
        return None, ""

    def tell(self, peer: Peer, text: str) -> None:
        """Send one line to ``peer`` alone, in order with the broadcasts it receives."""
        with self.lock:
            if not peer.left:
                self.delivery.private_locked(peer, text)

    def leave(self, peer: Peer, reason: str) -> bool:
        """Remove ``peer`` (idempotent); everyone left behind is told. True if it was here."""
        with self.lock:
            if peer.left or self._members.get(peer.key) is not peer:
                return False
            peer.left = True
            del self._members[peer.key]
            delivery = self.delivery
            if reason == "shutdown":
                delivery.detach_locked(peer, graceful=True)
            else:
                delivery.broadcast_locked(self.catalog("left", nick=peer.nick))
                delivery.detach_locked(peer, graceful=reason in _GRACEFUL)
            if reason == "slow_consumer":
                self.stats.slow_consumer_drops += 1
        peer.log.info("client_left", reason=reason)
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
