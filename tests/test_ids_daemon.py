"""Message ids on the wire against the real daemon: ``/cap ids`` and resuming ``after=<id>``."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from pathlib import Path

from lanchatd.core.protocol import Line
from lanchatd.core.tags import MessageId
from tests.support import WAIT, Daemon, LineClient, TutorialClient, wait_until

#: Flood control off: the tests send hundreds of lines at once.
UNLIMITED = "[limits]\nrate = 0\n"


def tagged(port: int, nick: str, cap: str = "/cap ids") -> LineClient:
    """A raw line client that negotiated ids and has read its join and welcome lines."""
    client = LineClient(port)
    client.send_bytes(f"{cap}\n{nick}\n".encode())
    return client


def read(client: LineClient, until: str, timeout: float = WAIT) -> list[Line]:
    """Tagged lines up to and including the one whose text is ``until``."""
    lines = []
    while True:
        line = Line.tagged(client.line(timeout))
        lines.append(line)
        if line.text == until:
            return lines


def test_a_tagged_client_sees_ids_and_times_and_resumes_with_exactly_the_200_it_missed(
    start_daemon: Callable[..., Daemon],
) -> None:
    server = start_daemon("--lang", "en", config=UNLIMITED)
    alice = tagged(server.port, "alice")
    join, welcome = read(alice, "Connected to the server!")
    assert join.text == "alice joined!"
    assert join.id is not None
    assert join.time is not None
    assert welcome.id is None
    assert welcome.time is not None
    assert not welcome.history
    bob = tagged(server.port, "bob")
    read(bob, "Connected to the server!")
    (newest,) = read(alice, "bob joined!")
    alice.close()
    seen_by_bob = read(bob, "alice left!")  # before bob talks: the server's order is the room's
    missed = [f"line {n}" for n in range(200)]
    bob.send_bytes("".join(f"{text}\n" for text in missed).encode())
    seen_by_bob += read(bob, "bob: line 199")
    assert seen_by_bob[0].text == "alice left!"
    assert [line.text for line in seen_by_bob[1:]] == [f"bob: {text}" for text in missed]

    back = tagged(server.port, "alice", f"/cap ids after={newest.id}")
    rejoin, _ = read(back, "Connected to the server!")
    bob.send("now")
    replayed = read(back, "bob: now")
    live = replayed.pop()
    assert [(line.id, line.text) for line in replayed] == [
        (line.id, line.text) for line in seen_by_bob
    ]
    assert all(line.history for line in replayed)
    assert not live.history
    assert not rejoin.history
    ids = [line.id for line in [join, newest, *replayed, rejoin, live]]
    assert all(isinstance(i, MessageId) for i in ids)
    assert ids == sorted(ids, key=lambda i: (i.ms, i.seq))
    assert len(set(ids)) == len(ids)
    assert replayed[-1].id is not None
    assert rejoin.id is not None
    assert replayed[-1].id < rejoin.id


def test_ids_and_order_are_the_same_for_every_tagged_client(
    start_daemon: Callable[..., Daemon],
) -> None:
    server = start_daemon("--lang", "en", config=UNLIMITED)
    readers = [tagged(server.port, nick) for nick in ("r1", "r2", "r3")]
    for client in readers:
        client.expect_start("@time=")  # its own welcome
    senders = [server.chat(nick) for nick in ("s1", "s2")]

    def flood(client: LineClient, nick: str) -> None:
        client.send_bytes("".join(f"{nick} {n}\n" for n in range(100)).encode())
        client.send("done")

    threads = [
        threading.Thread(target=flood, args=(client, nick))
        for client, nick in zip(senders, ("s1", "s2"), strict=True)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(WAIT)
    seen = []
    for client in readers:
        lines: list[Line] = []
        while sum(line.text.endswith(": done") for line in lines) < 2:
            lines.append(Line.tagged(client.line()))
        seen.append([(line.id, line.text) for line in lines if line.text.startswith("s")])
    assert seen[0] == seen[1] == seen[2]
    chat = [entry for entry in seen[0] if ": s" in entry[1]]
    assert len(chat) == 200
    assert all(entry[0] is not None for entry in chat)


def test_a_resume_older_than_what_is_kept_gets_the_one_missed_line(
    start_daemon: Callable[..., Daemon], tmp_path: Path
) -> None:
    config = UNLIMITED + "[history]\nkeep = 5\n"
    server = start_daemon("--lang", "en", config=config, state_dir=tmp_path / "s")
    alice = tagged(server.port, "alice")
    join, _ = read(alice, "Connected to the server!")
    alice.close()
    bob = server.chat("bob")
    bob.send_bytes("".join(f"m{n}\n" for n in range(30)).encode())
    bob.expect("bob: m29")
    bob.close()
    assert server.stop() == 0
    server.start()

    def kept() -> int:
        return len(json.loads(server.ctl("history", "--json").stdout))

    wait_until(lambda: kept() <= 5, what="retention at start")
    back = tagged(server.port, "alice", f"/cap ids after={join.id}")
    lines = read(back, "Connected to the server!")
    lines.append(Line.tagged(back.line()))
    back.send("hi")
    lines += read(back, "alice: hi")
    missed = [line for line in lines if line.missed is not None]
    # The five kept are all after alice's id: at least that many were missed.
    assert [(line.missed, line.text) for line in missed] == [
        (5, "*** Missed at least 5 messages; they are no longer kept")
    ]
    assert not [line for line in lines if line.history]


def test_netcat_and_the_tutorial_client_see_no_tags_byte_for_byte(
    start_daemon: Callable[..., Daemon],
) -> None:
    server = start_daemon()
    ids_client = tagged(server.port, "zed")
    ids_client.expect_start("@time=")
    nc = LineClient(server.port, "nc")
    assert nc.lines(2) == ["nc Bergabung!", "Terkoneksi dengan Server!"]
    tutorial = TutorialClient(server.port, "tut")
    tutorial.until("Terkoneksi dengan Server!")
    tutorial.received = b""
    ids_client.send("halo")
    assert nc.lines(2) == ["tut Bergabung!", "zed: halo"]
    assert tutorial.until("zed: halo") == "zed: halo"
    assert [Line.tagged(line).text for line in ids_client.lines(3)] == [
        "nc Bergabung!",
        "tut Bergabung!",
        "zed: halo",
    ]


def test_hostile_cap_lines_get_clear_errors_and_nothing_crashes(
    start_daemon: Callable[..., Daemon],
) -> None:
    server = start_daemon("--lang", "en")
    garbage = tagged(server.port, "g1", "/cap ids after=12x-;=\x1b[2J")
    read(garbage, "Connected to the server!")
    error = Line.tagged(garbage.line())
    assert error.text.startswith("*** Not a message id: '12x-;=")
    assert error.time is not None

    repeated = LineClient(server.port)
    repeated.send_bytes(b"/cap ids\n/cap ids after=1-0\n/CAP x\ng2\n")
    assert [Line.tagged(line).text for line in repeated.lines(3)] == [
        "g2 joined!",
        "Connected to the server!",
        "*** /cap may only be sent once, as the first line",
    ]

    late = server.chat("g3")
    late.send("/cap ids")
    assert late.line() == "*** /cap must be the first line, before the nickname"

    huge = LineClient(server.port)
    huge.send_bytes(b"/cap ids after=" + b"9" * 100_000 + b"\ng4\n")
    assert huge.rest_until_closed()[0].endswith("*** Nickname rejected: at most 32 characters")

    unknown = tagged(server.port, "g5", "/cap frobnicate")
    assert unknown.lines(2) == ["g5 joined!", "Connected to the server!"]

    late.send("still here")
    assert unknown.line() == "g3: still here"
    assert server.process.poll() is None
    assert not server.find("connection_error")


def test_a_resume_bigger_than_the_send_buffer_gets_the_newest_after_one_line(
    start_daemon: Callable[..., Daemon], tmp_path: Path
) -> None:
    """A replay is queued at once; one past ``send_buffer_bytes`` would get the client dropped
    as a slow consumer. It is cut to its newest entries after a line counting the rest, and
    the client stays."""
    config = "[limits]\nrate = 0\n[server]\nsend_buffer_bytes = 8192\n"
    server = start_daemon("--lang", "en", config=config, state_dir=tmp_path / "s")
    alice = tagged(server.port, "alice")
    join, _ = read(alice, "Connected to the server!")
    alice.close()
    bob = server.chat("bob")
    bob.send_bytes("".join(f"m{n} {'x' * 40}\n" for n in range(300)).encode())
    bob.expect(f"bob: m299 {'x' * 40}")
    back = tagged(server.port, "alice", f"/cap ids after={join.id}")
    lines = read(back, "Connected to the server!")
    back.send("hi")
    lines += read(back, "alice: hi")
    assert lines[2].missed is not None
    assert not lines[2].history
    left_out = lines[2].missed
    assert lines[2].text == f"*** Missed too much to show it all: {left_out} older events left out"
    replayed = [line.text for line in lines[3:-1]]
    assert all(line.history for line in lines[3:-1])
    every = ["alice left!", "bob joined!", *(f"bob: m{n} {'x' * 40}" for n in range(300))]
    assert left_out > 0
    assert replayed == every[left_out:]
    assert len("".join(replayed)) < 4096
