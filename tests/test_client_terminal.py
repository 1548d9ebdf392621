"""The interactive client in a pseudo-terminal, against the real daemon (pexpect)."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pexpect
import pytest

from lanchatd.client.render import nick_color
from tests.client_helpers import Clients, joined, quit_client, screen_text
from tests.support import Daemon, free_port, wait_until

pytestmark = pytest.mark.timeout(90)


def test_two_people_chat(daemon: Daemon, terminals: Clients) -> None:
    bob = terminals.user(daemon.port, "bob")
    alice = terminals.spawn(daemon.port, "--nick", "alice")
    joined(alice)
    bob.expect("alice Bergabung!")
    alice.sendline("hello bob")
    bob.expect("alice: hello bob")
    alice.expect_exact("alice: hello bob")
    bob.send("hi alice")
    alice.expect_exact("bob: hi alice")
    bob.send("/me waves")
    alice.expect_exact("* bob waves")
    alice.sendline("/help")
    alice.expect_exact("*** Perintah: /who, /me AKSI")
    alice.sendline("/quit")
    alice.expect(pexpect.EOF)
    alice.close()
    assert alice.exitstatus == 0
    bob.expect("alice Keluar!")
    assert "Traceback" not in screen_text(alice)


def test_half_typed_line_survives_incoming_messages(daemon: Daemon, terminals: Clients) -> None:
    bob = terminals.user(daemon.port, "bob")
    alice = terminals.spawn(daemon.port, "--nick", "alice")
    joined(alice)
    alice.send("half way")
    alice.expect_exact("way")  # typed keys may be drawn in pieces; the end is enough
    for number in range(3):
        bob.send(f"interruption {number}")
        alice.expect_exact(f"bob: interruption {number}")
        alice.expect_exact("half way")  # the prompt is drawn again, with the text kept
    alice.send(" there\r")
    bob.expect("alice: half way there")


def test_fast_typing_and_pasted_lines_all_arrive_in_order(
    daemon: Daemon, terminals: Clients
) -> None:
    bob = terminals.user(daemon.port, "bob")
    alice = terminals.spawn(daemon.port, "--nick", "alice")
    joined(alice)
    alice.send("one\rtwo\rthree\r")  # typed ahead, faster than any round trip
    alice.send("\x1b[200~four\nfive\x1b[201~\r")  # a bracketed paste of two lines
    seen = [*bob.expect("alice: five"), "alice: five"]
    assert [x for x in seen if x.startswith("alice: ")] == [
        f"alice: {word}" for word in ("one", "two", "three", "four", "five")
    ]
    alice.sendcontrol("d")
    alice.expect(pexpect.EOF)


def test_escape_sequences_from_others_are_shown_harmlessly(
    daemon: Daemon, terminals: Clients
) -> None:
    bob = terminals.user(daemon.port, "bob")
    alice = terminals.spawn(daemon.port, "--nick", "alice")
    joined(alice)
    evil = "\x1b[2J\x1b]2;PWNED\x07 \x9b31mred \u202edesrever\u202c \x1b[H\x08\x7f"
    bob.send(evil)
    alice.expect_exact("bob: ^[[2J^[]2;PWNED^G <U+009B>31mred <U+202E>desrever<U+202C> ^[[H^H^?")
    screen = screen_text(alice)
    for raw in ("\x1b[2J", "\x1b]2;", "\x07", "\x9b", "\u202e", "\x1b[H"):
        assert raw not in screen


def test_nick_colours_and_no_color(daemon: Daemon, terminals: Clients) -> None:
    bob = terminals.user(daemon.port, "bob")
    coloured = terminals.spawn(daemon.port, "--nick", "alice", color=True)
    plain = terminals.spawn(daemon.port, "--nick", "carol")
    joined(coloured)
    joined(plain)
    bob.send("colours?")
    coloured.expect_exact(f"\x1b[1;{nick_color('bob')}mbob\x1b[0m: colours?")
    plain.expect_exact("bob: colours?")
    any_colour = re.compile(r"\x1b\[(?:[0-9;]*;)?(?:3[0-9]|4[0-9]|9[0-7]|10[0-7])(?:;[0-9;]*)?m")
    assert not any_colour.search(screen_text(plain))


def test_taken_nickname_shows_the_reason_and_asks_again(daemon: Daemon, terminals: Clients) -> None:
    bob = terminals.user(daemon.port, "bob")
    alice = terminals.spawn(daemon.port, "--nick", "BOB")
    alice.expect_exact("*** Nickname ditolak: BOB sudah dipakai")
    alice.expect_exact("Username:")
    alice.sendline("bad:name")
    alice.expect_exact("*** Nickname ditolak: ':' tidak diizinkan")
    alice.expect_exact("Username:")
    alice.sendline("alice")
    joined(alice)
    bob.expect("alice Bergabung!")


def test_asks_for_a_username_without_nick(daemon: Daemon, terminals: Clients) -> None:
    bob = terminals.user(daemon.port, "bob")
    carol = terminals.spawn(daemon.port)
    carol.expect_exact("Username:")
    carol.sendline("   ")  # blank: asked again, nothing sent
    carol.expect_exact("Username:")
    carol.sendline("carol")
    joined(carol)
    bob.expect("carol Bergabung!")
    assert quit_client(carol) == 0


def test_pasted_invalid_utf8_is_sent_replaced_and_loses_nothing(
    daemon: Daemon, terminals: Clients
) -> None:
    bob = terminals.user(daemon.port, "bob")
    alice = terminals.spawn(daemon.port, "--nick", "alice")
    joined(alice)
    os.write(alice.child_fd, b"caf\xe9 \xff\xfe ok\r")  # Latin-1 and stray bytes
    alice.send("after\r")
    seen = [*bob.expect("alice: after"), "alice: after"]
    assert [line for line in seen if line.startswith("alice: ")] == [
        "alice: caf\ufffd \ufffd\ufffd ok",
        "alice: after",
    ]
    alice.expect_exact("alice: after")
    alice.send("/quit\r")
    alice.expect(pexpect.EOF)
    alice.close()
    assert alice.exitstatus == 0
    bob.expect("alice Keluar!")
    assert "error" not in screen_text(alice)


def test_no_server_is_said_before_asking_a_name(terminals: Clients) -> None:
    port = free_port()
    child = terminals.spawn(port)
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 1
    lines = [line for line in screen_text(child).splitlines() if line.strip()]
    assert lines == [f"lanchat: error: cannot connect to 127.0.0.1:{port}: Connection refused"]


def test_the_client_speaks_indonesian_under_an_indonesian_locale(
    daemon: Daemon, terminals: Clients
) -> None:
    port = free_port()
    nobody = terminals.spawn(port, lang="id_ID.UTF-8")
    nobody.expect(pexpect.EOF)
    assert f"lanchat: galat: tidak dapat terhubung ke 127.0.0.1:{port}: " in screen_text(nobody)
    siti = terminals.spawn(daemon.port, lang="id_ID.UTF-8")
    siti.expect_exact("Nama pengguna:")
    siti.sendline("siti")
    siti.expect_exact(f"terhubung ke 127.0.0.1:{daemon.port} sebagai siti")
    siti.expect_exact("/help menampilkan daftar perintah")
    joined(siti)
    assert quit_client(siti) == 0
    screen = screen_text(siti)
    for english in ("Username", "connected to", "lists the commands"):
        assert english not in screen


def test_the_name_goes_on_the_connection_made_before_asking(
    daemon: Daemon, terminals: Clients
) -> None:
    carol = terminals.spawn(daemon.port)
    carol.expect_exact("Username:")
    carol.sendline("carol")
    joined(carol)
    connected = [line for line in daemon.stderr if '"client_connected"' in line]
    assert len(connected) == 1


def test_a_slow_answer_still_joins_after_the_server_gave_up_waiting(
    tmp_path: Path, terminals: Clients
) -> None:
    config = tmp_path / "lanchatd.toml"
    config.write_text("[server]\nhandshake_timeout = 0.5\n")
    with Daemon("--config", str(config)) as daemon:
        carol = terminals.spawn(daemon.port)
        carol.expect_exact("Username:")
        wait_until(lambda: any('"nick_rejected"' in line for line in daemon.stderr))
        carol.sendline("carol")
        joined(carol)
        assert quit_client(carol) == 0


@pytest.mark.parametrize("key", ["c", "d"])
def test_ctrl_c_and_ctrl_d_leave_cleanly(daemon: Daemon, terminals: Clients, key: str) -> None:
    bob = terminals.user(daemon.port, "bob")
    alice = terminals.spawn(daemon.port, "--nick", "alice")
    joined(alice)
    alice.sendcontrol(key)
    alice.expect(pexpect.EOF)
    alice.close()
    assert alice.exitstatus == 0
    bob.expect("alice Keluar!")
    assert "Traceback" not in screen_text(alice)


def test_reconnects_across_a_daemon_restart(daemon: Daemon, terminals: Clients) -> None:
    alice = terminals.spawn(daemon.port, "--nick", "alice")
    joined(alice)
    daemon.stop()
    alice.expect_exact("*** Server dimatikan")
    alice.expect_exact("lost; reconnecting")
    alice.sendline("typed while away")
    alice.expect_exact("will be sent after reconnecting: typed while away")
    daemon.start()  # the same port as before
    alice.expect_exact("reconnected to", timeout=30)
    alice.expect_exact("alice Bergabung!")
    alice.expect_exact("alice: typed while away")  # the server's echo: it was delivered
    bob = terminals.user(daemon.port, "bob")
    alice.expect_exact("bob Bergabung!")
    alice.sendline("back again")
    bob.expect("alice: back again")
    assert quit_client(alice) == 0


def test_unsent_messages_are_reported_on_leaving(daemon: Daemon, terminals: Clients) -> None:
    alice = terminals.spawn(daemon.port, "--nick", "alice")
    joined(alice)
    daemon.stop()
    alice.expect_exact("lost; reconnecting")
    alice.sendline("nobody will read this")
    alice.expect_exact("will be sent after reconnecting")
    alice.sendline("/quit")
    alice.expect_exact("NOT sent: nobody will read this")
    alice.expect(pexpect.EOF)
    alice.close()
    assert alice.exitstatus == 0


def test_connection_refused_is_one_line_and_fails(terminals: Clients) -> None:
    port = free_port()
    child = terminals.spawn(port, "--nick", "alice")
    child.expect(pexpect.EOF)
    child.close()
    assert child.exitstatus == 1
    lines = [line for line in screen_text(child).splitlines() if line.strip()]
    assert lines == [f"lanchat: error: cannot connect to 127.0.0.1:{port}: Connection refused"]


def test_a_kicked_user_is_told_and_does_not_come_back(daemon: Daemon, terminals: Clients) -> None:
    pytest.importorskip("lanchatctl")
    alice = terminals.spawn(daemon.port, "--nick", "alice")
    joined(alice)
    admin = [sys.executable, "-m", "lanchatctl", "--socket", daemon.admin_socket]
    kick = subprocess.run(
        [*admin, "kick", "alice", "--reason", "spam"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert kick.returncode == 0, kick.stderr
    alice.expect_exact("*** Anda dikeluarkan oleh administrator: spam")
    alice.expect_exact("not reconnecting")
    alice.expect(pexpect.EOF)
    alice.close()
    assert alice.exitstatus == 1
    joins = [line for line in daemon.stderr if '"client_joined"' in line and '"alice"' in line]
    assert len(joins) == 1


def test_history_on_join_is_marked_with_its_time_and_ends_with_one_separator(
    start_daemon: Callable[..., Daemon], terminals: Clients
) -> None:
    server = start_daemon("--history-on-join", "5")
    bob = terminals.user(server.port, "bob")
    bob.send("said before alice came")
    bob.expect("bob: said before alice came")
    alice = terminals.spawn(server.port, "--nick", "alice")
    joined(alice)
    alice.expect_exact("--- end of history; live from here ---")
    bob.send("live now")
    alice.expect_exact("bob: live now")
    assert quit_client(alice) == 0
    screen = screen_text(alice)
    history = re.findall(r"\[\d\d:\d\d history\] (.*?)\r?\n", screen)
    assert history == ["--> bob Bergabung!", "bob: said before alice came"]
    assert screen.count("--- end of history") == 1
    assert "*** Riwayat" not in screen  # the server's own frame is for untagged clients
