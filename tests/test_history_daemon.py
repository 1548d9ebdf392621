"""History in the real daemon: what the room records, and that what clients received survives.

``history.db`` is read here with the standard library's sqlite3, as a separate process
would, after the daemon stopped (after a ``kill -9``, once a restart committed what the
log ``history.db-log`` kept).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import sqlite3
import struct
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.support import LANCHATD, WAIT, Daemon, LineClient, TutorialClient, wait_until

UNSHARE = ["unshare", "--mount", "--propagation", "private"]

Row = tuple[str, str, str, str]


def stored(state_dir: Path) -> list[Row]:
    """Every entry in the daemon's history file, oldest first: (kind, nick, text, reason)."""
    with contextlib.closing(sqlite3.connect(state_dir / "history.db")) as db:
        return db.execute(
            "SELECT kind, nick, text, reason FROM entries ORDER BY ms, seq"
        ).fetchall()


def test_every_event_the_room_sees_is_recorded_in_order_and_private_messages_never(
    start_daemon: Callable[..., Daemon], tmp_path: Path
) -> None:
    server = start_daemon("--lang", "en", state_dir=tmp_path / "state")
    alice = server.chat("alice")
    bob = server.chat("bob")
    carol = server.chat("carol", source="127.0.0.2")
    alice.send("hello")
    bob.expect("alice: hello")
    bob.send("/me waves")
    alice.expect("* bob waves")
    alice.send("/msg bob a secret")
    bob.expect("*alice* a secret")
    admin = server.admin()
    assert admin.request("broadcast", text="lunch")["ok"]
    assert admin.request("kick", nick="bob", reason="spam")["ok"]
    banned = admin.request("ban", target="carol", reason="rude")
    assert banned["ok"], banned
    assert carol.rest_until_closed()[-1] == "*** You are banned from this server: rude"
    alice.expect("carol left!")
    alice.send("/quit")
    alice.rest_until_closed()
    assert server.stop() == 0
    assert stored(server.state_dir) == [
        ("join", "alice", "", ""),
        ("join", "bob", "", ""),
        ("join", "carol", "", ""),
        ("message", "alice", "hello", ""),
        ("action", "bob", "waves", ""),
        ("notice", "", "lunch", ""),
        ("kick", "bob", "", "spam"),
        ("leave", "bob", "", ""),
        ("ban", "carol", "", "rude"),
        ("leave", "carol", "", ""),
        ("leave", "alice", "", ""),
    ]
    assert [event["path"] for event in server.find("history_opened")] == [
        str(server.state_dir / "history.db")
    ]


def test_every_line_a_client_received_is_in_history_after_kill_9(
    start_daemon: Callable[..., Daemon], tmp_path: Path
) -> None:
    server = start_daemon(state_dir=tmp_path / "state")
    talker = server.chat("talker")
    listener = server.chat("listener")
    talker.expect_start("listener ")
    for number in range(300):
        talker.send(f"line {number}")
    first = listener.expect_start("talker: line ")
    server.signal(signal.SIGKILL)
    server.process.wait(10)
    lines = [first, *listener.rest_until_closed()]
    received = [line.removeprefix("talker: ") for line in lines]
    assert received[0] == "line 0"
    assert list(server.state_dir.glob("history.db-log.*")), "what SQLite did not have yet"
    again = start_daemon(state_dir=server.state_dir)
    assert again.stop() == 0
    said = [text for kind, _, text, _ in stored(server.state_dir) if kind == "message"]
    assert said[: len(received)] == received
    assert list(server.state_dir.glob("history.db-log*")) == [], "a clean stop removes it"


def test_disabled_history_opens_no_file(
    start_daemon: Callable[..., Daemon], tmp_path: Path
) -> None:
    server = start_daemon(config="[history]\nenabled = false\n", state_dir=tmp_path / "state")
    alice = server.chat("alice")
    alice.send("hello")
    alice.expect("alice: hello")
    assert server.stop() == 0
    assert not (server.state_dir / "history.db").exists()
    assert server.find("history_opened") == []


def test_sigterm_commits_what_was_said_last(
    start_daemon: Callable[..., Daemon], tmp_path: Path
) -> None:
    server = start_daemon(state_dir=tmp_path / "state")
    alice = server.chat("alice")
    alice.send("goodnight")
    alice.expect("alice: goodnight")
    assert server.stop() == 0
    assert stored(server.state_dir)[-1] == ("message", "alice", "goodnight", "")


ENTRY = re.compile(r"\*\*\* \[(?:[01]\d|2[0-3]):[0-5]\d\] (.*)")


def shown(lines: list[str]) -> list[str]:
    """History entry lines as the events they show, each checked to carry an HH:MM time."""
    events = []
    for line in lines:
        match = ENTRY.fullmatch(line)
        assert match, line
        events.append(match[1])
    return events


def test_a_line_client_is_shown_the_last_events_after_the_welcome(
    start_daemon: Callable[..., Daemon], tmp_path: Path
) -> None:
    server = start_daemon("--history-on-join", "3", state_dir=tmp_path / "state")
    alice = LineClient(server.port, "alice")
    assert alice.lines(2) == ["alice Bergabung!", "Terkoneksi dengan Server!"]
    alice.send("/who")  # the first one in is shown nothing: there is nothing yet
    assert alice.line() == "*** Online (1): alice"
    bob = server.chat("bob")
    alice.expect("bob Bergabung!")
    alice.send("halo")
    alice.send("/msg bob rahasia")
    alice.send("/me melambai")
    bob.expect("* alice melambai")
    carol = LineClient(server.port, "carol")
    assert carol.lines(2) == ["carol Bergabung!", "Terkoneksi dengan Server!"]
    assert carol.line() == "*** Riwayat: 3 kejadian terakhir (waktu server)"
    assert shown(carol.lines(3)) == ["bob Bergabung!", "alice: halo", "* alice melambai"]
    assert carol.line() == "*** Akhir riwayat"
    alice.send("selamat datang")
    assert carol.line() == "alice: selamat datang"


def test_history_on_demand_also_for_the_tutorial_client_whose_greeting_is_unchanged(
    start_daemon: Callable[..., Daemon], tmp_path: Path
) -> None:
    server = start_daemon("--history-on-join", "20", state_dir=tmp_path / "state")
    alice = server.chat("alice")
    alice.send("café ☕")
    alice.expect("alice: café ☕")
    tutorial = TutorialClient(server.port, "tutor")
    assert (
        tutorial.until("Terkoneksi dengan Server!") == "tutor Bergabung!Terkoneksi dengan Server!"
    )
    alice.expect("tutor Bergabung!")
    tutorial.write("/history 2")
    received = tutorial.until("*** Akhir riwayat")
    after_greeting = received.removeprefix("tutor Bergabung!Terkoneksi dengan Server!")
    assert after_greeting.startswith("*** Riwayat: 2 kejadian terakhir (waktu server)*** [")
    assert "] alice: cafe ?*** [" in after_greeting
    assert after_greeting.endswith("] tutor Bergabung!*** Akhir riwayat")


def test_history_command_shows_the_last_n_and_says_when_off(
    start_daemon: Callable[..., Daemon], tmp_path: Path
) -> None:
    server = start_daemon("--lang", "en", state_dir=tmp_path / "state")
    alice = server.chat("alice")
    for number in range(3):
        alice.send(f"m{number}")
    alice.expect("alice: m2")
    alice.send("/history 2")
    assert alice.line() == "*** History: the last 2 events (server time)"
    assert shown(alice.lines(2)) == ["alice: m1", "alice: m2"]
    assert alice.line() == "*** End of history"
    alice.send("/history")
    assert alice.line() == "*** History: the last 4 events (server time)"
    assert shown(alice.lines(4)) == ["alice joined!", "alice: m0", "alice: m1", "alice: m2"]
    assert alice.line() == "*** End of history"
    alice.send("/history -1")
    assert alice.line() == "*** Usage: /history [N] (N from 1 to 500)"
    off = start_daemon("--lang", "en", config="[history]\nenabled = false\n")
    bob = off.chat("bob")
    bob.send("/history")
    assert bob.line() == "*** History is turned off on this server"
    bob.send("/help")
    assert "/history [N]" in bob.line()


def test_lanchatctl_history_lists_filters_and_shows_ids_in_order(
    start_daemon: Callable[..., Daemon], tmp_path: Path
) -> None:
    server = start_daemon("--lang", "en", state_dir=tmp_path / "state")
    alice = server.chat("alice")
    alice.send("hi")
    alice.send("/me waves")
    alice.expect("* alice waves")
    bob = server.chat("bob")
    alice.send("/msg bob psst")
    bob.expect("*alice* psst")
    entries = json.loads(server.ctl("history", "--json").stdout)
    assert [(e["kind"], e["nick"], e["text"]) for e in entries] == [
        ("join", "alice", ""),
        ("message", "alice", "hi"),
        ("action", "alice", "waves"),
        ("join", "bob", ""),
    ]
    ids = [tuple(map(int, e["id"].split("-"))) for e in entries]
    assert ids == sorted(set(ids))
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", e["time"]) for e in entries)
    by_bob = json.loads(server.ctl("history", "--nick", "BOB", "--json").stdout)
    assert [e["kind"] for e in by_bob] == ["join"]
    last_two = server.ctl("history", "-n", "2").stdout.splitlines()
    assert last_two[0].split() == ["TIME", "KIND", "NICK", "TEXT", "ID"]
    assert [line.split()[2:4] for line in last_two[1:]] == [["action", "alice"], ["join", "bob"]]
    assert server.ctl("history", "--since", "2099-01-01").stdout == "No history.\n"
    assert len(json.loads(server.ctl("history", "--since", "1h", "--json").stdout)) == 4
    refused = server.ctl("history", "--since", "soon")
    assert refused.returncode == 2
    assert "'soon' is not a time like 30m, 2d, 14:30" in refused.stderr


def test_lanchatctl_purge_deletes_what_a_nick_said_and_is_logged_with_the_admin(
    start_daemon: Callable[..., Daemon], tmp_path: Path
) -> None:
    server = start_daemon("--lang", "en", state_dir=tmp_path / "state")
    alice = server.chat("alice")
    bob = server.chat("bob")
    alice.send("something regrettable")
    alice.send("/me shouts")
    bob.expect("* alice shouts")
    bob.send("calm down")
    bob.expect("bob: calm down")
    purged = server.ctl("purge", "Alice", "--json")
    assert json.loads(purged.stdout) == {"nick": "Alice", "since": None, "removed": 2}
    assert server.ctl("purge", "alice").stdout == "Purged 0 entries by alice from history.\n"
    event = server.wait_event("history_purged", removed=2)
    assert (event["nick"], event["admin_uid"]) == ("Alice", os.getuid())
    bob.send("/history")
    assert bob.line() == "*** History: the last 3 events (server time)"
    assert shown(bob.lines(3)) == ["alice joined!", "bob joined!", "bob: calm down"]
    assert server.stop() == 0
    assert ("message", "alice", "something regrettable", "") not in stored(server.state_dir)


def test_stats_show_history_counters_and_history_off_is_refused(
    start_daemon: Callable[..., Daemon], tmp_path: Path
) -> None:
    server = start_daemon(state_dir=tmp_path / "state")
    alice = server.chat("alice")
    alice.send("hi")
    alice.expect("alice: hi")

    def read() -> Any:
        return json.loads(server.ctl("stats", "--json").stdout)

    # Each round is in the log before it is sent, and in the file within ~0.1 s.
    wait_until(lambda: read()["history_committed"] == 2, what="the commit")
    stats = read()
    assert (stats["history_committed"], stats["history_failed_writes"]) == (2, 0)
    assert (stats["history_unsaved"], stats["history_lost"]) == (0, 0)
    assert "history                 2 saved, 0 failed writes, 0 unsaved, 0 lost" in (
        server.ctl("stats").stdout
    )
    off = start_daemon(config="[history]\nenabled = false\n")
    assert "history                 off" in off.ctl("stats").stdout
    refused = off.ctl("history")
    assert refused.returncode == 1
    assert refused.stderr == (
        "lanchatctl: error: history is turned off ([history] enabled = false)\n"
    )


def test_a_corrupt_history_file_is_set_aside_with_one_error_and_chat_goes_on(
    start_daemon: Callable[..., Daemon], tmp_path: Path
) -> None:
    state = tmp_path / "state"
    state.mkdir()
    garbage = b"this is not a database\0" * 500
    (state / "history.db").write_bytes(garbage)
    server = start_daemon("--lang", "en", state_dir=state)
    alice = server.chat("alice")
    alice.send("still here")
    alice.expect("alice: still here")
    (corrupt,) = server.find("history_corrupt")
    assert (corrupt["level"], corrupt["path"]) == ("error", str(state / "history.db"))
    aside = Path(corrupt["moved_to"])
    assert aside.parent == state
    assert aside.name.startswith("history.db.corrupt-")
    assert aside.read_bytes() == garbage
    assert [e["event"] for e in server.events if e.get("level") == "error"] == ["history_corrupt"]
    assert server.stop() == 0
    assert stored(state) == [("join", "alice", "", ""), ("message", "alice", "still here", "")]


def test_the_history_files_are_0640_or_tighter_even_when_found_world_readable(
    start_daemon: Callable[..., Daemon], tmp_path: Path
) -> None:
    state = tmp_path / "state"
    first = start_daemon("--lang", "en", state_dir=state)
    before = first.chat("alice")
    before.send("before")
    before.expect("alice: before")
    assert first.stop() == 0
    (state / "history.db").chmod(0o644)  # say, restored from a backup with cp
    (state / "history.db-wal").write_bytes(b"")
    (state / "history.db-wal").chmod(0o666)
    (state / "history.db-log.1").write_bytes(b"")
    (state / "history.db-log.1").chmod(0o666)
    server = start_daemon("--lang", "en", state_dir=state)
    alice = server.chat("alice")
    alice.send("after")
    alice.expect("alice: after")
    modes = {path.name: path.stat().st_mode & 0o777 for path in state.glob("history.db*")}
    assert set(modes) == {"history.db", "history.db-wal", "history.db-shm", "history.db-log.2"}
    assert {name: mode & ~0o640 for name, mode in modes.items()} == dict.fromkeys(modes, 0)
    assert server.stop() == 0
    assert stored(state)[-1] == ("message", "alice", "after", "")


NOBODY = 65534
needs_root = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("setpriv") is None,
    reason="needs root and setpriv to run the daemon as another user",
)


@needs_root
def test_a_history_file_the_daemon_may_not_read_is_set_aside_and_history_starts_empty(
    start_daemon: Callable[..., Daemon], request: pytest.FixtureRequest
) -> None:
    # nobody cannot reach tmp_path (under root's 0700 pytest directory): its own in /tmp.
    workdir = Path(tempfile.mkdtemp(prefix="lanchatd-test-"))
    request.addfinalizer(lambda: shutil.rmtree(workdir))
    state = workdir / "state"
    state.mkdir()
    for path in (workdir, state):
        os.chown(path, NOBODY, NOBODY)
    (state / "history.db").write_bytes(b"root's file")
    (state / "history.db").chmod(0o600)
    as_nobody = ["setpriv", f"--reuid={NOBODY}", f"--regid={NOBODY}", "--clear-groups"]
    server = start_daemon("--lang", "en", workdir=workdir, command=[*as_nobody, str(LANCHATD)])
    alice = server.chat("alice")
    alice.send("still here")
    alice.expect("alice: still here")
    (corrupt,) = server.find("history_corrupt")
    assert corrupt["path"] == str(state / "history.db")
    assert Path(corrupt["moved_to"]).read_bytes() == b"root's file"
    assert server.find("history_unavailable") == []
    assert server.stop() == 0
    assert stored(state) == [("join", "alice", "", ""), ("message", "alice", "still here", "")]


def test_a_directory_in_place_of_the_history_file_is_set_aside_and_history_starts_empty(
    start_daemon: Callable[..., Daemon], tmp_path: Path
) -> None:
    state = tmp_path / "state"
    (state / "history.db").mkdir(parents=True)
    (state / "history.db" / "keep.txt").write_text("kept")
    server = start_daemon("--lang", "en", state_dir=state)
    alice = server.chat("alice")
    alice.send("still here")
    alice.expect("alice: still here")
    (corrupt,) = server.find("history_corrupt")
    assert (Path(corrupt["moved_to"]) / "keep.txt").read_text() == "kept"
    assert server.find("history_unavailable") == []
    assert server.stop() == 0
    assert stored(state) == [("join", "alice", "", ""), ("message", "alice", "still here", "")]


needs_mount_namespace = pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("unshare") is None,
    reason="needs root and unshare to mount the state directory read-only privately",
)


def read_only_daemon(start_daemon: Callable[..., Daemon], state: Path) -> Daemon:
    """A daemon whose state directory (made here) is mounted read-only for it alone."""
    state.mkdir()
    read_only = f"mount --bind {state} {state} && mount -o remount,bind,ro {state}"
    return start_daemon(
        "--lang",
        "en",
        state_dir=state,
        command=[*UNSHARE, "sh", "-c", f'{read_only} && exec "$0" "$@"', str(LANCHATD)],
    )


@needs_mount_namespace
def test_a_read_only_state_directory_keeps_chat_and_history_going_with_failures_in_stats(
    start_daemon: Callable[..., Daemon], tmp_path: Path
) -> None:
    state = tmp_path / "state"
    server = read_only_daemon(start_daemon, state)
    alice = server.chat("alice")
    alice.send("hi")
    alice.expect("alice: hi")
    unavailable = server.wait_event("history_unavailable")
    assert unavailable["path"] == str(state / "history.db")

    def stats() -> dict[str, Any]:
        answer: dict[str, Any] = json.loads(server.ctl("stats", "--json").stdout)
        return answer

    # The store retries a file it cannot open every few seconds; each retry is a failed write.
    wait_until(lambda: stats()["history_failed_writes"] >= 1, what="a failed history write")
    assert (stats()["history_committed"], stats()["history_unsaved"]) == (0, 2)
    alice.send("/history")
    assert alice.line() == "*** History: the last 2 events (server time)"
    assert shown(alice.lines(2)) == ["alice joined!", "alice: hi"]
    assert alice.line() == "*** End of history"
    assert len(server.find("history_unavailable")) == 1
    assert server.stop() == 0
    assert not (state / "history.db").exists()


@needs_mount_namespace
def test_events_that_could_not_be_written_by_the_stop_are_logged_as_lost(
    start_daemon: Callable[..., Daemon], tmp_path: Path
) -> None:
    state = tmp_path / "state"
    server = read_only_daemon(start_daemon, state)
    alice = server.chat("alice")
    alice.send("hi")
    alice.expect("alice: hi")
    alice.close()
    server.wait_event("client_left")
    assert server.stop() == 0
    (lost,) = server.find("history_lost")
    assert (lost["level"], lost["path"], lost["count"]) == ("error", str(state / "history.db"), 3)


def test_reload_applies_history_settings_but_enabled_waits_for_a_restart(
    start_daemon: Callable[..., Daemon], tmp_path: Path
) -> None:
    server = start_daemon(config="[history]\nkeep = 100\n", state_dir=tmp_path / "state")
    (tmp_path / "lanchatd-0.toml").write_text(
        "[history]\nenabled = false\nkeep = 50\nkeep_days = 0\n"
    )
    result = json.loads(server.ctl("reload", "--json").stdout)
    assert result == {
        "changed": {"history_keep": [100, 50], "history_keep_days": [7.0, 0.0]},
        "needs_restart": ["history"],
    }


def kept_texts(state_dir: Path) -> list[str]:
    """The text of every entry in the history file, oldest first, read as another process
    reads it (read-only) while the daemon runs."""
    uri = f"{(state_dir / 'history.db').as_uri()}?mode=ro"
    with contextlib.closing(sqlite3.connect(uri, uri=True)) as db:
        return [text for (text,) in db.execute("SELECT text FROM entries ORDER BY ms, seq")]


def test_retention_is_enforced_within_a_minute_of_a_limit_being_passed(
    start_daemon: Callable[..., Daemon], tmp_path: Path
) -> None:
    """By count once the 51st event is kept, and by age once a reload lowers keep_days."""
    state = tmp_path / "state"
    server = start_daemon("--lang", "en", config="[history]\nkeep = 50\n", state_dir=state)
    alice = server.chat("alice")
    said = [f"line {number}" for number in range(60)]
    for text in said:
        alice.send(text)
    alice.expect("alice: line 59")
    wait_until(lambda: kept_texts(state) == said[-50:], timeout=60, what="the newest 50 kept")
    assert server.stop() == 0
    # Ten entries two days old, as a file written then would hold them: before the batches
    # written since (rowid order is id order).
    two_days_ago = time.time() - 2 * 86_400
    first = int(two_days_ago * 1000)
    runs = [[[first + i, 0], "message", "old", "", [f"old {i}"]] for i in range(10)]
    times = struct.pack("<10d", *(two_days_ago + i / 1000 for i in range(10)))
    with contextlib.closing(sqlite3.connect(state / "history.db")) as db, db:
        db.execute(
            "INSERT INTO batches (rowid, first_ms, first_seq, last_ms, last_seq, count, body, "
            "times) VALUES ((SELECT min(rowid) - 1 FROM batches), ?, 0, ?, 0, 10, ?, ?)",
            (first, first + 9, json.dumps(runs), times),
        )
    config = "[history]\nkeep = 1000\nkeep_days = {}\n"
    again = start_daemon("--lang", "en", config=config.format(7), state_dir=state)
    bob = again.chat("bob")
    joined = [f"old {i}" for i in range(10)] + said[-50:] + [""]
    wait_until(lambda: kept_texts(state) == joined, what="bob's join committed")
    (tmp_path / "lanchatd-1.toml").write_text(config.format(1))
    assert json.loads(again.ctl("reload", "--json").stdout)["changed"] == {
        "history_keep_days": [7.0, 1.0]
    }
    wait_until(lambda: kept_texts(state) == [*said[-50:], ""], timeout=60, what="by age")
    bob.close()


def test_newcomers_joining_during_chat_see_every_line_once_between_history_and_live(
    start_daemon: Callable[..., Daemon], tmp_path: Path
) -> None:
    """The history a newcomer is shown and the live lines after it meet exactly, however the
    join falls among the messages (the talker paces itself on its own echo)."""
    server = start_daemon(
        "--history-on-join", "500", config="[limits]\nrate = 0\n", state_dir=tmp_path / "state"
    )
    talker = server.chat("talker")
    total = 300
    said = [f"n{number}" for number in range(total)]

    def talk() -> None:
        for text in said:
            talker.send(text)
            talker.expect(f"talker: {text}")

    thread = threading.Thread(target=talk, daemon=True)
    thread.start()
    newcomers = []
    for index in range(8):
        newcomer = LineClient(server.port, f"newcomer{index}")
        assert newcomer.lines(2) == [f"newcomer{index} Bergabung!", "Terkoneksi dengan Server!"]
        newcomers.append(newcomer)
    thread.join(WAIT)
    replayed = []
    for newcomer in newcomers:
        seen: list[str] = []
        from_history = 0
        while not seen or seen[-1] != said[-1]:
            line = newcomer.line()
            if line.startswith("*** [") and "] talker: " in line:
                seen.append(line.partition("] talker: ")[2])
                from_history += 1
            elif line.startswith("talker: "):
                seen.append(line.removeprefix("talker: "))
        assert seen == said
        replayed.append(from_history)
    assert replayed == sorted(replayed)
