"""This node's side of a room shared through Redis: append, read back, presence.

Three threads, none of them under the room lock while it talks to Redis:

- the *appender* sends what the room queued (messages, actions, leaves, nickname releases) in
  one pipelined round trip per batch. When Redis cannot be reached, every message in the
  batch is reported back to its sender as not sent (never delivered anywhere), while leaves
  and releases are kept and sent again once Redis answers: nothing is lost silently.
- the *reader* reads the stream back (``XREAD BLOCK``) after the last id it applied and hands
  each batch to the room, which delivers and records it in that order. After an outage it
  reads on from the same id, so entries other nodes appended meanwhile arrive too.
- the *heartbeat* refreshes this node's key every 2 s (it expires after 10 s) and declares
  nodes whose key has expired dead: the one node that wins ``SET NX`` on their claim key
  appends a leave for each of their users and frees their nicknames.

A node restart is a new incarnation (``ident``), so a restarted node is never mistaken for
the one that died.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import redis

from lanchatd.core.nicknames import nick_key
from lanchatd.core.tags import ORIGIN, MessageId
from lanchatd.daemon.bans import Ban
from lanchatd.daemon.cluster.entries import (
    Control,
    decode,
    decode_private,
    fields,
    gone_fields,
    private_fields,
)
from lanchatd.daemon.config import Settings
from lanchatd.daemon.history import Kind
from lanchatd.daemon.logs import Logger

if TYPE_CHECKING:
    from lanchatd.daemon.cluster.room import SharedRoom
    from lanchatd.daemon.peer import Peer

#: Socket timeout for commands: a message sent while Redis hangs is reported within 2 s.
COMMAND_TIMEOUT: Final = 1.0
#: How long one XREAD waits for new entries (ms), and the reader's socket timeout beyond it.
BLOCK_MS: Final = 1000
READ_TIMEOUT: Final = 3.0
#: Entries read or appended per round trip.
BATCH: Final = 500
#: Heartbeat period and lifetime: a node silent for longer than HEARTBEAT_TTL is dead.
HEARTBEAT_EVERY: Final = 2.0
HEARTBEAT_TTL_MS: Final = 10_000
#: A node's inbox (private messages for its members): at most about this many entries, and
#: gone this long after the last one was sent (a dead node's inbox does not linger).
INBOX_MAXLEN: Final = 100
INBOX_TTL_MS: Final = 60_000
#: Pause before trying Redis again after a failure.
RETRY_EVERY: Final = 0.5

#: Delete a nickname claim only if this incarnation still holds it (a late release must not
#: remove a newer claim made after this node was declared dead).
_RELEASE: Final = """
local held = redis.call('HGET', KEYS[1], ARGV[1])
if held and cjson.decode(held)['ident'] == ARGV[2] then
  return redis.call('HDEL', KEYS[1], ARGV[1])
end
return 0
"""


class Keys:
    """The room's Redis key names, all under ``lanchat:<room>:``."""

    def __init__(self, room: str) -> None:
        prefix = f"lanchat:{room}:"
        self.log = prefix + "log"
        self.nicks = prefix + "nicks"
        self.nodes = prefix + "nodes"
        self.bans = prefix + "bans"
        self.epoch = prefix + "epoch"
        self._prefix = prefix

    def heartbeat(self, ident: str) -> str:
        return f"{self._prefix}hb:{ident}"

    def dead(self, ident: str) -> str:
        return f"{self._prefix}dead:{ident}"

    def inbox(self, ident: str) -> str:
        return f"{self._prefix}inbox:{ident}"


@dataclass(frozen=True, slots=True)
class Member:
    """Someone in the room, on whichever node."""

    nick: str
    node: str
    ident: str


@dataclass(slots=True)
class _Out:
    """An entry waiting for the appender; ``peer`` is told if a message cannot be sent."""

    fields: dict[str, str] | None
    peer: Peer | None = None
    release: str | None = None


def connect(settings: Settings, timeout: float) -> redis.Redis:
    """A client for ``[cluster] redis`` (password from ``password_file``); lazy, no I/O."""
    password = None
    if settings.cluster_password_file is not None:
        password = Path(settings.cluster_password_file).read_text().strip()
    assert settings.cluster_redis is not None
    return redis.Redis.from_url(
        settings.cluster_redis,
        password=password,
        socket_timeout=timeout,
        socket_connect_timeout=COMMAND_TIMEOUT,
        decode_responses=True,
        # Anyone who can write to the stream can write bytes that are not UTF-8: they are
        # read as U+FFFD, never an error that would stop the reader at that entry for good.
        encoding_errors="replace",
    )


def new_ident(node: str) -> str:
    return f"{node}/{secrets.token_hex(4)}"


class Cluster:
    """This node in the shared room; the room calls it, its threads call the room."""

    def __init__(self, settings: Settings, room: SharedRoom, log: Logger) -> None:
        self.keys = Keys(settings.cluster_room)
        self.node = settings.cluster_node or socket.gethostname()
        self.ident = new_ident(self.node)
        self.keep = settings.history_keep
        self.room = room
        self.log = log.bind(node=self.node)
        self._redis = connect(settings, COMMAND_TIMEOUT)
        self._reader_redis = connect(settings, READ_TIMEOUT)
        self._release = self._redis.register_script(_RELEASE)
        self._queue: deque[_Out] = deque()
        self._queued = threading.Condition()
        self._stop = threading.Event()
        self._epoch: str | None = None
        history = room.history
        self._last = history.newest() if history is not None else ORIGIN
        #: This incarnation's inbox and the last id read from it (a new incarnation starts
        #: with a new, empty inbox).
        self._inbox = (self.keys.inbox(self.ident), str(ORIGIN))
        self._degraded = threading.Event()
        self._degraded.set()  # until the reader has talked to Redis
        #: Whether ``cluster_degraded`` was logged since Redis last answered.
        self._told = False
        #: The other nodes as their last heartbeats showed them, for ``lanchatctl stats``.
        self.nodes: dict[str, dict[str, Any]] = {}
        self._threads = [
            threading.Thread(target=self._guard(self._append_loop), name="cluster-append"),
            threading.Thread(target=self._guard(self._read_loop), name="cluster-read"),
            threading.Thread(target=self._guard(self._heartbeat_loop), name="cluster-heartbeat"),
        ]

    @property
    def degraded(self) -> bool:
        """Redis could not be reached the last time this node tried."""
        return self._degraded.is_set()

    def start(self) -> None:
        for thread in self._threads:
            thread.daemon = True
            thread.start()

    def close(self, timeout: float = 2.0) -> None:
        """Send what is queued (leaves at shutdown), leave the room's node list, stop."""
        self._stop.set()
        with self._queued:
            self._queued.notify_all()
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        try:
            pipe = self._redis.pipeline(transaction=False)
            pipe.delete(self.keys.heartbeat(self.ident), self.keys.inbox(self.ident))
            pipe.srem(self.keys.nodes, self.ident)
            pipe.execute()
        except redis.RedisError:
            pass  # the others declare this node dead once its heartbeat expires

    # -- the room's side ------------------------------------------------------------

    def claim(self, nick: str) -> str | None:
        """Claim ``nick`` for the whole room; a catalogue key if refused."""
        key = nick_key(nick)
        value = json.dumps({"nick": nick, "node": self.node, "ident": self.ident})
        try:
            if self._redis.hsetnx(self.keys.nicks, key, value):
                return None
            holder = _member(self._redis.hget(self.keys.nicks, key))
        except redis.RedisError as error:
            self._failed(error)
            return "cluster_unavailable"
        if holder is None or holder.nick.casefold() == nick.casefold():
            return "nick_taken"
        return "nick_lookalike"

    def append_now(self, entry: dict[str, str]) -> MessageId | None:
        """Append one entry and wait for Redis (joins, admin commands); None if it failed."""
        try:
            return MessageId.parse(
                self._redis.xadd(self.keys.log, entry, maxlen=self.keep, approximate=True)
            )
        except redis.RedisError as error:
            self._failed(error)
            return None

    def event(self, kind: str, nick: str, **extra: str) -> dict[str, str]:
        """The fields of an event this node appends now."""
        return fields(kind, nick, time.time(), self.ident, **extra)

    def publish(
        self, entry: dict[str, str] | None, peer: Peer | None = None, release: str | None = None
    ) -> None:
        """Queue an entry (and a nickname to release after it); called under the room lock."""
        with self._queued:
            self._queue.append(_Out(entry, peer, release))
            self._queued.notify()

    def share_ban(self, address: str, ban: str) -> str | None:
        """Put a ban (JSON) in the room's list and tell every node; an error if not done."""
        return self._share(Control.EXPEL, address, ban)

    def share_unban(self, address: str) -> str | None:
        """Lift a ban in the room's list and tell every node; an error if not done."""
        return self._share(Control.UNBAN, address)

    def _share(self, kind: Control, address: str, ban: str = "") -> str | None:
        event = self.event(kind, "", target=address, data=ban)
        try:
            pipe = self._redis.pipeline(transaction=False)
            if ban:
                pipe.hset(self.keys.bans, address, ban)
            else:
                pipe.hdel(self.keys.bans, address)
            pipe.xadd(self.keys.log, event, maxlen=self.keep, approximate=True)
            pipe.execute()
        except redis.RedisError as error:
            self._failed(error)
            return f"the other nodes were not told (Redis: {error})"
        return None

    def purge(self, nick: str, since: float | None) -> bool:
        """Delete ``nick``'s messages and actions from the stream (since a time), then have
        every node purge its history; False if Redis could not be reached."""
        key, first = nick_key(nick), "-" if since is None else str(int(since * 1000))
        said = (Kind.MESSAGE.value, Kind.ACTION.value)
        try:
            while entries := self._redis.xrange(self.keys.log, first, "+", count=BATCH):
                gone = [
                    i for i, f in entries if f.get("k") in said and nick_key(f.get("n", "")) == key
                ]
                if gone:
                    self._redis.xdel(self.keys.log, *gone)
                first = "(" + entries[-1][0]
            event = self.event(Control.PURGE, nick, text="" if since is None else repr(since))
            self._redis.xadd(self.keys.log, event, maxlen=self.keep, approximate=True)
        except redis.RedisError as error:
            self._failed(error)
            return False
        return True

    def bans(self) -> list[Ban]:
        """The room's ban list as Redis holds it; [] if it cannot be read."""
        found = []
        for value in self._values(self.keys.bans):
            with contextlib.suppress(ValueError, TypeError, KeyError):
                found.append(Ban.from_json(json.loads(value)))
        return found

    def _values(self, key: str) -> list[str]:
        """A hash's values; [] when Redis cannot be reached."""
        try:
            return list(self._redis.hvals(key))
        except redis.RedisError as error:
            self._failed(error)
            return []

    def members(self) -> list[Member]:
        """Everyone in the room, by node then nickname; [] if Redis cannot be reached."""
        found = [m for m in map(_member, self._values(self.keys.nicks)) if m is not None]
        return sorted(found, key=lambda m: (m.node, m.nick.casefold()))

    def holders(self, keys: list[str]) -> list[Member | None] | None:
        """Who holds each nickname key, in order; None if Redis cannot be reached."""
        if not keys:
            return []
        try:
            return [_member(value) for value in self._redis.hmget(self.keys.nicks, keys)]
        except redis.RedisError as error:
            self._failed(error)
            return None

    def send_private(self, sender: str, target: Member, text: str) -> bool:
        """Put a private message in the inbox of ``target``'s node; False if not done."""
        inbox = self.keys.inbox(target.ident)
        try:
            pipe = self._redis.pipeline(transaction=False)
            pipe.xadd(
                inbox,
                private_fields(sender, target.nick, text, self.ident),
                maxlen=INBOX_MAXLEN,
                approximate=True,
            )
            pipe.pexpire(inbox, INBOX_TTL_MS)
            pipe.execute()
        except redis.RedisError as error:
            self._failed(error)
            return False
        return True

    def find(self, nick: str) -> Member | None:
        """Who holds ``nick`` (as the room tells nicknames apart), on which node."""
        try:
            return _member(self._redis.hget(self.keys.nicks, nick_key(nick)))
        except redis.RedisError as error:
            self._failed(error)
            return None

    def stats(self) -> dict[str, Any]:
        """This node's state and every live node's last heartbeat, for ``lanchatctl stats``."""
        nodes = sorted(self.nodes.values(), key=lambda n: str(n.get("node")))
        return {
            "node": self.node,
            "state": "degraded" if self.degraded else "ok",
            "nodes": nodes,
            "total_clients": sum(int(n.get("clients", 0)) for n in nodes),
        }

    # -- the threads ----------------------------------------------------------------

    def _guard(self, loop: Callable[[], None]) -> Callable[[], None]:
        """A bug in one loop is logged and the loop started again, never the end of it."""

        def run() -> None:
            while not self._stop.is_set():
                try:
                    loop()
                    return
                except Exception:
                    self.log.exception("cluster_error", thread=threading.current_thread().name)
                    self._stop.wait(RETRY_EVERY)

        return run

    def _failed(self, error: Exception) -> None:
        """Redis did not answer: degraded (logged once until it answers again)."""
        self._degraded.set()
        if not self._told:
            self._told = True
            self.log.error("cluster_degraded", error=str(error))

    def _recovered(self) -> None:
        if self._degraded.is_set():
            self._degraded.clear()
            self._told = False
            self.log.info("cluster_ok", ident=self.ident, last=str(self._last))

    def _append_loop(self) -> None:
        while True:
            with self._queued:
                while not self._queue and not self._stop.is_set():
                    self._queued.wait()
                if not self._queue:
                    return
                batch = [self._queue.popleft() for _ in range(min(BATCH, len(self._queue)))]
            try:
                pipe = self._redis.pipeline(transaction=False)
                for out in batch:
                    if out.fields is not None:
                        pipe.xadd(self.keys.log, out.fields, maxlen=self.keep, approximate=True)
                    if out.release is not None:
                        self._release(
                            keys=[self.keys.nicks], args=[out.release, self.ident], client=pipe
                        )
                pipe.execute()
            except redis.RedisError as error:
                self._failed(error)
                self._not_appended(batch)
                if self._stop.is_set():
                    return
                self._stop.wait(RETRY_EVERY)

    def _not_appended(self, batch: list[_Out]) -> None:
        """Tell senders their messages were not sent; keep leaves and releases for later."""
        kept: list[_Out] = []
        for out in batch:
            if out.peer is not None and out.fields is not None:
                self.room.not_sent(out.peer, out.fields.get("t", ""))
            else:
                kept.append(out)
        with self._queued:
            self._queue.extendleft(reversed(kept))

    def _read_loop(self) -> None:
        fresh = True
        while not self._stop.is_set():
            try:
                if fresh:
                    self._check_epoch()
                    self._recovered()
                    fresh = False
                inbox = self.keys.inbox(self.ident)
                if self._inbox[0] != inbox:
                    self._inbox = (inbox, str(ORIGIN))
                reply = self._reader_redis.xread(
                    {self.keys.log: str(self._last), inbox: self._inbox[1]},
                    count=BATCH,
                    block=BLOCK_MS,
                )
                for key, entries in reply or ():
                    if key == inbox:
                        self._read_inbox(inbox, entries)
                        continue
                    events = [e for e in (decode(i, f) for i, f in entries) if e is not None]
                    if entries:
                        self._last = MessageId.parse(entries[-1][0])
                    if events:
                        self.room.apply(events)
            except redis.RedisError as error:
                self._failed(error)
                fresh = True
                self._stop.wait(RETRY_EVERY)

    def _read_inbox(self, inbox: str, entries: list[tuple[str, dict[str, str]]]) -> None:
        """Deliver private messages, answer those whose target left, then delete them all:
        Redis keeps none once delivered."""
        if not entries:
            return
        self._inbox = (inbox, entries[-1][0])
        messages = [m for m in (decode_private(f) for _, f in entries) if m is not None]
        undelivered = self.room.deliver_private(messages) if messages else []
        pipe = self._reader_redis.pipeline(transaction=False)
        for message in undelivered:
            origin = self.keys.inbox(message.origin)
            pipe.xadd(origin, gone_fields(message), maxlen=INBOX_MAXLEN, approximate=True)
            pipe.pexpire(origin, INBOX_TTL_MS)
        pipe.xdel(inbox, *(entry_id for entry_id, _ in entries))
        pipe.execute()

    def _check_epoch(self) -> None:
        """Notice Redis losing its data (or this node being declared dead) and recover."""
        client = self._reader_redis
        client.set(self.keys.epoch, secrets.token_hex(8), nx=True)
        epoch = client.get(self.keys.epoch)
        reset = self._epoch is not None and epoch != self._epoch
        self._epoch = epoch
        declared_dead = bool(client.exists(self.keys.dead(self.ident)))
        if reset:
            self.log.warning("cluster_history_reset", epoch=epoch)
            self._last = ORIGIN
            self._inbox = (self._inbox[0], str(ORIGIN))
            self.room.history_reset()
        if reset or declared_dead:
            self.ident = new_ident(self.node)
            self._rejoin()
        self._beat(client)

    def _rejoin(self) -> None:
        """Claim this node's members again and announce them (after a reset or a false death)."""
        for peer in self.room.members():
            if self.claim(peer.nick) is None:
                self.append_now(self.event(Kind.JOIN.value, peer.nick))
            else:
                self.room.drop(peer, self.room.catalog("nick_taken", nick=peer.nick))

    def _heartbeat_loop(self) -> None:
        while not self._stop.wait(HEARTBEAT_EVERY):
            try:
                self._beat(self._redis)
                self._bury_the_dead()
            except redis.RedisError as error:
                self._failed(error)

    def _beat(self, client: redis.Redis) -> None:
        room = self.room
        mine = {
            "node": self.node,
            "ident": self.ident,
            "clients": len(room),
            "messages_in": room.stats.messages,
            "state": "degraded" if self.degraded else "ok",
        }
        pipe = client.pipeline(transaction=False)
        pipe.set(self.keys.heartbeat(self.ident), json.dumps(mine), px=HEARTBEAT_TTL_MS)
        pipe.sadd(self.keys.nodes, self.ident)
        pipe.execute()

    def _bury_the_dead(self) -> None:
        """Declare nodes without a heartbeat dead: one node announces their users' leaves."""
        client = self._redis
        idents = sorted(client.smembers(self.keys.nodes))
        beats = client.mget([self.keys.heartbeat(ident) for ident in idents]) if idents else []
        alive: dict[str, dict[str, Any]] = {}
        for ident, beat in zip(idents, beats, strict=True):
            if beat is not None:
                try:
                    alive[ident] = json.loads(beat)
                except ValueError:
                    alive[ident] = {"node": ident}
            elif client.set(self.keys.dead(ident), self.ident, nx=True, ex=86_400):
                self._bury(ident)
        self.nodes = alive

    def _bury(self, ident: str) -> None:
        gone = [
            (key, member)
            for key, value in self._redis.hgetall(self.keys.nicks).items()
            if (member := _member(value)) is not None and member.ident == ident
        ]
        pipe = self._redis.pipeline(transaction=False)
        for key, member in gone:
            entry = fields(Kind.LEAVE.value, member.nick, time.time(), ident, reason="node_dead")
            pipe.xadd(self.keys.log, entry, maxlen=self.keep, approximate=True)
            self._release(keys=[self.keys.nicks], args=[key, ident], client=pipe)
        pipe.srem(self.keys.nodes, ident)
        pipe.delete(self.keys.inbox(ident))
        pipe.execute()
        self.log.warning("cluster_node_dead", dead=ident, users=[m.nick for _, m in gone])


def _member(value: str | None) -> Member | None:
    """A nickname claim as stored in the ``nicks`` hash; None if absent or not ours."""
    if value is None:
        return None
    try:
        held = json.loads(value)
        return Member(str(held["nick"]), str(held["node"]), str(held["ident"]))
    except (ValueError, KeyError, TypeError):
        return None
