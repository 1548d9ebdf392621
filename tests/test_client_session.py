"""The client's session layer: joining, refusals, delivery confirmation, backoff.

Most tests use the real daemon. A few need a peer that misbehaves in one precise way (not a
lanchat server at all, or one that kicks us), which the daemon cannot be asked to do; a
scripted socket peer stands in for those.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from lanchatd.client.link import (
    ConnectError,
    Connection,
    Endpoint,
    Refused,
    join,
    nick_problem,
)
from lanchatd.client.session import Backoff, Session, Status
from lanchatd.core.catalog import Catalog
from lanchatd.core.lines import REMOVALS, refusal_key
from lanchatd.core.tags import MessageId, event_tags, format_tags
from tests.client_helpers import ScriptedPeer
from tests.support import Daemon, free_port
from tests.support import join as join_line

pytestmark = pytest.mark.timeout(60)


async def started_session(
    port: int,
    nick: str,
    on_line: Callable[[str], None],
    on_status: Callable[[Status], None],
    **options: Any,
) -> Session:
    """Join 127.0.0.1:``port`` as ``nick`` and run a session on that first connection."""
    first = await join(Endpoint("127.0.0.1", port), nick)
    assert isinstance(first, Connection)
    session = Session(
        Endpoint("127.0.0.1", port), nick, first, on_line=on_line, on_status=on_status, **options
    )
    session.start()
    return session


def echoed_after_reconnects(port: int, text: str, **options: Any) -> list[str]:
    """As alice: send ``text``, wait (bounded) for its echo across reconnects and leave, with
    nothing left unconfirmed; the texts of the status notices."""
    statuses: list[Status] = []
    lines: list[str] = []

    async def scenario() -> None:
        session = await started_session(
            port, "alice", lines.append, statuses.append, backoff=Backoff(first=0.1), **options
        )
        await session.send(text)
        async with asyncio.timeout(15):
            while f"alice: {text}" not in lines:
                await asyncio.sleep(0.02)
        unsent = await session.close(timeout=1.0)
        assert unsent.unconfirmed == []

    asyncio.run(scenario())
    return [status.text for status in statuses]


def test_backoff_doubles_up_to_a_cap_with_bounded_jitter() -> None:
    backoff = Backoff(first=0.5, cap=15.0, jitter=0.2)
    middle = [backoff.delay(n, lambda: 0.5) for n in range(8)]
    assert middle == [0.5, 1.0, 2.0, 4.0, 8.0, 15.0, 15.0, 15.0]
    assert backoff.delay(3, lambda: 0.0) == pytest.approx(3.2)
    assert backoff.delay(3, lambda: 1.0) == pytest.approx(4.8)
    assert backoff.delay(10_000, lambda: 0.5) == 15.0


@pytest.mark.parametrize(
    ("nick", "problem"),
    [
        ("alice", None),
        ("user1 pc", None),
        ("", "empty"),
        ("  ", "empty"),
        ("a\nb", "control"),
        ("/cap ids", "start with '/'"),  # would be read as the /cap line, not a nickname
        (" /capfoo", "start with '/'"),
    ],
)
def test_nick_problem_only_guards_the_framing(nick: str, problem: str | None) -> None:
    found = nick_problem(nick)
    assert (found is None) if problem is None else (problem in (found or ""))


def test_join_and_refusal(daemon: Daemon) -> None:
    async def scenario() -> None:
        first = await join(Endpoint("127.0.0.1", daemon.port), "alice")
        assert isinstance(first, Connection)
        lines: list[str] = []
        while len(lines) < 2:
            more = await first.read(5)
            assert more is not None
            lines += [event.text for event in more]
        assert lines == ["alice Bergabung!", "Terkoneksi dengan Server!"]
        again = await join(Endpoint("127.0.0.1", daemon.port), "ALICE")
        assert again == Refused("*** Nickname ditolak: ALICE sudah dipakai")
        await first.close()

    asyncio.run(scenario())


def test_join_connection_refused() -> None:
    port = free_port()

    async def scenario() -> None:
        with pytest.raises(ConnectError) as raised:
            await join(Endpoint("127.0.0.1", port), "alice")
        assert str(raised.value) == f"cannot connect to 127.0.0.1:{port}: Connection refused"

    asyncio.run(scenario())


def test_join_server_full(tmp_path: Path) -> None:
    config = tmp_path / "full.toml"
    config.write_text("[server]\nmax_clients = 1\n")
    with Daemon("--config", str(config)) as daemon:
        holder = join_line(daemon.port, "holder")

        async def scenario() -> None:
            with pytest.raises(ConnectError) as raised:
                await join(Endpoint("127.0.0.1", daemon.port), "alice")
            assert "*** Server penuh (1 klien)" in str(raised.value)
            assert not raised.value.final

        try:
            asyncio.run(scenario())
        finally:
            holder.close()


def test_join_something_that_is_not_lanchat() -> None:
    peer = ScriptedPeer(lambda conn: conn.sendall(b"HTTP/1.0 400 Bad Request\r\n\r\n"))

    async def scenario() -> None:
        with pytest.raises(ConnectError, match="does not speak the lanchat protocol"):
            await join(Endpoint("127.0.0.1", peer.port), "alice")

    try:
        asyncio.run(scenario())
    finally:
        peer.close()


def test_a_ban_is_final() -> None:
    line = Catalog("en")("banned_you", reason="spam")
    assert refusal_key(line) in REMOVALS
    peer = ScriptedPeer(lambda conn: conn.sendall(line.encode() + b"\n"))

    async def scenario() -> None:
        with pytest.raises(ConnectError) as raised:
            await join(Endpoint("127.0.0.1", peer.port), "alice")
        assert raised.value.final
        assert line in str(raised.value)

    try:
        asyncio.run(scenario())
    finally:
        peer.close()


def test_kicked_client_does_not_come_back() -> None:
    kick = Catalog("id")("kicked_you", reason="spam")

    def kicker(conn: socket.socket) -> None:
        conn.sendall(b"NICK")
        conn.recv(100)
        conn.sendall(f"alice Bergabung!\nTerkoneksi dengan Server!\n{kick}\n".encode())

    peer = ScriptedPeer(kicker)
    statuses: list[Status] = []
    lines: list[str] = []

    async def scenario() -> None:
        session = await started_session(peer.port, "alice", lines.append, statuses.append)
        async with asyncio.timeout(10):
            await session.wait_done()
        assert session.failed is not None
        assert "not reconnecting" in session.failed

    try:
        asyncio.run(scenario())
    finally:
        peer.close()
    assert peer.accepted == 1
    assert lines[-1] == kick
    assert statuses[-1].level == "error"


def test_sync_confirms_every_line_and_stays_invisible(daemon: Daemon) -> None:
    bob = join_line(daemon.port, "bob")
    lines: list[str] = []

    async def scenario() -> None:
        session = await started_session(daemon.port, "user1 pc", lines.append, print)
        for number in range(30):
            await session.send(f"message {number}")
        async with asyncio.timeout(20):
            assert await session.sync()
        # Confirmed means echoed: every line is already back, in order, before sync returns.
        assert [x for x in lines if x.startswith("user1 pc: ")] == [
            f"user1 pc: message {n}" for n in range(30)
        ]
        unsent = await session.close()
        assert unsent.held == []
        assert unsent.unconfirmed == []

    try:
        asyncio.run(scenario())
        seen = bob.expect("user1 pc Keluar!")
    finally:
        bob.close()
    assert [x for x in seen if x.startswith("user1 pc: ")] == [
        f"user1 pc: message {n}" for n in range(30)
    ]
    assert not any("lanchat-sync" in line for line in (*lines, *seen))


def test_a_line_lost_with_a_silent_connection_is_sent_again() -> None:
    """The first connection swallows a line and goes silent (a dead network path): no echo
    within the echo timeout, so the client reconnects and sends the line again."""
    received: list[list[str]] = []
    hang = threading.Event()

    def server(conn: socket.socket) -> None:
        conn.sendall(b"NICK")
        conn.recv(100)
        conn.sendall(b"alice Bergabung!\nTerkoneksi dengan Server!\n")
        mine: list[str] = []
        received.append(mine)
        buffer = b""
        while b"\n" not in buffer:
            buffer += conn.recv(1000)
        mine.append(buffer.decode().strip())
        if len(received) == 1:
            hang.wait(30)  # swallow it and say nothing
            return
        conn.sendall(f"alice: {mine[0]}\n".encode())
        conn.recv(100)

    peer = ScriptedPeer(server)
    try:
        texts = echoed_after_reconnects(peer.port, "do not lose me", echo_timeout=1.0)
    finally:
        hang.set()
        peer.close()
    assert received[:2] == [["do not lose me"], ["do not lose me"]]
    assert any("no answer" in text for text in texts)
    assert any("sent again 1 message whose delivery was not confirmed" in text for text in texts)


def test_a_line_the_server_shows_escaped_is_still_confirmed(daemon: Daemon) -> None:
    """The server escapes control and invisible characters in what it relays; the echo of
    such a line must still confirm it, or the client would report it lost (or send it again)."""
    lines: list[str] = []

    async def scenario() -> None:
        session = await started_session(daemon.port, "alice", lines.append, print)
        await session.send("clear\x1b[2J \u202eevil\u200b")
        async with asyncio.timeout(10):
            while "alice: clear^[[2J <U+202E>evil<U+200B>" not in lines:
                await asyncio.sleep(0.02)
        unsent = await session.close(timeout=2.0)
        assert unsent.unconfirmed == []

    asyncio.run(scenario())


class TaggedWire:
    """The server's side of one scripted connection that negotiated ids: the lines the
    client sent are kept in ``received``; what it is sent is tagged as the daemon tags it."""

    def __init__(self, conn: socket.socket) -> None:
        self.conn = conn
        self.received: list[str] = []
        self._buffer = b""

    def line(self) -> str:
        while b"\n" not in self._buffer:
            chunk = self.conn.recv(1000)
            if not chunk:
                raise ConnectionError("closed")
            self._buffer += chunk
        text, _, self._buffer = self._buffer.partition(b"\n")
        self.received.append(text.decode())
        return self.received[-1]

    def send(self, text: str, message_id: MessageId | None = None) -> None:
        self.conn.sendall((format_tags(event_tags(message_id, 0.0)) + text + "\n").encode())


def test_a_connection_lost_before_the_replay_ends_resends_on_the_next_one_once() -> None:
    """After a reconnect the line that may not have arrived waits for the answer to the
    private probe (the end of the replay). The second connection dies before answering: the
    line is not sent there, and goes out once on the third, after its probe is answered."""
    wires: list[TaggedWire] = []

    def server(conn: socket.socket) -> None:
        wire = TaggedWire(conn)
        wires.append(wire)
        number = len(wires)
        conn.sendall(b"NICK")
        wire.line(), wire.line()  # /cap ids [after=...], the nickname
        wire.send("alice Bergabung!", MessageId(number, 0))
        wire.send("Terkoneksi dengan Server!")
        first = wire.line()
        if number < 3:
            return  # gone without a word: no echo (1), no answer to the probe (2)
        wire.send(f"*alice* {first.split()[-1]}")
        wire.send(f"alice: {wire.line()}", MessageId(number, 1))
        conn.recv(100)

    peer = ScriptedPeer(server)
    try:
        texts = echoed_after_reconnects(peer.port, "x")
    finally:
        peer.close()
    first, second, third = (wire.received for wire in wires)
    assert first == ["/cap ids", "alice", "x"]
    assert second[:2] == ["/cap ids after=1-0", "alice"]
    assert third[:2] == ["/cap ids after=2-0", "alice"]
    assert second[2].startswith("/msg alice lanchat-sync-")
    assert third[2].startswith("/msg alice lanchat-sync-")
    assert second[3:] == []
    assert third[3:] == ["x"]
    assert sum("sent again 1 message whose delivery" in text for text in texts) == 1
