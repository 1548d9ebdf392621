"""Bans: the store on real files, and end to end against real daemons and real clients."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import structlog

from lanchatd.daemon.bans import Ban, BanStore, normalize_address
from tests.support import Daemon, refused_connection, wait_until


def _store(path: Path) -> tuple[BanStore, list[dict]]:
    with structlog.testing.capture_logs() as logged:
        store = BanStore(path, structlog.get_logger())
        store.load()
    return store, logged


def _ban(address: str, **fields: object) -> Ban:
    return Ban(address, str(fields.get("reason", "")), time.time(), fields.get("expires_at"), 0)  # type: ignore[arg-type]


# The store ----------------------------------------------------------------------------------


def test_addresses_are_normalized() -> None:
    assert normalize_address("::ffff:192.0.2.1") == "192.0.2.1"
    assert normalize_address(" 2001:DB8:0::1 ") == "2001:db8::1"
    assert normalize_address("fe80::1%eth0") == "fe80::1"
    with pytest.raises(ValueError, match="does not appear to be an IPv4 or IPv6 address"):
        normalize_address("alice")


def test_saved_atomically_and_read_back(tmp_path: Path) -> None:
    path = tmp_path / "state" / "bans.json"
    store, _ = _store(path)
    assert store.add(_ban("192.0.2.1", reason="spam")) is None
    assert store.add(_ban("2001:db8::7", expires_at=time.time() + 3600)) is None
    assert sorted(p.name for p in path.parent.iterdir()) == ["bans.json"]  # no temporary left
    assert path.stat().st_mode & 0o777 == 0o600
    document = json.loads(path.read_text())
    assert document["version"] == 1
    assert [b["address"] for b in document["bans"]] == ["192.0.2.1", "2001:db8::7"]
    again, logged = _store(path)
    assert [b.address for b in again.list()] == ["192.0.2.1", "2001:db8::7"]
    assert again.match("::ffff:192.0.2.1").reason == "spam"
    assert logged[-1]["event"] == "bans_loaded"


def test_expired_bans_lapse(tmp_path: Path) -> None:
    path = tmp_path / "bans.json"
    store, _ = _store(path)
    store.add(_ban("192.0.2.1", expires_at=time.time() + 0.2))
    store.add(_ban("192.0.2.2", expires_at=time.time() - 1))
    assert [b.address for b in store.list()] == ["192.0.2.1"]
    assert store.match("192.0.2.1") is not None
    wait_until(lambda: store.match("192.0.2.1") is None, what="the ban to expire")
    assert store.list() == []
    assert len(store) == 0


def test_a_damaged_file_keeps_every_readable_ban(tmp_path: Path) -> None:
    path = tmp_path / "bans.json"
    store, _ = _store(path)
    for address in ("192.0.2.1", "192.0.2.2", "192.0.2.3"):
        store.add(_ban(address, reason=f"r{address[-1]}"))
    lines = path.read_text().splitlines()
    lines[2] = lines[2][:25] + "\x00garbage"  # the second ban is destroyed
    path.write_text("\n".join(lines[:-1]))  # and the end of the file is lost
    damaged = path.read_text()
    recovered, logged = _store(path)
    assert [b.address for b in recovered.list()] == ["192.0.2.1", "192.0.2.3"]
    corrupt = [e for e in logged if e["event"] == "bans_corrupt"]
    assert corrupt[0]["recovered"] == 2
    aside = Path(corrupt[0]["moved_to"])
    assert aside.read_text() == damaged  # kept for a human to look at
    assert aside.name.startswith("bans.json.corrupt-")
    clean = json.loads(path.read_text())  # and a clean file was written in its place
    assert [b["address"] for b in clean["bans"]] == ["192.0.2.1", "192.0.2.3"]


def test_an_unreadable_file_is_never_overwritten(tmp_path: Path) -> None:
    path = tmp_path / "bans.json"
    path.mkdir()  # reading it fails (EISDIR) for root as well as anyone
    (path / "precious").write_text("x")
    store, logged = _store(path)
    assert logged[0]["event"] == "bans_unreadable"
    with structlog.testing.capture_logs():
        error = store.add(_ban("192.0.2.1"))
    assert error is not None
    assert "cannot read" in error
    assert "not overwriting" in error
    assert store.match("192.0.2.1") is not None  # in force all the same
    assert (path / "precious").read_text() == "x"
    # Once the file can be read again, the next change merges it and saves everything.
    shutil.rmtree(path)
    path.write_text('{"version": 1, "bans": [\n{"address": "192.0.2.9", "reason": "old"}\n]}\n')
    with structlog.testing.capture_logs():
        assert store.add(_ban("192.0.2.2")) is None
    assert {b.address for b in store.list()} == {"192.0.2.9", "192.0.2.1", "192.0.2.2"}
    saved = {b["address"] for b in json.loads(path.read_text())["bans"]}
    assert saved == {"192.0.2.9", "192.0.2.1", "192.0.2.2"}


# End to end ---------------------------------------------------------------------------------


def test_ban_by_nick_disconnects_and_refuses_that_address(
    admin_daemon: Daemon, admin_clients: list
) -> None:
    alice = admin_daemon.chat("alice")
    mallory = admin_daemon.chat("mallory", source="127.0.0.2")
    other = admin_daemon.chat("mallory2", source="127.0.0.2")
    admin_clients += [alice, mallory, other]
    result = admin_daemon.ctl("ban", "mallory", "--reason", "spam")
    assert result.returncode == 0, result.stderr
    assert "127.0.0.2" in result.stdout
    assert mallory.rest_until_closed()[-1] == "*** Anda diblokir dari server ini: spam"
    assert other.rest_until_closed()[-1] == "*** Anda diblokir dari server ini: spam"
    alice.expect_start("*** mallory diblokir oleh administrator: spam")  # in join order
    assert [alice.line() for _ in range(3)] == [
        "mallory Keluar!",
        "*** mallory2 diblokir oleh administrator: spam",
        "mallory2 Keluar!",
    ]
    assert refused_connection(admin_daemon.port, "127.0.0.2") == (
        b"*** Anda diblokir dari server ini: spam\n"
    )
    assert admin_daemon.wait_event("client_refused", host="127.0.0.2", reason="banned")
    event = admin_daemon.wait_event("ban_added", address="127.0.0.2")
    assert event["admin_uid"] == 0
    assert sorted(event["disconnected"]) == ["mallory", "mallory2"]
    # Everyone else still chats.
    alice.send("still here")
    alice.expect_start("alice: still here")
    listed = json.loads(admin_daemon.ctl("bans", "--json").stdout)
    assert [(b["address"], b["reason"], b["expires_at"]) for b in listed] == [
        ("127.0.0.2", "spam", None)
    ]
    assert admin_daemon.ctl("unban", "127.0.0.2").returncode == 0
    assert admin_daemon.wait_event("ban_removed", address="127.0.0.2")
    back = admin_daemon.chat("mallory", source="127.0.0.2")
    admin_clients.append(back)


def test_a_ban_with_a_duration_lapses(admin_daemon: Daemon, admin_clients: list) -> None:
    result = admin_daemon.ctl("ban", "127.0.0.3", "--duration", "1s")
    assert result.returncode == 0, result.stderr
    refusal = refused_connection(admin_daemon.port, "127.0.0.3")
    assert refusal.startswith(b"*** Anda diblokir dari server ini sampai ")
    assert b" UTC: tanpa alasan\n" in refusal
    wait_until(
        lambda: refused_connection(admin_daemon.port, "127.0.0.3") == b"NICK",
        what="the ban to lapse",
    )
    assert json.loads(admin_daemon.ctl("bans", "--json").stdout) == []


def test_bans_survive_a_restart(admin_daemons, admin_clients: list) -> None:
    first = admin_daemons()
    assert first.ctl("ban", "127.0.0.4", "--reason", "flood").returncode == 0
    assert first.ctl("ban", "127.0.0.5", "--duration", "2h").returncode == 0
    assert first.stop() == 0
    second = admin_daemons()
    listed = json.loads(second.ctl("bans", "--json").stdout)
    assert [b["address"] for b in listed] == ["127.0.0.4", "127.0.0.5"]
    assert listed[0]["reason"] == "flood"
    assert listed[1]["expires_at"] is not None
    assert second.find("bans_loaded", count=2)
    assert refused_connection(second.port, "127.0.0.4") == (
        b"*** Anda diblokir dari server ini: flood\n"
    )


def test_a_corrupted_ban_file_loses_no_readable_ban(
    admin_daemons, admin_workdir: Path, admin_clients: list
) -> None:
    first = admin_daemons()
    for address in ("127.0.0.6", "127.0.0.7", "127.0.0.8"):
        assert first.ctl("ban", address, "--reason", f"r{address[-1]}").returncode == 0
    assert first.stop() == 0
    path = admin_workdir / "state" / "bans.json"
    lines = path.read_text().splitlines()
    path.write_text("\n".join([lines[0], lines[1], "{garbage", lines[3]]) + "\n")
    second = admin_daemons()
    event = second.wait_event("bans_corrupt")
    assert event["recovered"] == 2
    assert "garbage" in Path(event["moved_to"]).read_text()
    listed = json.loads(second.ctl("bans", "--json").stdout)
    assert [b["address"] for b in listed] == ["127.0.0.6", "127.0.0.8"]
    assert refused_connection(second.port, "127.0.0.6").startswith(b"*** ")
    # The file is whole again: a later change keeps both.
    assert second.ctl("ban", "127.0.0.9").returncode == 0
    saved = json.loads(path.read_text())["bans"]
    assert [b["address"] for b in saved] == ["127.0.0.6", "127.0.0.8", "127.0.0.9"]


def test_an_unwritable_ban_file_keeps_the_old_bans(
    admin_daemons, admin_workdir: Path, admin_clients: list
) -> None:
    if os.geteuid() != 0 or shutil.which("chattr") is None:
        pytest.skip("needs root and chattr to make a directory unwritable even for root")
    state = admin_workdir / "state"
    server = admin_daemons()
    assert server.ctl("ban", "127.0.0.10", "--reason", "old").returncode == 0
    before = (state / "bans.json").read_bytes()
    made = subprocess.run(["chattr", "+i", str(state)], capture_output=True, text=True, check=False)
    if made.returncode:
        pytest.skip(f"chattr +i is not supported here: {made.stderr.strip()}")
    try:
        result = server.ctl("ban", "127.0.0.11", "--reason", "new")
        assert result.returncode == 1
        assert "127.0.0.11 is banned now, but the ban was not saved" in result.stderr
        assert "Operation not permitted" in result.stderr
        assert result.stderr.count("\n") == 1
        # In force now all the same, and the old file is untouched.
        assert refused_connection(server.port, "127.0.0.11").startswith(b"*** ")
        assert (state / "bans.json").read_bytes() == before
        assert server.find("bans_save_failed")
    finally:
        subprocess.run(["chattr", "-i", str(state)], check=True)
    # No temporary left (lanchatd.lock is the state directory's lock, history.db* the room's
    # history).
    names = sorted(p.name for p in state.iterdir() if not p.name.startswith("history.db"))
    assert names == ["bans.json", "lanchatd.lock"]
    assert server.stop() == 0
    again = admin_daemons()
    listed = json.loads(again.ctl("bans", "--json").stdout)
    assert [b["address"] for b in listed] == ["127.0.0.10"]


def test_a_timed_ban_tells_members_and_newcomers_the_same_line(
    admin_daemon: Daemon, admin_clients: list
) -> None:
    mallory = admin_daemon.chat("mallory", source="127.0.0.6")
    admin_clients.append(mallory)
    result = admin_daemon.ctl("ban", "mallory", "--duration", "2h", "--reason", "flood")
    assert result.returncode == 0, result.stderr
    told = mallory.rest_until_closed()[-1]
    assert told.startswith("*** Anda diblokir dari server ini sampai ")
    assert told.endswith(" UTC: flood")
    assert refused_connection(admin_daemon.port, "127.0.0.6") == told.encode() + b"\n"
