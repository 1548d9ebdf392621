"""Display safety end to end: what others wrote never acts on anyone's terminal.

The real daemon, raw line-mode and classic (tutorial) sockets, the real lanchatctl; and a
fake daemon at the admin socket, since lanchatctl must not trust whatever answers there.
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support import WAIT, Daemon, TutorialClient, lanchatctl
from tests.web_helpers import WebClient, web_join

#: What a hostile user sends, and how everyone else must see it.
ATTACKS = [
    ("fake\rncvictim: hi", "fake^Mncvictim: hi"),  # CR: the rest overwrites the line
    ("\x1b[2J*** Server notice: x", "^[[2J*** Server notice: x"),  # clear screen, forge
    ("\x1b]52;c;cm0gLXJmIH4vKg==\x07", "^[]52;c;cm0gLXJmIH4vKg==^G"),  # OSC 52: clipboard
    ("\x1b]0;pwned\x07", "^[]0;pwned^G"),  # OSC 0: window title
    ("ding\x07", "ding^G"),
    ("nul\x00x", "nul^@x"),
    ("c1\u009b31m", "c1<U+009B>31m"),  # a one-character CSI
    ("\u202eevil", "<U+202E>evil"),  # right-to-left override
    ("zero\u200bwidth", "zero<U+200B>width"),
]


def test_chat_me_and_msg_arrive_escaped_in_line_and_classic_mode(
    admin_daemon: Daemon, admin_clients: list
) -> None:
    nc = admin_daemon.chat("nc")
    tut = TutorialClient(admin_daemon.port, "tut")
    admin_clients += [nc, tut]
    tut.until("Terkoneksi dengan Server!")
    nc.expect_start("tut Bergabung!")
    mallory = admin_daemon.chat("mallory")
    admin_clients.append(mallory)
    nc.expect_start("mallory Bergabung!")

    for raw, _ in ATTACKS:
        mallory.send(raw)
    mallory.send("/me \x1b]0;title\x07waves\u202e")
    mallory.send("/msg nc \x1b[2Jpsst\u200b")
    mallory.send("/msg tut \x1b[2Jpsst\u2066")
    mallory.send("done")

    expected = [f"mallory: {shown}" for _, shown in ATTACKS]
    expected += ["* mallory ^[]0;title^Gwaves<U+202E>", "*mallory* ^[[2Jpsst<U+200B>"]
    assert [nc.line() for _ in expected] == expected
    assert nc.line() == "mallory: done"
    seen = tut.until("mallory: done")
    for line in [*expected[:-1], "*mallory* ^[[2Jpsst<U+2066>"]:
        assert line in seen


def test_kick_ban_and_notice_texts_arrive_escaped(
    admin_daemon: Daemon, admin_clients: list
) -> None:
    nc = admin_daemon.chat("nc")
    tut = TutorialClient(admin_daemon.port, "tut")
    tut.until("Terkoneksi dengan Server!")
    victim = admin_daemon.chat("victim")
    banned = admin_daemon.chat("banned", source="127.0.0.2")
    admin_clients += [nc, tut, victim, banned]
    nc.expect_start("banned Bergabung!")

    # The admin socket refuses control characters in these texts; the rest is escaped.
    kick = admin_daemon.ctl("kick", "victim", "--reason", "bye\u202eevil\u200b")
    assert kick.returncode == 0, kick.stderr
    ban = admin_daemon.ctl("ban", "banned", "--reason", "\u2066x\u3164")
    assert ban.returncode == 0, ban.stderr
    notice = admin_daemon.ctl("broadcast", "red\u200b\ufeff")
    assert notice.returncode == 0, notice.stderr

    assert (
        victim.expect_start("*** Anda")
        == "*** Anda dikeluarkan oleh administrator: bye<U+202E>evil<U+200B>"
    )
    assert banned.expect_start("*** Anda") == "*** Anda diblokir dari server ini: <U+2066>x<U+3164>"
    shown = [
        "*** victim dikeluarkan oleh administrator: bye<U+202E>evil<U+200B>",
        "*** banned diblokir oleh administrator: <U+2066>x<U+3164>",
        "*** Pengumuman server: red<U+200B><U+FEFF>",
    ]
    for line in shown:
        assert nc.expect_start("***") == line
    seen = tut.until(shown[-1])
    for line in shown:
        assert line in seen
    assert "\u202e" not in kick.stdout


def test_classic_clients_receive_only_ascii(admin_daemon: Daemon, admin_clients: list) -> None:
    tut = TutorialClient(admin_daemon.port, "tut")
    admin_clients.append(tut)
    tut.until("Terkoneksi dengan Server!")
    jose = admin_daemon.chat("José")
    admin_clients.append(jose)
    jose.send("café ☕")
    assert jose.expect_start("José: ") == "José: café ☕"  # line mode keeps UTF-8 as it is
    result = admin_daemon.ctl("broadcast", "Kantin tutup — 10 menit lagi…")
    assert result.returncode == 0, result.stderr
    copycat = TutorialClient(admin_daemon.port, "JOSÉ")
    admin_clients.append(copycat)

    seen = tut.until("*** Pengumuman server: Kantin tutup - 10 menit lagi...")
    assert seen.endswith(
        "Jose Bergabung!Jose: cafe ?*** Pengumuman server: Kantin tutup - 10 menit lagi..."
    )
    assert copycat.until("dipakai") == "*** Nickname ditolak: JOSE sudah dipakai"
    tut.sock.sendall(b"tut: still here")
    assert jose.expect_start("tut: ") == "tut: still here"


# Look-alike nicknames --------------------------------------------------------------------------

LOOKALIKE = "*** Nickname ditolak: {} terlihat sama dengan nickname yang sudah ada"
INVISIBLE = "*** Nickname ditolak: karakter tak terlihat atau format tidak diizinkan"
PUNCTUATION = (
    "*** Nickname ditolak: ',' dan '!' tidak diizinkan (terbaca sebagai daftar atau baris server)"
)
REFUSED_BESIDE_ALICE = [
    ("\u0430lice", LOOKALIKE.format("\u0430lice")),  # Cyrillic a
    ("\uff41\uff4c\uff49\uff43\uff45", LOOKALIKE.format("\uff41\uff4c\uff49\uff43\uff45")),
    ("\U0001d41a\U0001d425ice", LOOKALIKE.format("\U0001d41a\U0001d425ice")),  # bold a, l
    ("ALICE", "*** Nickname ditolak: ALICE sudah dipakai"),
    ("alice\u034f", INVISIBLE),
    ("alice\ufe0f", INVISIBLE),
    ("alice\u3164", INVISIBLE),
    ("\u3164", INVISIBLE),
    ("bob, carol, dave", PUNCTUATION),
    ("alice Bergabung! bob", PUNCTUATION),
]


def test_look_alike_and_invisible_nicknames_are_refused_and_kick_hits_only_alice(
    admin_daemon: Daemon, admin_clients: list
) -> None:
    alice = admin_daemon.chat("alice")
    admin_clients.append(alice)
    for nick, line in REFUSED_BESIDE_ALICE:
        refused = admin_daemon.chat(nick, join=False)
        admin_clients.append(refused)
        assert refused.rest_until_closed() == [line], nick
    classic = TutorialClient(admin_daemon.port, "\u0430lice")
    admin_clients.append(classic)
    assert classic.until("ada") == LOOKALIKE.format("?lice")
    jose = admin_daemon.chat("José")
    spaced = admin_daemon.chat("user1 pc")
    admin_clients += [jose, spaced]

    def online() -> list[str]:
        result = admin_daemon.ctl("who", "--json")
        assert result.returncode == 0, result.stderr
        return [client["nick"] for client in json.loads(result.stdout)]

    assert online() == ["alice", "José", "user1 pc"]
    assert admin_daemon.ctl("kick", "alice").returncode == 0
    assert alice.expect_start("*** Anda").startswith("*** Anda dikeluarkan oleh administrator")
    assert online() == ["José", "user1 pc"]


def test_history_pages_and_lanchatctl_history_show_the_same_escapes(
    start_daemon: Any, clients: list
) -> None:
    """What was said before someone came, or from a web page, is escaped like live chat: in
    the on-join history, /history, a page's replay and lanchatctl history."""
    server = start_daemon("--history-on-join", "20")
    mallory = server.chat("mallory")
    page = web_join(server.web_port, "phone")
    clients += [mallory, page.sock]
    said = [f"mallory: {HOSTILE_SHOWN}", f"phone: {HOSTILE_SHOWN}"]
    mallory.expect("phone Bergabung!")
    mallory.send(HOSTILE)
    mallory.expect(said[0])
    page.send(HOSTILE)
    mallory.expect(said[1])

    newcomer = server.chat("newcomer")  # has read its join line and the welcome
    clients.append(newcomer)
    replayed = newcomer.expect("*** Akhir riwayat")
    newcomer.send("/history 5")
    asked = newcomer.expect("*** Akhir riwayat")
    for block in (replayed, asked):
        entries = [line.split("] ", 1)[1] for line in block[1:]]  # after "*** [HH:MM] "
        assert [entry for entry in entries if entry.startswith(("mallory:", "phone:"))] == said

    late = WebClient(server.web_port, "late")
    clients.append(late.sock)
    assert late.text() == "late Bergabung!"
    mallory.send("done")
    frames = []
    while (frame := late.tagged())[1] != "mallory: done":
        frames.append(frame)
    replay = [text for tags, text in frames if "history" in tags]
    assert [text for text in replay if text.startswith(("mallory:", "phone:"))] == said

    history = server.ctl("history", "-n", "10")
    assert history.returncode == 0, history.stderr
    assert history.stdout.count(HOSTILE_SHOWN) == 2
    outputs = [*replayed, *asked, *(text for _, text in frames), history.stdout]
    for output in outputs:
        assert not set(output) & {"\x1b", "\x07", "\u202e", "\u200b"}, output


# lanchatctl against a fake daemon -----------------------------------------------------------

HOSTILE = "\x1b]0;pwned\x07\x1b[2J\u202eevil\u200b"
HOSTILE_SHOWN = "^[]0;pwned^G^[[2J<U+202E>evil<U+200B>"
#: The numbers ``lanchatctl stats`` reads from the daemon's answer.
STATS_COUNTERS = (
    "uptime_s", "clients", "peak_clients", "web_clients", "messages_in", "messages_out",
    "bytes_in", "bytes_out", "slow_consumer_drops", "kicks", "bans", "log_events_lost",
)  # fmt: skip


@pytest.fixture
def fake_daemon(admin_workdir: Path) -> Iterator[tuple[Path, dict[str, Any]]]:
    """A Unix socket that speaks the admin protocol and answers with hostile fields."""
    path = admin_workdir / "fake.sock"
    answers: dict[str, Any] = {}
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(str(path))
    server.listen()
    server.settimeout(WAIT)

    stopping = threading.Event()

    def serve() -> None:
        while True:
            conn, _ = server.accept()
            if stopping.is_set():
                conn.close()
                return
            with conn, conn.makefile("rwb") as stream:
                hello = {"daemon": "lanchatd", "daemon_version": HOSTILE, "commands": [], "uid": 0}
                stream.write(json.dumps({"version": 1, "hello": hello}).encode() + b"\n")
                stream.flush()
                request = json.loads(stream.readline())
                reply = {"version": 1, "id": request["id"], **answers[request["command"]]}
                stream.write(json.dumps(reply).encode() + b"\n")
                for event in answers.get("events", []):
                    stream.write(json.dumps({"version": 1, "event": event}).encode() + b"\n")
                stream.flush()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    yield path, answers
    stopping.set()
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as wake:
        wake.connect(str(path))
    thread.join(WAIT)
    server.close()


def test_lanchatctl_shows_every_field_from_the_daemon_escaped(
    fake_daemon: tuple[Path, dict[str, Any]],
) -> None:
    path, answers = fake_daemon
    client = {
        "nick": HOSTILE,
        "host": HOSTILE,
        "port": HOSTILE,
        "mode": HOSTILE,
        "connected_at": HOSTILE,
        "idle_s": 0,
        "messages": HOSTILE,
        "node": HOSTILE,  # another node's name, as Redis holds it
    }
    answers["who"] = {"ok": True, "result": {"clients": [client]}}
    who = lanchatctl("--socket", str(path), "who")
    assert who.returncode == 0, who.stderr
    row = who.stdout.splitlines()[1].split()
    assert row[:5] == [HOSTILE_SHOWN] * 5
    assert row[-2:] == [HOSTILE_SHOWN] * 2

    counters = dict.fromkeys(STATS_COUNTERS, 0)
    node = {"node": HOSTILE, "clients": 1}
    cluster = {"node": HOSTILE, "state": HOSTILE, "nodes": [node], "total_clients": 1}
    stats_answer = {**counters, "version": HOSTILE, "started_at": HOSTILE, "cluster": cluster}
    answers["stats"] = {"ok": True, "result": stats_answer}
    stats = lanchatctl("--socket", str(path), "stats")
    assert stats.returncode == 0, stats.stderr
    assert stats.stdout.splitlines()[-1].split() == [
        "cluster", "node", HOSTILE_SHOWN, f"{HOSTILE_SHOWN};", HOSTILE_SHOWN, "1", "clients;",
        "1", "in", "all",
    ]  # fmt: skip

    answers["kick"] = {"ok": False, "error": {"code": "no_such_nick", "message": HOSTILE}}
    kick = lanchatctl("--socket", str(path), "kick", "alice")
    assert (kick.returncode, kick.stderr) == (1, f"lanchatctl: error: {HOSTILE_SHOWN}\n")

    answers["watch"] = {"ok": True, "result": {}}
    answers["events"] = [
        {"type": "message", "time": HOSTILE, "nick": HOSTILE, "text": HOSTILE},
        {"type": HOSTILE, "time": "2026-01-01T00:00:00Z", "other": HOSTILE},
    ]
    watch = lanchatctl("--socket", str(path), "watch")
    assert watch.returncode == 3, watch.stderr
    assert watch.stdout.splitlines()[0] == (
        f"{HOSTILE_SHOWN} message {HOSTILE_SHOWN}: {HOSTILE_SHOWN}"
    )
    completion = lanchatctl(
        env={
            "_LANCHATCTL_COMPLETE": "bash_complete",
            "COMP_WORDS": f"lanchatctl --socket {path} kick ",
            "COMP_CWORD": "4",
        }
    )
    assert completion.stdout == f"plain,{HOSTILE_SHOWN}\n"

    outputs = (who.stdout, stats.stdout, kick.stderr, watch.stdout, watch.stderr, completion.stdout)
    for output in outputs:
        assert not set(output) & {"\x1b", "\x07", "\u202e", "\u200b"}, output
