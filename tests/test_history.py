"""The history store in process: real SQLite files in temporary directories, its real writer
thread, and a real process killed with SIGKILL."""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import signal
import sqlite3
import struct
import subprocess
import sys
import threading
import time
from collections.abc import Iterator, MutableMapping
from pathlib import Path
from typing import Any

import pytest
import structlog
from structlog.testing import capture_logs

from benchmarks import historybench
from lanchatd.core.paths import HISTORY_FILE_NAME
from lanchatd.core.tags import ORIGIN, MessageId
from lanchatd.daemon.appendlog import AppendLog
from lanchatd.daemon.history import (
    PAGE_SIZE,
    SCHEMA_VERSION,
    SWEEP_CHUNK,
    Entry,
    History,
    Kind,
)
from tests.support import WAIT, wait_until

DAY = 86_400.0
#: Long enough that the writer thread never commits on its own during a test.
NEVER = 3600.0


class Clock:
    """The store's wall clock, moved by the test."""

    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def logs() -> Iterator[list[MutableMapping[str, Any]]]:
    with capture_logs() as captured:
        yield captured


@pytest.fixture
def stores(tmp_path: Path, logs: list[MutableMapping[str, Any]]) -> Iterator[Any]:
    """Open History stores on ``tmp_path/history.db``; every one is closed at the end."""
    opened: list[History] = []

    def open_store(path: Path = tmp_path / HISTORY_FILE_NAME, **options: Any) -> History:
        store = History(path, structlog.get_logger(), **options)
        opened.append(store)
        return store

    yield open_store
    for store in opened:
        store.close()


def stored(path: Path) -> list[tuple[int, int, str, str]]:
    """What the file holds, read with sqlite3 directly: (ms, seq, nick, text) in id order."""
    with sqlite3.connect(path) as db:
        return list(db.execute("SELECT ms, seq, nick, text FROM entries ORDER BY ms, seq"))


def rows(entries: list[Entry]) -> list[tuple[int, int, str, str]]:
    return [(e.id.ms, e.id.seq, e.nick, e.text) for e in entries]


def say(store: History, count: int, nick: str = "alice", start: int = 0) -> list[Entry]:
    return [store.append(Kind.MESSAGE, nick, f"line {i}") for i in range(start, start + count)]


def events(logs: list[MutableMapping[str, Any]], name: str) -> list[MutableMapping[str, Any]]:
    return [event for event in logs if event["event"] == name]


def test_message_id_text_form_is_a_redis_stream_id() -> None:
    assert str(MessageId(1700000000123, 7)) == "1700000000123-7"
    assert MessageId.parse("1700000000123-7") == MessageId(1700000000123, 7)
    assert MessageId(5, 10) > MessageId(5, 9) > MessageId(4, 99) > ORIGIN
    for bad in ("", "1", "1-", "-1", "a-b", "1-2-3", "1 -2", "\u0661-\u0662", "+1-2"):
        with pytest.raises(ValueError, match="not a message id"):
            MessageId.parse(bad)


def test_ids_increase_strictly_in_append_order_even_when_the_clock_steps_back(
    stores: Any, tmp_path: Path
) -> None:
    clock = Clock(1000.0)
    store = stores(clock=clock, batch_interval=NEVER)
    first = store.append(Kind.JOIN, "alice")
    clock.now = 999.0
    second = store.append(Kind.MESSAGE, "alice", "hi")
    clock.now = 1000.5
    third = store.append(Kind.ACTION, "alice", "waves")
    assert [str(e.id) for e in (first, second, third)] == ["1000000-0", "1000000-1", "1000500-0"]
    assert second.at == 999.0
    store.close()
    # After a restart with the clock further back, ids still go on from the newest.
    clock.now = 10.0
    again = stores(clock=clock)
    assert str(again.append(Kind.LEAVE, "alice", reason="quit").id) == "1000500-1"


def test_concurrent_appends_under_the_room_lock_are_stored_in_that_order(
    stores: Any, tmp_path: Path
) -> None:
    store = stores(batch_interval=0.001)
    room = threading.Lock()
    appended: list[Entry] = []

    def speak(nick: str) -> None:
        for i in range(300):
            with room:
                appended.append(store.append(Kind.MESSAGE, nick, str(i)))

    threads = [threading.Thread(target=speak, args=(f"n{k}",)) for k in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(WAIT)
    assert len(appended) == 1200
    assert [e.id for e in appended] == sorted({e.id for e in appended})
    assert store.commit_through(appended[-1].id)
    assert stored(tmp_path / "history.db") == rows(appended)
    assert store.last(500) == appended[-500:]


def test_the_writer_thread_commits_in_batches_without_being_asked(
    stores: Any, tmp_path: Path
) -> None:
    store = stores(batch_interval=0.005)
    said = say(store, 50)
    wait_until(lambda: len(stored(tmp_path / "history.db")) == 50, what="the batch commit")
    assert stored(tmp_path / "history.db") == rows(said)
    assert store.counters.committed == 50


def wal_restarts(path: Path) -> int:
    """The WAL header's checkpoint sequence number: it counts the times the WAL started
    over. Read from the file, so the test itself never checkpoints."""
    with path.with_name(path.name + "-wal").open("rb") as wal:
        return int.from_bytes(wal.read(16)[12:16], "big")


def test_no_commit_checkpoints_by_itself(stores: Any, tmp_path: Path) -> None:
    """A checkpoint syncs the disk twice: never inside a round's commit, which SQLite's
    automatic one (every 1000 WAL pages) would be."""
    path = tmp_path / "history.db"
    store = stores(checkpoint_interval=NEVER)
    empty = path.stat().st_size
    for start in range(0, 24_000, 30):  # ~2 WAL frames a commit
        store.commit_through(say(store, 30, start=start)[-1].id)
    assert path.stat().st_size == empty
    assert path.with_name(path.name + "-wal").stat().st_size > 1000 * 4096


def test_the_writer_checkpoints_and_the_wal_starts_over(stores: Any, tmp_path: Path) -> None:
    """The writer checkpoints, and completes it, so the WAL is reused rather than growing
    while the room talks; a store gone quiet is checkpointed once."""
    path = tmp_path / "history.db"
    store = stores()
    empty = path.stat().st_size
    for start in range(0, 3000, 30):
        store.commit_through(say(store, 30, start=start)[-1].id)
    wait_until(lambda: path.stat().st_size > empty, what="the writer's checkpoint")
    restarts = wal_restarts(path)

    def restarted() -> bool:
        store.commit_through(say(store, 30)[-1].id)
        return wal_restarts(path) > restarts

    wait_until(restarted, what="the WAL to start over")


def test_reads_see_what_is_appended_but_not_yet_committed(stores: Any, tmp_path: Path) -> None:
    store = stores(batch_interval=NEVER)
    older = say(store, 3)
    assert store.commit_through(older[-1].id)
    newer = say(store, 2, start=3)
    assert len(stored(tmp_path / "history.db")) == 3
    assert store.last(4) == older[1:] + newer
    assert store.last(2) == newer
    assert store.after(older[-1].id).entries == newer
    assert store.after(older[0].id).entries == older[1:] + newer
    assert store.after(newer[-1].id).entries == []
    assert store.query(10, nick="ALICE") == older + newer
    assert store.commit_through(older[0].id)
    assert len(stored(tmp_path / "history.db")) == 3, "already committed: nothing to do"
    assert store.commit_through(newer[-1].id)
    assert stored(tmp_path / "history.db") == rows(older + newer)


def test_last_is_bounded_and_oldest_first(stores: Any) -> None:
    store = stores()
    said = say(store, 600)
    assert store.last(20) == said[-20:]
    assert store.last(10_000) == said[-500:]
    assert store.last(0) == []
    assert store.last(-3) == []


def test_reads_beyond_the_newest_kept_in_memory_are_exact(stores: Any) -> None:
    """The newest MAX_READ entries are served from memory, older ones from the file: the
    answers meet without a gap or a repeat, after a restart and a purge too."""
    store = stores()
    said = say(store, 550) + say(store, 100, nick="bob", start=550)
    store.close()
    again = stores(batch_interval=NEVER)
    newer = say(again, 3, start=650)
    everything = said + newer
    assert again.last(500) == everything[-500:]
    assert again.after(said[100].id).entries == everything[101:]
    assert again.after(said[200].id).entries == everything[201:]
    assert again.after(ORIGIN).entries == everything
    assert again.purge("bob") == 100
    kept = said[:550] + newer
    assert again.last(500) == kept[-500:]
    assert again.after(said[100].id).entries == kept[101:]
    assert again.after(said[540].id, limit=4).entries == kept[541:545]


def test_resume_after_an_id_gets_exactly_what_was_missed(stores: Any) -> None:
    store = stores()
    seen = say(store, 10)
    store.commit_through(seen[-1].id)
    missed = say(store, 200, nick="bob")
    replay = store.after(seen[-1].id)
    assert (replay.too_old, replay.missed) == (False, 0)
    assert replay.entries == missed
    assert store.after(seen[-1].id, limit=5).entries == missed[:5]
    assert store.after(ORIGIN).entries == seen + missed


def test_retention_by_count_and_a_resume_from_before_it(stores: Any, tmp_path: Path) -> None:
    store = stores(keep=5, sweep_interval=0.01)
    said = say(store, 8)
    wait_until(lambda: len(stored(tmp_path / "history.db")) == 5, what="retention by count")
    assert stored(tmp_path / "history.db") == rows(said[3:])
    too_old = store.after(said[1].id)
    assert (too_old.too_old, too_old.missed, too_old.entries) == (True, 5, [])
    # The newest removed one is the client's own: it missed nothing that is gone.
    assert store.after(said[2].id).entries == said[3:]
    # A lower limit on reload applies to the next sweep.
    store.configure(keep=2, keep_days=7)
    wait_until(lambda: len(stored(tmp_path / "history.db")) == 2, what="the new limit")
    assert store.last(10) == said[6:]
    # What was removed is remembered across a restart.
    store.close()
    assert stores().after(said[4].id).too_old


def test_a_sweep_of_many_rows_goes_in_chunks_and_leaves_exactly_the_newest(
    stores: Any, tmp_path: Path
) -> None:
    store = stores(keep=10, sweep_interval=NEVER)
    said = say(store, SWEEP_CHUNK * 2 + 500)
    assert store.commit_through(said[-1].id)
    store.configure(keep=5, keep_days=7)  # a reload: the next sweep comes promptly
    wait_until(lambda: len(stored(tmp_path / "history.db")) == 5, what="a chunked sweep")
    assert stored(tmp_path / "history.db") == rows(said[-5:])
    assert store.last(500) == said[-5:]
    replay = store.after(said[-7].id)
    assert (replay.too_old, replay.missed) == (True, 5)
    assert store.after(said[-6].id).entries == said[-5:]


def test_retention_keeps_exactly_the_newest_across_batches_of_every_size(
    stores: Any, tmp_path: Path
) -> None:
    """Whole batches go, and the one that straddles the limit is cut: the file holds exactly
    the newest ``keep``, however the entries were committed."""
    store = stores(keep=1000, sweep_interval=NEVER)
    said: list[Entry] = []
    for size in (1, 7, 1, 30, 2, 13, 1, 50, 4):
        said += say(store, size, start=len(said))
        assert store.commit_through(said[-1].id)
    for keep in (100, 37, 36, 5, 1):
        store.configure(keep=keep, keep_days=7)
        wait_until(lambda n=keep: len(stored(tmp_path / "history.db")) == n, what=f"keep {keep}")
        assert stored(tmp_path / "history.db") == rows(said[-keep:])
        assert store.after(said[-keep - 1].id).entries == said[-keep:]
        assert store.after(said[-keep - 2].id).too_old
    store.close()
    assert stores().last(10) == said[-1:]


def test_a_purge_emptying_the_file_between_two_chunks_of_a_sweep_loses_nothing_newer(
    stores: Any, tmp_path: Path
) -> None:
    """A sweep deletes a range of rowids in chunks and lets go of the write lock between
    them. A purge that empties the file meanwhile lets the next batches take low rowids
    again: the next chunk must leave them (it checks the ids as well as the rowids)."""
    store = stores(keep=1, sweep_interval=NEVER)
    said: list[Entry] = []
    for start in range(0, 6, 2):
        said += say(store, 2, start=start)
        assert store.commit_through(said[-1].id)
    with store._write_lock:
        marked = store._mark()  # the sweep's first step: everything up to said[-2] goes
    assert marked == (said[-2].id, 2)  # after the first two batches
    assert store.purge("alice") == 5  # the third batch was cut to said[-1] already
    newer = say(store, 3, nick="bob", start=10)
    assert store.commit_through(newer[-1].id)
    assert store._delete_chunk(marked)
    assert stored(tmp_path / "history.db") == rows(newer)


def test_retention_by_age_and_keep_days_zero_keeps_forever(stores: Any, tmp_path: Path) -> None:
    clock = Clock()
    store = stores(clock=clock, keep_days=1, sweep_interval=0.01)
    old = say(store, 2)
    clock.now += DAY - 1
    recent = say(store, 1, start=2)
    store.commit_through(recent[-1].id)
    assert len(stored(tmp_path / "history.db")) == 3
    clock.now += 2
    wait_until(lambda: len(stored(tmp_path / "history.db")) == 1, what="retention by age")
    assert store.last(10) == recent
    assert store.after(old[0].id).too_old
    store.configure(keep=10_000, keep_days=0)
    clock.now += 100 * DAY
    newest = say(store, 1, start=3)
    store.commit_through(newest[-1].id)
    assert store.last(10) == recent + newest


def test_purge_removes_what_a_nickname_said_by_the_rooms_identity(stores: Any) -> None:
    clock = Clock()
    store = stores(clock=clock, batch_interval=NEVER)
    joined = store.append(Kind.JOIN, "alice")
    early = store.append(Kind.MESSAGE, "alice", "one")
    store.commit_through(early.id)
    clock.now += 60
    other = store.append(Kind.MESSAGE, "bob", "two")
    store.append(Kind.MESSAGE, "ALICE", "three")
    store.append(Kind.ACTION, "\uff41\uff4c\uff49\uff43\uff45", "four")  # fullwidth alice
    assert store.purge("Alice", since=clock.now) == 2
    assert store.last(10) == [joined, early, other]
    assert store.purge("alice") == 1
    assert store.last(10) == [joined, other]
    assert store.purge("nobody") == 0


def test_the_admin_query_filters_by_time_and_nickname(stores: Any) -> None:
    clock = Clock()
    store = stores(clock=clock)
    first = say(store, 3)
    clock.now += 10
    second = say(store, 2, nick="bob") + say(store, 2, start=3)
    store.commit_through(second[-1].id)
    third = say(store, 1, nick="Bob", start=9)
    assert store.query(100) == first + second + third
    assert store.query(3) == second[2:] + third
    assert store.query(100, since=clock.now) == second + third
    assert store.query(100, nick="BOB") == second[:2] + third
    assert store.query(1, since=clock.now, nick="alice") == second[-1:]
    assert store.query(0) == []


def test_close_commits_everything(stores: Any, tmp_path: Path) -> None:
    store = stores(batch_interval=NEVER)
    said = say(store, 20)
    store.close()
    assert stored(tmp_path / "history.db") == rows(said)
    late = store.append(Kind.NOTICE, "", "after close")
    assert not store.commit_through(late.id), "a closed store writes nothing"
    store.close()
    assert stored(tmp_path / "history.db") == rows(said)
    assert stores().last(50) == said


def test_the_file_is_not_readable_by_others(stores: Any, tmp_path: Path) -> None:
    store = stores()
    store.commit_through(say(store, 1)[0].id)
    for path in tmp_path.iterdir():
        assert path.stat().st_mode & 0o137 == 0, path


def test_a_new_file_has_large_pages_and_an_existing_one_keeps_its_own(
    stores: Any, tmp_path: Path
) -> None:
    store = stores()
    store.commit_through(say(store, 1)[0].id)
    store.close()
    older = tmp_path / "older" / "history.db"
    older.parent.mkdir()
    with contextlib.closing(sqlite3.connect(older)) as db:
        db.execute("PRAGMA page_size = 4096")
        db.execute("VACUUM")
    store = stores(path=older)
    store.commit_through(say(store, 1)[0].id)
    store.close()
    sizes = []
    for path in (tmp_path / "history.db", older):
        with contextlib.closing(sqlite3.connect(path)) as db:
            sizes.append(db.execute("PRAGMA page_size").fetchone()[0])
    assert sizes == [PAGE_SIZE, 4096]


def test_a_corrupt_file_is_set_aside_and_the_store_starts_empty(
    stores: Any, tmp_path: Path, logs: list[MutableMapping[str, Any]]
) -> None:
    garbage = b"this is not a database\n" * 500
    (tmp_path / "history.db").write_bytes(garbage)
    store = stores()
    assert store.last(10) == []
    (event,) = events(logs, "history_corrupt")
    assert event["path"] == str(tmp_path / "history.db")
    assert event["log_level"] == "error"
    aside = Path(event["moved_to"])
    assert aside.parent == tmp_path
    assert aside.name.startswith("history.db.corrupt-")
    assert aside.read_bytes() == garbage
    said = say(store, 3)
    assert store.commit_through(said[-1].id)
    assert stored(tmp_path / "history.db") == rows(said)
    assert events(logs, "history_unavailable") == []


def test_a_damaged_page_is_noticed_too(stores: Any, tmp_path: Path) -> None:
    store = stores()
    store.commit_through(say(store, 2000)[-1].id)
    store.close()
    path = tmp_path / "history.db"
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    data = bytearray(path.read_bytes())
    assert len(data) >= 3 * PAGE_SIZE
    data[2 * PAGE_SIZE : 3 * PAGE_SIZE] = b"\xff" * PAGE_SIZE  # the third page
    path.write_bytes(bytes(data))
    assert stores().last(10) == []
    (aside,) = tmp_path.glob("history.db.corrupt-[0-9]*[0-9]")
    assert aside.read_bytes() == bytes(data)


@pytest.fixture
def immutable() -> Iterator[Any]:
    """``chattr +i``: unwritable even for root; undone at the end."""
    if os.geteuid() != 0 or shutil.which("chattr") is None:
        pytest.skip("needs root and chattr to make a file unwritable even for root")
    made: list[Path] = []

    def freeze(path: Path) -> None:
        done = subprocess.run(
            ["chattr", "+i", str(path)], check=False, capture_output=True, text=True
        )
        if done.returncode:
            pytest.skip(f"chattr +i is not supported here: {done.stderr.strip()}")
        made.append(path)

    yield freeze
    for path in made:
        subprocess.run(["chattr", "-i", str(path)], check=True)


def test_a_read_only_directory_keeps_history_in_memory_until_it_can_write(
    stores: Any, tmp_path: Path, logs: list[MutableMapping[str, Any]], immutable: Any
) -> None:
    immutable(tmp_path)
    store = stores(batch_interval=0.005, retry_interval=0.05)
    said = say(store, 5)
    assert not store.commit_through(said[-1].id)
    assert store.last(10) == said
    assert store.after(said[1].id).entries == said[2:]
    wait_until(lambda: store.counters.failed_writes >= 2, what="retries")
    (event,) = events(logs, "history_unavailable")
    assert event["path"] == str(tmp_path / "history.db")
    assert not (tmp_path / "history.db").exists()
    subprocess.run(["chattr", "-i", str(tmp_path)], check=True)
    assert store.unsaved_count() == 5
    wait_until(lambda: store.commit_through(said[-1].id), what="the writes to resume")
    assert store.unsaved_count() == 0
    assert stored(tmp_path / "history.db") == rows(said)
    assert len(events(logs, "history_unavailable")) == 1
    assert len(events(logs, "history_writes_resumed")) == 1


def test_writes_failing_on_an_open_file_are_counted_and_memory_is_bounded(
    stores: Any, tmp_path: Path, logs: list[MutableMapping[str, Any]], immutable: Any
) -> None:
    store = stores(keep=10, batch_interval=NEVER, retry_interval=NEVER)
    first = say(store, 2)
    assert store.commit_through(first[-1].id)
    immutable(tmp_path / "history.db-wal")
    rest = say(store, 15, start=2)
    assert not store.commit_through(rest[-1].id)
    assert store.counters.failed_writes == 1
    assert store.counters.lost == 5
    assert store.unsaved_count() == 10
    assert store.last(100) == first + rest[5:]
    assert store.after(first[-1].id).too_old
    assert not store.commit_through(rest[-1].id), "no retry before retry_interval"
    assert store.counters.failed_writes == 1
    (event,) = events(logs, "history_unavailable")
    assert "readonly" in event["error"] or "disk I/O" in event["error"], event


CHILD = """
import sys, structlog
from pathlib import Path
from benchmarks import historybench
from lanchatd.core.paths import HISTORY_FILE_NAME
from lanchatd.daemon.history import History, Kind
structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr))
store = History(Path(sys.argv[1]), structlog.get_logger(), batch_interval=float(sys.argv[2]))
for i in range(300):
    entry = store.append(Kind.MESSAGE, "alice", str(i))
    if i % 10 == 9:
        store.commit_through(entry.id)
        print("delivered", entry.id, flush=True)
if sys.argv[2] != "3600":
    while store.counters.committed < 300:
        pass
    print("committed", flush=True)
for i in range(300, 10**9):
    store.append(Kind.MESSAGE, "alice", str(i))
"""


def python(script: str, *args: str) -> subprocess.Popen[str]:
    """``script`` in a Python process of its own (to be killed), its stdout a pipe."""
    return subprocess.Popen(
        [sys.executable, "-c", script, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        cwd=Path(__file__).resolve().parent.parent,
    )


@pytest.mark.parametrize("batch_interval", ["3600", "0.005"])
def test_after_kill_9_every_delivered_entry_is_kept(tmp_path: Path, batch_interval: str) -> None:
    """What commit_through returned for was delivered; a SIGKILL afterwards loses none of it."""
    path = tmp_path / "history.db"
    child = python(CHILD, str(path), batch_interval)
    assert child.stdout is not None
    try:
        lines = [child.stdout.readline() for _ in range(30)]
        if batch_interval != "3600":
            assert child.stdout.readline() == "committed\n"
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(WAIT)
    assert lines[-1].startswith("delivered ")
    kept = stored(path)
    assert [int(text) for *_, text in kept] == list(range(len(kept))), "a prefix, in order"
    assert len(kept) >= 300
    assert f"{kept[299][0]}-{kept[299][1]}" == lines[-1].split()[1]


CHECKPOINTING_CHILD = """
import sys, structlog
from pathlib import Path
from lanchatd.daemon.history import History, Kind
from tests.test_history import wal_restarts
structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr))
path = Path(sys.argv[1])
store = History(path, structlog.get_logger(), keep=10**9, checkpoint_interval=0.02)
for i in range(0, 10**9, 10):
    for j in range(i, i + 10):
        entry = store.append(Kind.MESSAGE, "alice", str(j).rjust(4000))  # a page each
    store.commit_through(entry.id)
    print("delivered", entry.id, wal_restarts(path), flush=True)
"""


def test_after_kill_9_amid_checkpoints_every_delivered_entry_is_kept(tmp_path: Path) -> None:
    """The writer's checkpoints and the WAL starting over, while rounds are committed and
    delivered: a SIGKILL loses nothing that was delivered."""
    path = tmp_path / "history.db"
    child = python(CHECKPOINTING_CHILD, str(path))
    assert child.stdout is not None
    try:
        deadline = time.monotonic() + WAIT
        line = "delivered 0-0 0"
        for line in child.stdout:
            if int(line.split()[2]) >= 3 or time.monotonic() > deadline:
                break
        assert int(line.split()[2]) >= 3, "the WAL started over three times"
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(WAIT)
    kept = stored(path)
    assert [int(text) for *_, text in kept] == list(range(len(kept))), "a prefix, in order"
    delivered = line.split()[1]
    assert delivered in [f"{ms}-{seq}" for ms, seq, *_ in kept]


def test_the_history_benchmark_runs() -> None:
    figures = historybench.main(["--appends", "200", "--rounds", "5", "--reads", "2"])
    assert set(figures) >= {"append_us", "round_of_1_us", "after_id_500_ms", "last_20_ms"}
    assert all(value > 0 for value in figures.values())


UNSHARE = ["unshare", "--mount", "--propagation", "private"]
FULL_DISK = """
import json, os, subprocess, sys, time
from pathlib import Path
import structlog
from structlog.testing import capture_logs
from lanchatd.daemon.history import History, Kind
directory = Path(sys.argv[1])
subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(directory)], check=True)
with capture_logs() as logs:
    store = History(directory / "history.db", structlog.get_logger(), retry_interval=0.05)
    said = [store.append(Kind.MESSAGE, "alice", "before") for _ in range(3)]
    first = store.commit_through(said[-1].id)
    filler = directory / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT)
    try:
        while os.write(fd, b"x" * 4096):
            pass
    except OSError:
        pass
    os.close(fd)
    said += [store.append(Kind.MESSAGE, "alice", "y" * 2000) for _ in range(100)]
    full = store.secure_through(said[-1].id)  # as a delivery round: the log, then the file
    failed = store.counters.failed_writes >= 1
    readable = store.last(500) == said
    filler.unlink()
    deadline = time.monotonic() + 10
    while not store.secure_through(said[-1].id) and time.monotonic() < deadline:
        time.sleep(0.01)
    while not store.commit_through(said[-1].id) and time.monotonic() < deadline:
        time.sleep(0.01)
    store.close()
    kept = History(directory / "history.db", structlog.get_logger())
    again = kept.last(500) == said
    kept.close()
print(json.dumps({
    "first": first, "full": full, "failed": failed, "readable": readable, "again": again,
    "events": [e["event"] for e in logs if e["event"] != "history_opened"],
}))
"""


def test_a_full_disk_keeps_history_in_memory_until_there_is_room(tmp_path: Path) -> None:
    """A real ENOSPC: a 2 MiB tmpfs in a mount namespace of the test's own, filled up."""
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        pytest.skip("needs root and unshare to mount a small tmpfs privately")
    done = subprocess.run(
        [*UNSHARE, sys.executable, "-c", FULL_DISK, str(tmp_path)],
        capture_output=True,
        text=True,
        timeout=WAIT * 3,
        check=False,
        cwd=Path(__file__).resolve().parent.parent,
    )
    if done.returncode and "mount" in done.stderr and "permission" in done.stderr.lower():
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result == {
        "first": True,
        "full": False,
        "failed": True,
        "readable": True,
        "again": True,
        "events": [
            "history_log_failed",
            "history_unavailable",
            "history_log_resumed",
            "history_writes_resumed",
        ],
    }


def test_hostile_contents_of_the_file_never_raise(stores: Any, tmp_path: Path) -> None:
    """Batches and entries this code did not write are skipped; a bad retention mark makes
    the file damaged."""
    store = stores()
    said = say(store, 2)
    store.close()
    path = tmp_path / "history.db"
    newer = said[-1].id.ms + 1
    one = struct.pack("<d", 1.0)
    batches = [
        ("not json", one),
        ('{"a": 1}', one),
        ("[" * 100_000 + "]" * 100_000, one),
        (f'[[{newer}, 0], ["whisper"], ["eve"], ["psst"], [""]]', one),
        (f'[[{newer}, 1], ["message"], ["eve"], ["psst"], [""]]', struct.pack("<d", math.inf)),
        (f'[[{newer}, 2], ["message"], ["eve"], ["psst"], [""]]', b"short"),
        (f'[[{newer}, 3, 7, 1], ["message", "x"], [7, "e"], ["psst", 1], ["", ""]]', one * 2),
        (f'[[{newer}, 4], ["message"], ["eve"], ["psst"], []]', one),
        (f'[[{newer}, 5, 6], ["message"], ["eve"], ["psst"], [""]]', one),
        (f'[[[{newer}, 6]], ["message"], ["eve"], ["psst"], [""]]', one),
        ('[{"a": 1, "b": 2}, ["message"], ["eve"], ["psst"], [""]]', one),
        ("[1, 2, 3, 4, 5]", one),
    ]

    # A good part followed by one that does not decode, or whose times are missing: the
    # good part's entry is read, and nothing after it.
    def good(ms: int) -> str:
        return f'[{ms}, 0], ["message"], ["eve"], ["kept"], [""]'

    lost = f'[{newer + 3}, 0], ["message"], ["eve"], ["lost"]'
    tails = [
        (newer + 1, f"[[{good(newer + 1)}], [{lost}]]", one * 2),
        (newer + 2, f'[[{good(newer + 2)}], [{lost}, [""]]]', one),
    ]
    kept = [
        Entry(MessageId(ms, 0), 1.0, Kind.MESSAGE, "eve", "kept") for ms in (newer + 1, newer + 2)
    ]
    with sqlite3.connect(path) as db:
        db.executemany(
            "INSERT INTO batches VALUES (?, 0, ?, 9, 1, ?, ?)",
            [(newer, newer, f"[{body}]", times) for body, times in batches],
        )
        db.executemany(
            "INSERT INTO batches VALUES (?, 0, ?, 9, 2, ?, ?)",
            [(ms, ms, body, times) for ms, body, times in tails],
        )
        with pytest.raises(sqlite3.IntegrityError):
            db.execute("INSERT INTO batches VALUES ('x', 0, 0, 0, 1, '[]', x'')")
    again = stores()
    assert again.last(10) == said + kept
    assert again.after(ORIGIN).entries == said + kept
    assert again.query(10) == said + kept
    assert again.purge("eve") == 2
    again.close()
    with sqlite3.connect(path) as db:
        db.execute("INSERT INTO meta VALUES ('trimmed_through', 'garbage')")
    assert stores().last(10) == []
    assert len(list(tmp_path.glob("history.db.corrupt-*[0-9]"))) == 1


#: The file's layout before batches (schema 0), as lanchatd 0.x wrote it.
SCHEMA_0 = """
CREATE TABLE entries (
    ms INTEGER NOT NULL,
    seq INTEGER NOT NULL,
    at REAL NOT NULL,
    kind TEXT NOT NULL,
    nick TEXT NOT NULL,
    nick_key TEXT NOT NULL,
    text TEXT NOT NULL,
    reason TEXT NOT NULL,
    PRIMARY KEY (ms, seq)
) STRICT, WITHOUT ROWID;
CREATE TABLE meta (name TEXT PRIMARY KEY, value TEXT NOT NULL) STRICT;
"""


def test_a_file_of_the_old_schema_is_migrated_with_every_entry(stores: Any, tmp_path: Path) -> None:
    """A row per entry (schema 0) becomes batches on open: every entry, id, time and kind
    is kept, and so is the retention mark; a row of an unknown kind is left behind."""
    kinds = list(Kind)
    old = [
        Entry(
            MessageId(1_700_000_000_000 + i // 3, i % 3),
            1_700_000_000 + i / 3000,
            kinds[i % len(kinds)],
            f"nick{i % 7}",
            f"line {i} é✓",
            "quit" if i % 5 else "",
        )
        for i in range(2500)
    ]
    path = tmp_path / "history.db"
    with contextlib.closing(sqlite3.connect(path)) as db, db:
        db.executescript(SCHEMA_0)
        db.executemany(
            "INSERT INTO entries VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            [
                (e.id.ms, e.id.seq, e.at, e.kind.value, e.nick, e.nick, e.text, e.reason)
                for e in old
            ],
        )
        db.execute(
            "INSERT INTO entries VALUES (1800000000000, 0, 0.0, 'whisper', 'e', 'e', '', '')"
        )
        db.execute("INSERT INTO meta VALUES ('trimmed_through', '1699999999999-4')")
    clock = Clock(1_700_000_100.0)
    store = stores(clock=clock)
    mark = MessageId(1_699_999_999_999, 4)
    assert store.after(mark).entries == old
    assert store.query(5000) == old
    assert store.last(20) == old[-20:]
    assert store.after(MessageId(1_699_999_999_999, 3)).too_old
    assert store.newest() == old[-1].id
    later = say(store, 3)
    assert later[0].id > old[-1].id
    store.close()
    with contextlib.closing(sqlite3.connect(path)) as db:
        assert db.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)
        assert db.execute("SELECT count(*), sum(count) FROM batches").fetchone() == (4, 2503)
    assert stored(path) == rows(old + later)
    assert stores(clock=clock).after(mark).entries == old + later


def test_a_file_of_a_newer_schema_is_set_aside(
    stores: Any, tmp_path: Path, logs: list[MutableMapping[str, Any]]
) -> None:
    path = tmp_path / "history.db"
    with contextlib.closing(sqlite3.connect(path)) as db:
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    store = stores()
    assert say(store, 1) == store.last(5)
    (event,) = events(logs, "history_corrupt")
    assert "newer" in event["error"]
    assert len(list(tmp_path.glob("history.db.corrupt-*[0-9]"))) == 1


def test_two_damaged_files_in_one_second_are_both_kept(stores: Any, tmp_path: Path) -> None:
    clock = Clock()
    for content in (b"first garbage" * 100, b"second garbage" * 100):
        (tmp_path / "history.db").write_bytes(content)
        stores(clock=clock).close()
    kept = sorted(p.read_bytes()[:6] for p in tmp_path.glob("history.db.corrupt-*[0-9]"))
    assert kept == [b"first ", b"second"]


def test_a_lone_surrogate_is_stored_replaced_and_blocks_nothing(
    stores: Any, tmp_path: Path
) -> None:
    store = stores(batch_interval=NEVER)
    odd = store.append(Kind.MESSAGE, "alice", "caf\udce9")
    after = say(store, 2)
    assert store.commit_through(after[-1].id)
    assert stored(tmp_path / "history.db") == [
        (odd.id.ms, odd.id.seq, "alice", "caf\ufffd"),
        *rows(after),
    ]


class BrokenClock(Clock):
    """A clock that fails in the writer thread's hands (the retention sweep) once told to."""

    broken = False

    def __call__(self) -> float:
        if self.broken and threading.current_thread().name == "history":
            raise RuntimeError("clock broke")
        return self.now


def test_an_error_in_the_writer_thread_is_logged_and_it_goes_on(
    stores: Any, tmp_path: Path, logs: list[MutableMapping[str, Any]]
) -> None:
    clock = BrokenClock()
    clock.broken = True
    store = stores(clock=clock, sweep_interval=0.01, retry_interval=0.01)
    wait_until(lambda: len(events(logs, "history_error")) >= 2, what="the error, twice")
    assert events(logs, "history_error")[0]["log_level"] == "error"
    clock.broken = False
    said = say(store, 3)
    wait_until(lambda: len(stored(tmp_path / "history.db")) == 3, what="writes after it")
    assert store.last(5) == said


LOGGING_CHILD = """
import sys, structlog
from pathlib import Path
from lanchatd.daemon.history import History, Kind
structlog.configure(logger_factory=structlog.PrintLoggerFactory(sys.stderr))
store = History(Path(sys.argv[1]), structlog.get_logger(), batch_interval=float(sys.argv[2]))
for i in range(10**9):
    entry = store.append(Kind.MESSAGE, "eve" if i < 5 else "alice", str(i))
    if i % 10 == 9:
        assert store.secure_through(entry.id)
        print("delivered", entry.id, flush=True)
    if i == 99 and sys.argv[3] == "purge":
        store.purge("eve")
        print("purged", flush=True)
"""


def log_bytes(directory: Path) -> int:
    """Bytes in the log's segments (history.db-log.<n>)."""
    return sum(path.stat().st_size for path in directory.glob("history.db-log.*"))


def killed_while_delivering(path: Path, batch_interval: str, purge: bool = False) -> str:
    """Run LOGGING_CHILD until it delivered 30 rounds (after its purge), then SIGKILL it;
    the id of the last round it delivered."""
    child = python(LOGGING_CHILD, str(path), batch_interval, "purge" if purge else "-")
    assert child.stdout is not None
    try:
        lines = [child.stdout.readline() for _ in range(31 if purge else 30)]
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait(WAIT)
    assert lines[-1].startswith("delivered "), lines
    return lines[-1].split()[1]


@pytest.mark.parametrize("batch_interval", ["3600", "0.005"])
def test_after_kill_9_every_entry_a_round_secured_is_committed_at_the_next_start(
    stores: Any, tmp_path: Path, logs: list[MutableMapping[str, Any]], batch_interval: str
) -> None:
    """secure_through writes the log only; the next start commits what SQLite lacked."""
    path = tmp_path / "history.db"
    delivered = killed_while_delivering(path, batch_interval)
    assert log_bytes(tmp_path) > 0
    if batch_interval == "3600":
        assert stored(path) == [], "nothing committed: all of it is in the log"
    store = stores()
    kept = store.after(ORIGIN).entries
    assert [entry.text for entry in kept] == [str(i) for i in range(len(kept))], "in order"
    assert delivered in [str(entry.id) for entry in kept]
    assert rows(kept) == stored(path), "committed at the start"
    assert log_bytes(tmp_path) == 0, "removed once committed"
    store.close()
    assert list(tmp_path.glob("history.db-log*")) == []
    replayed = events(logs, "history_log_replayed")
    assert len(replayed) == 1
    assert events(logs, "history_log_torn") == []


def test_a_torn_last_record_in_the_log_is_ignored(
    stores: Any, tmp_path: Path, logs: list[MutableMapping[str, Any]]
) -> None:
    path = tmp_path / "history.db"
    delivered = killed_while_delivering(path, "3600")
    (segment,) = tmp_path.glob("history.db-log.*")
    with segment.open("ab") as log:
        log.write(b"\x40\x00\x00\x00\x01\x02\x03\x04half a record")
    kept = stores().after(ORIGIN).entries
    assert delivered in [str(entry.id) for entry in kept]
    assert [entry.text for entry in kept] == [str(i) for i in range(len(kept))], "in order"
    ((torn,),) = [[event["ignored_bytes"]] for event in events(logs, "history_log_torn")]
    assert torn == 21


def test_words_purged_never_come_back_from_the_log_after_kill_9(
    stores: Any, tmp_path: Path
) -> None:
    path = tmp_path / "history.db"
    delivered = killed_while_delivering(path, "3600", purge=True)
    kept = stores().after(ORIGIN).entries
    assert delivered in [str(entry.id) for entry in kept]
    assert [entry.text for entry in kept[:3]] == ["5", "6", "7"]
    assert {entry.nick for entry in kept} == {"alice"}


def test_a_segment_of_the_log_goes_once_it_is_full_and_all_committed(
    stores: Any, tmp_path: Path
) -> None:
    store = stores(batch_interval=NEVER)
    said = say(store, 3)
    assert store.secure_through(said[-1].id)
    assert stored(tmp_path / "history.db") == []
    size = log_bytes(tmp_path)
    assert size > 0
    assert store.secure_through(said[0].id), "already secured: nothing written"
    assert log_bytes(tmp_path) == size
    assert store.commit_through(said[-1].id)
    assert log_bytes(tmp_path) == size, "the segment in use stays"
    big = [store.append(Kind.MESSAGE, "alice", f"{n:03}" + "x" * 3997) for n in range(300)]
    assert store.secure_through(big[-1].id)
    more = say(store, 1)
    assert store.secure_through(more[-1].id)
    assert sorted(p.name for p in tmp_path.glob("history.db-log.*")) == [
        "history.db-log.1",
        "history.db-log.2",
    ], "the full one stays until committed"
    assert store.commit_through(more[-1].id)
    assert [p.name for p in tmp_path.glob("history.db-log.*")] == ["history.db-log.2"]
    assert stored(tmp_path / "history.db") == rows(said + big + more)


def test_the_writer_thread_commits_what_was_secured_within_a_batch_interval(
    stores: Any, tmp_path: Path
) -> None:
    store = stores(batch_interval=0.05)
    said = say(store, 2)
    assert store.secure_through(said[-1].id)
    wait_until(lambda: store.unsaved_count() == 0, what="the writer's commit")
    assert stored(tmp_path / "history.db") == rows(said)
    assert store.counters.committed == 2


def test_a_segment_that_cannot_be_read_is_reported_and_the_rest_of_the_log_used(
    stores: Any, tmp_path: Path, logs: list[MutableMapping[str, Any]]
) -> None:
    target = tmp_path / "elsewhere"
    target.write_bytes(b"precious")
    (tmp_path / "history.db-log.1").symlink_to(target)
    (tmp_path / "history.db-log.\u00b2").write_bytes(b"not a segment")
    store = stores(batch_interval=NEVER)
    said = say(store, 3)
    assert store.secure_through(said[-1].id)
    assert stored(tmp_path / "history.db") == [], "in the log, not committed"
    (event,) = events(logs, "history_log_failed")
    assert event["path"] == str(tmp_path / "history.db-log.1")
    assert "symbolic links" in event["error"]
    assert log_bytes(tmp_path) > 0
    assert target.read_bytes() == b"precious"


def test_when_the_log_cannot_be_written_rounds_commit_to_the_file(
    stores: Any, tmp_path: Path, logs: list[MutableMapping[str, Any]], immutable: Any
) -> None:
    store = stores(batch_interval=NEVER)
    first = say(store, 2)
    assert store.secure_through(first[-1].id)
    (segment,) = tmp_path.glob("history.db-log.*")
    immutable(segment)
    said = say(store, 3, start=2)
    assert store.secure_through(said[-1].id)
    assert stored(tmp_path / "history.db") == rows(first + said)
    (event,) = events(logs, "history_log_failed")
    assert event["path"] == str(tmp_path / "history.db-log")
    assert store.unsaved_count() == 0
    subprocess.run(["chattr", "-i", str(segment)], check=True)


def crash_copy(source: Path, destination: Path) -> Path:
    """The history files as a ``kill -9`` now would leave them (the store keeps running)."""
    destination.mkdir()
    for path in source.glob("history.db*"):
        if path.name != "history.db-shm":
            shutil.copy2(path, destination / path.name)
    return destination / "history.db"


def test_a_round_whose_log_write_failed_is_written_with_the_next_one(
    stores: Any, tmp_path: Path, immutable: Any
) -> None:
    """Neither the log nor the file could take round A; round B's write carries A too."""
    store = stores(batch_interval=NEVER, retry_interval=NEVER)
    first = say(store, 2)
    assert store.secure_through(first[-1].id)
    assert store.commit_through(first[-1].id)
    (segment,) = tmp_path.glob("history.db-log.*")
    for path in (segment, tmp_path / "history.db-wal"):
        immutable(path)
    round_a = say(store, 2, start=2)
    assert not store.secure_through(round_a[-1].id)
    for path in (segment, tmp_path / "history.db-wal"):
        subprocess.run(["chattr", "-i", str(path)], check=True)
    round_b = say(store, 2, start=4)
    assert store.secure_through(round_b[-1].id)
    copy = crash_copy(tmp_path, tmp_path / "crashed")
    again = History(copy, structlog.get_logger())
    try:
        assert again.after(ORIGIN).entries == first + round_a + round_b
    finally:
        again.close()


def test_a_file_that_opens_late_gets_no_entry_twice(
    stores: Any, tmp_path: Path, logs: list[MutableMapping[str, Any]], immutable: Any
) -> None:
    """The file cannot be opened at start; the log's replay puts entries the file holds
    back in memory; once the file opens, only the others are committed."""
    store = stores(batch_interval=NEVER)
    committed = say(store, 3)
    assert store.secure_through(committed[-1].id)
    assert store.commit_through(committed[-1].id)
    logged = say(store, 2, start=3)
    assert store.secure_through(logged[-1].id)
    path = crash_copy(tmp_path, tmp_path / "crashed")
    immutable(path.parent)  # SQLite cannot make the -shm file: the file does not open
    late = stores(path=path, retry_interval=0.05, batch_interval=0.01)
    assert events(logs, "history_unavailable")
    assert late.last(10) == committed + logged
    subprocess.run(["chattr", "-i", str(path.parent)], check=True)
    wait_until(lambda: late.unsaved_count() == 0, what="the late commit")
    assert stored(path) == rows(committed + logged)


def test_a_file_opened_read_only_is_opened_again_once_it_can_be_written(
    stores: Any, tmp_path: Path, logs: list[MutableMapping[str, Any]], immutable: Any
) -> None:
    """SQLite opens a file it cannot write read-only and keeps it so: the store reopens it."""
    store = stores()
    said = say(store, 2)
    store.close()
    (tmp_path / "history.db-wal").write_bytes(b"")  # a clean close removed it
    immutable(tmp_path / "history.db-wal")
    again = stores(retry_interval=0.05, batch_interval=0.01)
    more = say(again, 2, start=2)
    wait_until(lambda: again.counters.failed_writes >= 1, what="a failed write")
    subprocess.run(["chattr", "-i", str(tmp_path / "history.db-wal")], check=True)
    wait_until(lambda: again.unsaved_count() == 0, what="the writes to resume")
    assert stored(tmp_path / "history.db") == rows(said + more)
    assert len(events(logs, "history_writes_resumed")) == 1


def test_a_replayed_id_beyond_sqlite_integers_is_skipped(stores: Any, tmp_path: Path) -> None:
    store = stores()
    said = say(store, 1)
    store.close()
    log = AppendLog(tmp_path / "history.db-log")
    log.open()
    newer = said[0].id.ms + 1
    for ms in (2**63, newer):
        body = json.dumps([[ms, 0], ["message"], ["eve"], ["psst"], [""]]).encode()
        log.append(struct.pack("<I", len(body)) + body + struct.pack("<d", 1.0), said[0].id)
    log.close()
    again = stores()
    assert [(e.id.ms, e.text) for e in again.after(ORIGIN).entries] == [
        (said[0].id.ms, said[0].text),
        (newer, "psst"),
    ]


def test_hostile_records_in_the_log_are_skipped_without_allocating_what_they_claim(
    stores: Any, tmp_path: Path
) -> None:
    """A record with a valid checksum whose sizes claim billions of runs and texts (a
    ``marshal`` payload like it made the reader allocate ~16 GB): skipped, the record after
    it read."""
    store = stores(batch_interval=NEVER)
    said = say(store, 1)
    store.close()
    log = AppendLog(tmp_path / "history.db-log")
    log.open()
    huge = struct.pack("<II", 2**31 - 1, 2**32 - 1)
    as_marshal = b"(" + struct.pack("<i", 2**31 - 1)  # a tuple of 2**31 - 1 items
    for payload in (huge, huge + bytes(64), b"\x01", as_marshal):
        log.append(bytes(4) + payload, said[0].id)
    other = stores(path=tmp_path / "other" / HISTORY_FILE_NAME, batch_interval=NEVER)
    later = other.append(Kind.MESSAGE, "bob", "after them")
    assert other.secure_through(later.id)
    (segment,) = (tmp_path / "other").glob("history.db-log.*")
    log.append(segment.read_bytes()[8:], later.id)  # past its length and checksum
    log.close()
    started = time.monotonic()
    again = stores()
    assert time.monotonic() - started < WAIT
    assert again.after(ORIGIN).entries == [*said, later]


def test_what_the_file_cannot_take_by_the_stop_waits_in_the_log(
    stores: Any, tmp_path: Path, logs: list[MutableMapping[str, Any]], immutable: Any
) -> None:
    store = stores(batch_interval=NEVER, retry_interval=NEVER)
    first = say(store, 2)
    assert store.commit_through(first[-1].id)
    immutable(tmp_path / "history.db-wal")
    rest = say(store, 4, start=2)
    assert store.secure_through(rest[-1].id), "the log took them"
    store.close()
    assert store.counters.lost == 0
    (left,) = events(logs, "history_left_in_log")
    assert left["count"] == 4
    assert events(logs, "history_lost") == []
    subprocess.run(["chattr", "-i", str(tmp_path / "history.db-wal")], check=True)
    again = stores()
    assert again.last(10) == first + rest
    assert stored(tmp_path / "history.db") == rows(first + rest)


#: The tables of schemas 1 and 2 (3 kept them).
OLD_TABLES = """
CREATE TABLE batches (
    first_ms INTEGER NOT NULL, first_seq INTEGER NOT NULL,
    last_ms INTEGER NOT NULL, last_seq INTEGER NOT NULL,
    count INTEGER NOT NULL, body TEXT NOT NULL, times BLOB NOT NULL
) STRICT;
CREATE TABLE meta (name TEXT PRIMARY KEY, value TEXT NOT NULL) STRICT;
"""


def old_schema(part: str, joined: str, version: int) -> str:
    """Schema 1's or 2's layout: a row's ``part`` (columns ``[ids, kinds, nicks, texts,
    reasons]``) from the batches ``joined`` with json_each."""
    return (
        OLD_TABLES
        + f"""
CREATE VIEW entries (ms, seq, kind, nick, text, reason) AS
SELECT json_extract({part}, '$[0][' || (2 * i.key) || ']'),
       json_extract({part}, '$[0][' || (2 * i.key + 1) || ']'),
       i.value,
       json_extract({part}, '$[2][' || i.key || ']'),
       json_extract({part}, '$[3][' || i.key || ']'),
       json_extract({part}, '$[4][' || i.key || ']')
FROM {joined};
PRAGMA user_version = {version};
"""
    )


def old_columns(batch: list[Entry]) -> list[list[Any]]:
    """``batch`` as a part of schemas 1 and 2."""
    return [
        [n for e in batch for n in e.id],
        [e.kind.value for e in batch],
        [e.nick for e in batch],
        [e.text for e in batch],
        [e.reason for e in batch],
    ]


#: Schema 1: a row's body was one part.
SCHEMA_1 = old_schema("b.body", "batches AS b, json_each(b.body, '$[1]') AS i", 1)


def test_a_file_of_schema_1_is_migrated_with_every_entry(stores: Any, tmp_path: Path) -> None:
    """Rows whose body is one part become rows of one part in a list; the view shows them."""
    old = [
        Entry(MessageId(1_700_000_000_000 + i, 0), 1_700_000_000 + i, Kind.MESSAGE, "bo", f"{i} é")
        for i in range(30)
    ]
    path = tmp_path / "history.db"
    with contextlib.closing(sqlite3.connect(path)) as db, db:
        db.executescript(SCHEMA_1)
        for batch in (old[:10], old[10:]):
            columns = old_columns(batch)
            times = struct.pack(f"<{len(batch)}d", *(e.at for e in batch))
            first, last = batch[0].id, batch[-1].id
            db.execute(
                "INSERT INTO batches VALUES (?, ?, ?, ?, ?, ?, ?)",
                (*first, *last, len(batch), json.dumps(columns), times),
            )
    store = stores()
    assert store.after(ORIGIN).entries == old
    store.close()
    with contextlib.closing(sqlite3.connect(path)) as db:
        assert db.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)
    assert stored(path) == rows(old)


#: Schema 2: a row's body was a list of parts.
SCHEMA_2 = old_schema(
    "p.value", "batches AS b, json_each(b.body) AS p, json_each(p.value, '$[1]') AS i", 2
)


def test_a_file_of_schema_2_is_migrated_to_runs_with_every_entry(
    stores: Any, tmp_path: Path
) -> None:
    """Rows whose body is a list of column parts become rows of runs: lines one append made
    together (one millisecond, time, kind and nickname, consecutive ids) become one run."""
    at = 1_700_000_000.5
    together = [
        Entry(MessageId(1_700_000_000_500, seq), at, Kind.MESSAGE, "bo", f"{seq} é")
        for seq in range(5)
    ]
    apart = [
        Entry(MessageId(1_700_000_001_000 + i, 0), 1_700_000_001 + i, Kind.JOIN, f"n{i}")
        for i in range(3)
    ]
    old = together + apart
    path = tmp_path / "history.db"
    with contextlib.closing(sqlite3.connect(path)) as db, db:
        db.executescript(SCHEMA_2)
        parts = [old_columns(batch) for batch in (old[:3], old[3:])]
        times = struct.pack(f"<{len(old)}d", *(e.at for e in old))
        db.execute(
            "INSERT INTO batches VALUES (?, ?, ?, ?, ?, ?, ?)",
            (*old[0].id, *old[-1].id, len(old), json.dumps(parts), times),
        )
    store = stores()
    assert store.after(ORIGIN).entries == old
    store.close()
    with contextlib.closing(sqlite3.connect(path)) as db:
        assert db.execute("PRAGMA user_version").fetchone() == (SCHEMA_VERSION,)
        (body,) = db.execute("SELECT body FROM batches").fetchone()
    assert json.loads(body) == [
        [list(together[0].id), "message", "bo", "", [e.text for e in together]],
        *([list(e.id), "join", e.nick, "", [""]] for e in apart),
    ]
    assert stored(path) == rows(old)


def test_a_recorded_id_beyond_sqlite_integers_is_not_kept(stores: Any, tmp_path: Path) -> None:
    """A cluster's stream may hold ids SQLite cannot store (Redis allows 64 bits unsigned):
    such an entry is refused, never left in memory to make every later commit raise."""
    store = stores(batch_interval=NEVER)
    said = say(store, 1)
    for ms, seq in ((2**63, 0), (said[0].id.ms, 2**63)):
        beyond = Entry(MessageId(ms, seq), said[0].at, Kind.MESSAGE, "eve", "psst")
        assert store.record(beyond) is None
    newer = Entry(MessageId(said[0].id.ms + 1, 0), said[0].at, Kind.MESSAGE, "bob", "hi")
    assert store.record(newer) == newer.id
    assert store.commit_through(newer.id)
    store.close()
    assert stored(tmp_path / "history.db") == rows([*said, newer])
