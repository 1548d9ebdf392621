"""Moderation in process: a real room, its delivery thread and real sockets (socket pairs).

The admin server and the accept path both ask :class:`Moderation`; here it is asked
directly, so what a banned or kicked member reads, what the others read, what watchers
see and what a newcomer from a banned address is told are checked in one place.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import structlog

from lanchatd.daemon.bans import BanStore
from lanchatd.daemon.config import Settings
from lanchatd.daemon.moderation import Moderation
from lanchatd.daemon.peer import Peer
from lanchatd.daemon.room import Room
from tests.support import WAIT


@dataclass
class Chat:
    """A room in English with moderation, and the client ends of its members' sockets."""

    room: Room
    moderation: Moderation
    connections: list[Peer] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)

    def join(self, nick: str, host: str) -> socket.socket:
        server_end, client_end = socket.socketpair()
        client_end.settimeout(WAIT)
        peer = Peer(server_end, host, 40000 + len(self.connections), structlog.get_logger())
        self.connections.append(peer)
        assert self.room.join(peer, nick) is None
        assert lines(client_end, 2)[-1] == "Connected to the server!"
        return client_end


def lines(sock: socket.socket, count: int) -> list[str]:
    """The next ``count`` lines ``sock`` receives (within the socket's timeout)."""
    data = b""
    while data.count(b"\n") < count:
        chunk = sock.recv(65536)
        assert chunk, f"closed after {data!r}"
        data += chunk
    return data.decode().splitlines()


@pytest.fixture
def chat(tmp_path: Path) -> Iterator[Chat]:
    log = structlog.get_logger()
    room = Room(Settings(lang="en"), log)
    connections: list[Peer] = []
    moderation = Moderation(room, BanStore(tmp_path / "bans.json", log), lambda: connections)
    chat = Chat(room, moderation, connections)
    room.delivery.start()
    with structlog.testing.capture_logs():
        yield chat
        room.shutdown()
        room.delivery.join(WAIT)


def test_a_timed_ban_expels_its_members_and_refuses_newcomers_with_the_same_line(
    chat: Chat,
) -> None:
    alice = chat.join("alice", "10.0.0.1")
    mallory = chat.join("mallory", "::ffff:10.0.0.7")
    assert lines(alice, 1) == ["mallory joined!"]
    chat.room.watch(chat.events.append)
    assert chat.moderation.address_of("MALLORY") == "10.0.0.7"
    outcome = chat.moderation.ban("10.0.0.7", "spam", 3600.0, 1000)
    assert (outcome.disconnected, outcome.save_error) == (["mallory"], None)
    told = lines(mallory, 1)[0]
    assert told.startswith("*** You are banned from this server until ")
    assert told.endswith(" UTC: spam")
    assert chat.moderation.refusal("10.0.0.7") == told
    assert lines(alice, 2) == ["*** mallory was banned by an administrator: spam", "mallory left!"]
    assert [(e["type"], e.get("reason")) for e in chat.events] == [
        ("leave", "banned"),
        ("ban", "spam"),
    ]
    assert chat.moderation.refusal("10.0.0.1") is None


def test_a_ban_for_good_says_so_and_unban_lets_the_address_back(chat: Chat) -> None:
    ban = chat.moderation.ban("10.0.0.8", "", None, 0).ban
    assert (
        chat.moderation.refusal("10.0.0.8")
        == "*** You are banned from this server: no reason given"
    )
    assert chat.moderation.in_force() == [ban]
    assert chat.moderation.unban("10.0.0.8", 0) == (ban, None)
    assert chat.moderation.refusal("10.0.0.8") is None
    assert chat.moderation.unban("10.0.0.8", 0) == (None, None)


def test_kick_gives_the_default_reason_and_goes_out_through_the_one_exit(chat: Chat) -> None:
    alice = chat.join("alice", "10.0.0.1")
    bob = chat.join("bob", "10.0.0.2")
    assert lines(alice, 1) == ["bob joined!"]
    chat.room.watch(chat.events.append)
    kicked = chat.moderation.kick("BOB", "", 1000)
    assert kicked is not None
    assert (kicked[0].nick, kicked[1]) == ("bob", "no reason given")
    assert lines(bob, 1) == ["*** You were kicked by an administrator: no reason given"]
    assert lines(alice, 2) == [
        "*** bob was kicked by an administrator: no reason given",
        "bob left!",
    ]
    assert [(e["type"], e["nick"]) for e in chat.events] == [("kick", "bob"), ("leave", "bob")]
    assert chat.moderation.kick("bob", "again", 1000) is None
    assert [member.nick for member in chat.room.members()] == ["alice"]
