"""The room's history: every event the whole room sees, with an id, kept in SQLite.

Why it is shaped this way:

- **Ids.** A :class:`MessageId` is ``<ms>-<seq>``, exactly a Redis stream id: the
  millisecond of the server clock, and a sequence within it. Ids only grow, also when the
  clock steps back (the last id's millisecond is kept and ``seq`` counts on), and across
  restarts (the newest id is read back from the file). A later issue puts the room's log in
  a Redis stream whose entry ids take this place unchanged.
- **Off the hot path.** :meth:`History.append_many` is called under the room lock for a
  client's lines from one read: it assigns their ids and keeps them as one :class:`Run` (a
  tuple: the shared kind, nickname, time and reason, the texts, the first id), nothing
  more; entries are made only for reads. :meth:`History.secure_through` lets the delivery
  thread make a round's entries durable before sending them, so no client can receive an
  event that a ``kill -9`` then loses: one ``write()`` of the runs not yet secured, in
  binary columns (C loops, no JSON), to an append-only log beside the file (appendlog.py,
  ``history.db-log.<n>``), ~0.3 µs an entry under load. Committing them to SQLite there
  instead cost ~15 µs of fixed cost per round (WAL locks, a page write) and 0.1-0.4 ms of
  wall time on an idle CPU, which small rooms, with a few messages a round, paid on every
  message. The store's writer thread commits to
  SQLite what waited ``BATCH_INTERVAL`` (50 ms): under load ~20 commits a second, each a
  few large rows (SQLite runs without the GIL; a commit of many small rows waited for the
  GIL after each, and committing in the delivery thread stalled every client for the
  commit's milliseconds). Each commit removes the log's segments
  (``LOG_SEGMENT_BYTES`` each) that the file now holds all of. At start the log's entries
  newer than the file's are committed (a torn last record, from a process killed
  mid-write, is ignored); a clean stop commits everything and removes the log. Both a
  ``write()`` to the log and a WAL commit with ``synchronous=NORMAL`` survive the process
  dying (not a power cut). Without a usable log a round commits to SQLite before it is
  sent.
- **Reads see everything appended, mostly without the file.** The newest ``MAX_READ``
  entries (committed or not) are also kept in memory, and a read whose answer lies within
  them (every on-join replay, ``/history``, a resume from a recent id) is served from there:
  opening a connection and querying per join made 1000 joins take twice as long. Retention,
  purges and lost writes change that copy with the file. Older reads go to the file, with
  the uncommitted entries from memory, so a client resuming right after a message misses
  nothing.
- **A row per batch, not per entry; JSON once, in the writer.** A commit encodes its runs
  into rows of ``ROW_ENTRIES`` or more: the first and last ids, the count, ``body`` a JSON
  list of the runs (each ``[[ms, seq], kind, nick, reason, [texts]]``, all encoded in one
  C call, what a run's entries share once) and ``times`` the entries' times as
  little-endian doubles. (JSON per round in the delivery thread cost ~1 µs an entry there;
  a 50 ms batch at once in the delivery thread cost 15 % of the deliveries at 10 clients.)
  A row per entry cost a B-tree insert per entry and a GIL hand-off per row inside
  ``executemany``, then a delete per entry at retention, all of it CPU the room's threads
  needed: history took ~9 µs of server CPU per chat message against ~7 µs for all the
  rest. Now what the file costs is per commit (under load ~100 entries) and the JSON per
  entry. Reads decode whole batches: the daemon reads the file only for what is older than
  its recent entries in memory, and the admin's queries are rare. No index: batches are
  inserted in id order, so rowid order is id order (a second B-tree cost every commit a
  WAL frame and ~3 µs). Reads walk the batches from the newest back and stop at the first
  one not wanted; retention walks from the oldest (it reads what it removes, not all that
  is kept) and deletes a range of rowids; times are compared as the id's millisecond
  (``--since`` and ``keep_days`` alike); a nickname filter (purge, the admin query)
  decodes the batches kept. Retention deletes whole
  batches and rewrites the one that straddles the mark, so the file holds exactly the
  newest ``keep``; a purge rewrites the batches that hold the nickname. The view
  ``entries`` shows the entries one by one (without their times) to people reading the
  file with ``sqlite3``.
- **Upgrades keep history.** ``PRAGMA user_version`` says the layout: a file of schema 0
  (a row per entry), 1 or 2 (a row's body columns of entries) is migrated on open in one
  transaction; a file of a newer schema than this code knows is set aside like a damaged
  one (renamed, never deleted).
- **Failures never reach the room.** A corrupt or unreadable file is set aside (renamed,
  never deleted) and the store starts empty; a file that cannot be written (full disk,
  read-only directory) leaves appends working in memory (the newest ``keep`` of them), the
  failed writes counted and logged once per episode, and retried.

Private messages are never stored: there is no kind for them.
"""

from __future__ import annotations

import collections
import contextlib
import enum
import itertools
import json
import math
import operator
import os
import re
import sqlite3
import stat
import struct
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, NamedTuple

from lanchatd.core.nicknames import nick_key
from lanchatd.core.tags import ORIGIN, MessageId
from lanchatd.daemon.appendlog import AppendLog
from lanchatd.daemon.logs import Logger

#: Most entries one ``/history N`` or on-join replay may ask for.
MAX_READ: Final = 500
#: How long the writer thread lets appended entries wait before committing them (seconds):
#: every commit has a fixed cost (~15 µs); the log keeps them safe meanwhile.
BATCH_INTERVAL: Final = 0.05
#: Bytes in a segment of the log (history.db-log.<n>) before the next round starts a new one;
#: a segment goes once the file holds all of it.
LOG_SEGMENT_BYTES: Final = 1 << 20
#: Bytes the log may reach while the file cannot be written before it is rewritten with only
#: what memory still holds (the newest ``keep``).
LOG_MAX_BYTES: Final = 64 << 20
#: Most entries in a part, and fewest in a row (but a commit's last): a commit's rows are
#: few (SQLite inserts them without the GIL, taking it back between rows), and a resume
#: from an old id decodes at most a row more than it wants (~2 ms).
ROW_ENTRIES: Final = 2048
#: SQLite's page size for a new file. A row (2048 entries or more, ~100 KiB) is a chain of
#: overflow pages: with 32 KiB pages the writer's commits, checkpoints and retention cost
#: ~25 % less CPU than with the default 4 KiB (0.42 against 0.56 µs an entry at 80,000
#: entries a second, in process).
PAGE_SIZE: Final = 32768
#: How often the writer thread copies the WAL into the database file (seconds).
CHECKPOINT_INTERVAL: Final = 0.5
#: WAL frames (pages) beyond which a checkpoint is completed under the write lock, so the
#: WAL starts over: SQLite's own automatic checkpoint threshold.
WAL_RESTART_FRAMES: Final = 1000
#: How often retention is enforced (seconds): well within the promised minute.
SWEEP_INTERVAL: Final = 30.0
#: How soon a sweep follows the file passing ``keep``, or new limits (seconds); also the
#: least time between two such sweeps, so a full store costs one delete a second at most.
PROMPT_SWEEP: Final = 1.0
#: Rows a sweep deletes per transaction (a few ms of work).
SWEEP_CHUNK: Final = 1000
#: How long after a failed write (or open) the writer tries again (seconds).
RETRY_INTERVAL: Final = 5.0
#: sqlite3 error codes that mean the file itself is damaged, not merely unwritable now.
_DAMAGED: Final = frozenset({sqlite3.SQLITE_CORRUPT, sqlite3.SQLITE_NOTADB, sqlite3.SQLITE_FORMAT})

#: The file's layout, in ``PRAGMA user_version``: 0 was one row per entry, 1 a row's body
#: one part of columns, 2 a list of such parts (all migrated on open); 3 a list of runs.
SCHEMA_VERSION: Final = 3
#: Entries per batch when a file of schema 0 is migrated.
MIGRATE_BATCH: Final = 1000
_SCHEMA: Final = """
CREATE TABLE IF NOT EXISTS batches (
    first_ms INTEGER NOT NULL,
    first_seq INTEGER NOT NULL,
    last_ms INTEGER NOT NULL,
    last_seq INTEGER NOT NULL,
    count INTEGER NOT NULL,
    body TEXT NOT NULL,
    times BLOB NOT NULL
) STRICT;
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT NOT NULL) STRICT;
"""
#: The entries one by one (but their times), for people reading the file with ``sqlite3``;
#: the daemon reads the batches itself.
_VIEW: Final = """
CREATE VIEW IF NOT EXISTS entries (ms, seq, kind, nick, text, reason) AS
SELECT json_extract(p.value, '$[0][0]'),
       json_extract(p.value, '$[0][1]') + t.key,
       json_extract(p.value, '$[1]'),
       json_extract(p.value, '$[2]'),
       t.value,
       json_extract(p.value, '$[3]')
FROM batches AS b, json_each(b.body) AS p, json_each(p.value, '$[4]') AS t;
"""
_INSERT: Final = "INSERT INTO batches VALUES (?, ?, ?, ?, ?, ?, ?)"
#: Batches newest first: rowid order is id order (each batch is inserted after all older).
_NEWEST_FIRST: Final = "ORDER BY rowid DESC"
#: SQLite's largest rowid.
_MAX_ROWID: Final = 2**63 - 1
#: A named tuple made without its Python ``__new__``: a third of the cost.
_new: Final = tuple.__new__
#: A log record's body length, before the body and the times.
_LENGTH: Final = struct.Struct("<I")
_TIME: Final = struct.Struct("<d")
#: What starts a log record of this version (see _records), and its counts.
_BINARY: Final = bytes(4)
_COUNTS: Final = struct.Struct("<II")
#: Runs in a log record at most (a round's are far fewer).
_RECORD_RUNS: Final = 1024
_flat: Final = itertools.chain.from_iterable
_SURROGATE: Final = re.compile("[\ud800-\udfff]")
#: A batch's entries as JSON, a column a field: ``[ids, kinds, nicks, texts, reasons]``,
#: the ids flat, ``[ms, seq, ms, seq, …]`` (an array per id cost half of an entry's
#: encoding), the rest as they are (a Kind is a string), all encoded in C. Their times
#: are the ``times`` column, little-endian doubles: a float costs json more than the rest
#: of an entry, and is kept exactly this way.
_encode: Final = json.JSONEncoder(
    ensure_ascii=False, check_circular=False, separators=(",", ":")
).encode


class HistoryError(Exception):
    """A one-line reason an administrator's change to the history failed."""


class _Damaged(Exception):
    """The file opened but failed SQLite's integrity check."""


class Kind(enum.StrEnum):
    """What happened; only events the whole room sees."""

    MESSAGE = "message"
    ACTION = "action"
    JOIN = "join"
    LEAVE = "leave"
    KICK = "kick"
    BAN = "ban"
    NOTICE = "notice"


#: Each kind as one byte in a log record, and back.
_KIND_CODE: Final = {kind: code for code, kind in enumerate(Kind)}
_KIND_OF_CODE: Final = list(Kind)
_TEXTS: Final = operator.attrgetter("texts")


class Entry(NamedTuple):
    """One room event as kept: ``at`` is the server's time (seconds since the epoch).

    A named tuple, not a frozen dataclass: the room makes one per event under its lock,
    and a tuple is built in a third of the time, as immutable and as hashable.
    """

    id: MessageId
    at: float
    kind: Kind
    nick: str
    text: str = ""
    reason: str = ""


class Run(NamedTuple):
    """Events one call appended, kept as one tuple until something reads them.

    A client's lines from one read share a kind, a nickname, a time and a reason, and take
    consecutive ids: ``first``, then ``first.seq`` counting up within ``first.ms``. Chat
    at full speed cost an Entry and a MessageId per line under the room lock (~1 µs); a run
    costs that per read (the benchmark's senders' reads carry 32 lines). Entries are made
    for the reads that need them (on join, ``/history``, a resume), from a few runs.
    """

    first: MessageId
    at: float
    kind: Kind
    nick: str
    texts: tuple[str, ...]
    reason: str

    @property
    def last(self) -> MessageId:
        first, count = self.first, len(self.texts)
        return first if count == 1 else _new(MessageId, (first.ms, first.seq + count - 1))

    def entries(self) -> list[Entry]:
        ms, seq = self.first
        at, kind, nick, reason = self.at, self.kind, self.nick, self.reason
        return [
            _new(Entry, (_new(MessageId, (ms, seq + i)), at, kind, nick, text, reason))
            for i, text in enumerate(self.texts)
        ]

    def after(self, mark: MessageId) -> Run | None:
        """This run's entries after ``mark`` (None: none are)."""
        if mark < self.first:
            return self
        ms, seq = self.first
        if mark.ms > ms or mark.seq - seq + 1 >= len(self.texts):
            return None
        skip = mark.seq - seq + 1
        return self._replace(first=MessageId(ms, mark.seq + 1), texts=self.texts[skip:])

    @classmethod
    def of(cls, entry: Entry) -> Run:
        """A run of one entry (one read from the file or a cluster's stream)."""
        return cls(entry.id, entry.at, entry.kind, entry.nick, (entry.text,), entry.reason)


@dataclass(frozen=True, slots=True)
class Replay:
    """What a client resuming after an id is owed.

    ``entries`` are exactly the events after it, oldest first, unless ``too_old``: events
    after it were already removed by retention, and ``missed`` (at least that many events
    since) is all that can be said.
    """

    entries: list[Entry]
    too_old: bool = False
    missed: int = 0


@dataclass(slots=True)
class Counters:
    """For ``lanchatctl stats``: what could not be written, and what was lost for good."""

    failed_writes: int = 0
    lost: int = 0
    committed: int = 0


@dataclass(slots=True)
class _Limits:
    keep: int
    keep_days: float


@dataclass(slots=True)
class _Memory:
    """What the room appended that the file does not hold yet (guarded by History._lock)."""

    unsaved: list[Run] = field(default_factory=list)
    #: Entries in ``unsaved``.
    count: int = 0
    #: The newest of ``unsaved``: appended since the last round wrote them to the log (see
    #: _secure_locked), or whose write failed.
    unlogged: list[Run] = field(default_factory=list)
    last: MessageId = ORIGIN
    committed_through: MessageId = ORIGIN
    #: The newest id removed by retention: a resume from before it is too old.
    trimmed_through: MessageId = ORIGIN
    #: The newest entries kept (file and unsaved), at least MAX_READ of them if there are
    #: that many (``recent_count``), oldest first.
    recent: collections.deque[Run] = field(default_factory=collections.deque)
    recent_count: int = 0
    #: Whether ``recent`` holds every entry kept, not only the newest.
    complete: bool = True

    def keep_recent(self, runs: Iterable[Run]) -> None:
        """``runs`` (oldest first) as the recent entries."""
        self.recent = collections.deque(runs)
        self.recent_count = _size(self.recent)
        self.trim_recent()

    def trim_recent(self) -> None:
        """Drop the oldest recent runs that the newest MAX_READ entries do without."""
        recent = self.recent
        while recent and self.recent_count - len(recent[0].texts) >= MAX_READ:
            self.recent_count -= len(recent.popleft().texts)
            self.complete = False

    def forget_recent_through(self, mark: MessageId) -> None:
        """Drop the recent entries up to ``mark`` (retention removed them)."""
        recent = self.recent
        while recent and recent[0].first <= mark:
            run = recent.popleft()
            self.recent_count -= len(run.texts)
            if (rest := run.after(mark)) is not None:
                recent.appendleft(rest)
                self.recent_count += len(rest.texts)
                return


class History:
    """The store: append under the room lock, read from any thread, committed in batches."""

    def __init__(
        self,
        path: Path,
        log: Logger,
        *,
        keep: int = 10_000,
        keep_days: float = 7.0,
        clock: Callable[[], float] = time.time,
        batch_interval: float = BATCH_INTERVAL,
        sweep_interval: float = SWEEP_INTERVAL,
        retry_interval: float = RETRY_INTERVAL,
        checkpoint_interval: float = CHECKPOINT_INTERVAL,
    ) -> None:
        self.path = path
        self.log = log
        self.clock = clock
        self.counters = Counters()
        self._limits = _Limits(keep, keep_days)
        #: Set by configure(): the next sweep comes promptly.
        self._limits_changed = False
        #: Rows in the file, counted at open and kept by whoever writes (under the write lock).
        self._stored = 0
        self._memory = _Memory()
        self._lock = threading.Lock()
        #: Held while writing the file: one writer at a time, whoever calls.
        self._write_lock = threading.Lock()
        self._db: sqlite3.Connection | None = None
        #: The log of what rounds delivered before SQLite had it (see secure_through).
        self._log = AppendLog(path.with_name(path.name + "-log"))
        #: Held while writing the log: after the write lock, before ``_lock``.
        self._log_lock = threading.Lock()
        #: The newest id in the log, and whether its last write failed (under ``_log_lock``).
        self._logged_through = ORIGIN
        self._log_failing = False
        #: The log's size that next has it rewritten while SQLite cannot be written.
        self._log_limit = LOG_MAX_BYTES
        #: The writer thread's own connection for checkpoints (see _checkpoint).
        self._checkpointer: sqlite3.Connection | None = None
        #: After close(), nothing reopens or writes the file.
        self._closed = False
        self._failing = False
        self._retry_at = 0.0
        self._intervals = (batch_interval, sweep_interval, retry_interval, checkpoint_interval)
        #: When the writer last checkpointed (monotonic), and ``counters.committed`` then.
        self._checkpointed = (time.monotonic(), 0)
        self._stop = threading.Event()
        #: Set by the first append after the writer emptied the list: an idle store sleeps.
        self._wake = threading.Event()
        self._open()
        self._open_log()
        self._thread = threading.Thread(target=self._run, name="history", daemon=True)
        self._thread.start()

    # -- the room's side -------------------------------------------------------------

    def append(self, kind: Kind, nick: str, text: str = "", reason: str = "") -> Entry:
        """Record an event and return it with its id; call it in the room's order."""
        run = self.append_many(kind, nick, [text], reason)
        return _new(Entry, (run.first, run.at, kind, nick, text, reason))

    def append_many(self, kind: Kind, nick: str, texts: list[str], reason: str = "") -> Run:
        """Record an event per text, in order (a client's lines from one read), as one run
        with consecutive ids. The room calls it under its lock for every read of chat
        lines: one clock reading, one lock and one tuple, whatever the number of lines."""
        at = self.clock()
        ms = _ms(at)
        with self._lock:
            last = self._memory.last
            first = _new(MessageId, (ms, 0) if ms > last.ms else (last.ms, last.seq + 1))
            run = _new(Run, (first, at, kind, nick, tuple(texts), reason))
            self._add_locked(run, len(texts))
        return run

    def record(self, entry: Entry) -> MessageId | None:
        """Keep an entry whose id was assigned elsewhere (a cluster's stream, in its order).

        An id not above the last one is not kept (None): ids only grow. Nor is one SQLite
        cannot store (a stream's ids go to 2**64 - 1): every later commit would raise.
        """
        if max(entry.id) > _MAX_ROWID:
            return None
        with self._lock:
            if entry.id <= self._memory.last:
                return None
            self._add_locked(Run.of(entry), 1)
        return entry.id

    def _add_locked(self, run: Run, count: int) -> None:
        """Keep ``run`` (``count`` entries), the newest: to be committed, and among the
        reads' recent entries. Every way an entry comes in goes through here (the caller
        holds ``_lock``). The recent runs are trimmed once they hold twice what reads need,
        not at every append."""
        memory = self._memory
        unsaved = memory.unsaved
        memory.last = run.last
        if not unsaved:
            self._wake.set()
        unsaved.append(run)
        memory.count += count
        memory.unlogged.append(run)
        memory.recent.append(run)
        memory.recent_count += count
        if memory.recent_count >= 2 * MAX_READ:
            memory.trim_recent()

    def secure_through(self, last: MessageId) -> bool:
        """Make every entry up to ``last`` survive ``kill -9`` now, in the caller's thread.

        A delivery round calls it before sending, so what a client receives is kept: the
        runs appended since the last round are written to the log in one ``write()``.
        Without a usable log, they are committed to the file. False when neither could be
        written (the entries stay in memory, counted and logged).
        """
        memory = self._memory
        if last <= memory.committed_through or last <= self._logged_through:
            return True
        with self._log_lock:
            if self._secure_locked():
                return True
        return self.commit_through(last)

    def _secure_locked(self) -> bool:
        """Write what was appended since the last round to the log (the caller holds
        ``_log_lock``): whether all of it is now in the log or the file. A failed write's
        runs are written by the next round."""
        memory = self._memory
        with self._lock:
            batch, memory.unlogged = memory.unlogged, []
            committed = memory.committed_through
        if not self._log.is_open:
            return False
        if batch and batch[0].last <= committed:  # the writer committed them meanwhile
            batch = [run for run in batch if run.last > committed]
        if not batch:
            return True
        try:
            if self._log.total > self._log_limit and self._write_lock.acquire(blocking=False):
                # The file is failing: keep what memory keeps. Only with the write lock (never
                # waited for here): a commit under way counts the runs it took.
                try:
                    self._rewrite_log_locked()
                finally:
                    self._write_lock.release()
            else:
                if self._log.size >= LOG_SEGMENT_BYTES:
                    self._log.rotate()
                for record, mark in _records(batch):
                    self._log.append(record, mark)
                    self._logged_through = mark
        except OSError as error:
            with self._lock:
                memory.unlogged[:0] = [run for run in batch if run.last > self._logged_through]
            if not self._log_failing:
                self._log_failing = True
                self.log.error("history_log_failed", path=str(self._log.stem), error=str(error))
            return False
        if self._log_failing:
            self._log_failing = False
            self.log.info("history_log_resumed", path=str(self._log.stem))
        return True

    def _rewrite_log_locked(self) -> None:
        """Make the log hold exactly what memory has not committed (the caller holds the
        write lock and ``_log_lock``): after a purge, or when it grew while the file could
        not be written. Raises OSError (the log is then as it was)."""
        memory = self._memory
        with self._lock:
            runs = list(memory.unsaved)
        self._log.reset([record for record, _ in _records(runs)], memory.last)
        if runs:
            newest = runs[-1].last
            self._logged_through = max(self._logged_through, newest)
            with self._lock:
                memory.unlogged = [run for run in memory.unlogged if run.last > newest]
        self._log_limit = max(LOG_MAX_BYTES, 2 * self._log.total)

    def _open_log(self) -> None:
        """Open the log and commit what it holds that the file does not: the rounds a
        ``kill -9`` cut short. Without it, rounds commit to the file themselves."""
        try:
            records, torn = self._log.open()
        except OSError as error:
            self.log.error("history_log_failed", path=str(self._log.stem), error=str(error))
            return
        for path, why in self._log.unreadable:
            self.log.error("history_log_failed", path=str(path), error=why)
        if torn:
            self.log.warning("history_log_torn", path=str(self._log.stem), ignored_bytes=torn)
        with self._lock:
            memory = self._memory
            fresh: list[Entry] = []
            for entry in (entry for record in records for entry in _unrecord(record)):
                if entry.id > (fresh[-1].id if fresh else memory.last):
                    fresh.append(entry)
            for entry in fresh:
                self._add_locked(Run.of(entry), 1)
            memory.unlogged = []  # in the log already
            self._logged_through = memory.last
            self._log.mark_found(memory.last)
        if fresh:
            self.log.info("history_log_replayed", path=str(self._log.stem), count=len(fresh))
        with self._write_lock:
            self._commit()
            self._release_log()

    def _release_log(self) -> None:
        """After a commit: remove the log's segments the file now holds all of."""
        with self._log_lock:
            self._log.release(self._memory.committed_through)

    def commit_through(self, last: MessageId) -> bool:
        """Commit every entry up to ``last`` to the file now, in the caller's thread, unless
        already done. False when the file cannot be written (the entries stay in memory).
        """
        if last <= self._memory.committed_through:
            return True
        with self._write_lock:
            self._commit()
        return last <= self._memory.committed_through

    def newest(self) -> MessageId:
        """The id of the last event appended (or the newest kept), for a reader to tell
        whether what it read is still the latest."""
        with self._lock:
            return self._memory.last

    def unsaved_count(self) -> int:
        """Entries held in memory only, for ``lanchatctl stats`` beside ``counters``."""
        with self._lock:
            return self._memory.count

    def configure(self, keep: int, keep_days: float) -> None:
        """New retention limits (reload); a sweep enforces them within PROMPT_SWEEP."""
        self._limits = _Limits(keep, keep_days)
        self._limits_changed = True
        self._wake.set()

    def close(self) -> None:
        """Stop the writer and commit everything appended (SIGTERM path); what the file
        cannot take stays in the log for the next start, and only what neither can is lost."""
        self._stop.set()
        self._wake.set()
        self._thread.join()
        with self._write_lock:
            self._commit()
            self._closed = True
            unsaved = self.unsaved_count()
            with self._log_lock:
                if unsaved and self._log.is_open:
                    try:
                        self._rewrite_log_locked()
                    except OSError:
                        pass
                    else:
                        log = str(self._log.stem)
                        self.log.warning("history_left_in_log", path=log, count=unsaved)
                        unsaved = 0
                self._log.close(remove=not self.unsaved_count())
            if unsaved:  # neither file could take them: say so, they end with the process
                self.counters.lost += unsaved
                self.log.error("history_lost", path=str(self.path), count=unsaved)
            if self._checkpointer is not None:
                self._checkpointer.close()
            if self._db is not None:
                self._db.close()
                self._db = None

    # -- reads -----------------------------------------------------------------------

    def last(self, count: int) -> list[Entry]:
        """The newest ``count`` events (at most MAX_READ), oldest first."""
        count = max(0, min(count, MAX_READ))
        if not count:
            return []
        runs: list[Run] | None = None
        memory = self._memory
        with self._lock:
            if count <= memory.recent_count or memory.complete:
                runs = _newest_runs(memory.recent, count)
        if runs is not None:
            return _expand(runs)[-count:]
        unsaved = self._unsaved()
        if len(unsaved) >= count:
            return unsaved[-count:]
        stored = self._read(lambda db: _newest(db, count))
        return _merge(stored, unsaved)[-count:]

    def after(self, last: MessageId, limit: int | None = None) -> Replay:
        """Everything after ``last`` (a client's newest id), oldest first, or "too old".

        The retention mark is read after the rows: a sweep raises it before deleting, so a
        gap made meanwhile is always seen.
        """
        memory = self._memory
        runs: list[Run] | None = None
        with self._lock:
            recent = memory.recent
            if memory.complete or (recent and last >= recent[0].first):
                runs = _runs_after(recent, last)
                trimmed = memory.trimmed_through
        if runs is not None:
            entries = [entry for entry in _expand(runs) if entry.id > last]
            return _replay(entries, last, trimmed, limit)
        unsaved = self._unsaved()
        rows = self._read(lambda db: _after(db, last))
        with self._lock:
            trimmed = memory.trimmed_through
        entries = [entry for entry in _merge(rows, unsaved) if entry.id > last]
        return _replay(entries, last, trimmed, limit)

    def query(
        self, count: int, *, since: float | None = None, nick: str | None = None
    ) -> list[Entry]:
        """The newest ``count`` events, optionally since a time and by one nickname (admin)."""
        if count <= 0:
            return []
        key = None if nick is None else nick_key(nick)
        since_ms = 0 if since is None else _ms(since)

        def wanted(entry: Entry) -> bool:
            return entry.id.ms >= since_ms and (key is None or nick_key(entry.nick) == key)

        # Memory before the file, as in last(): an entry committed in between is then in
        # one or both, never in neither.
        unsaved = [entry for entry in self._unsaved() if wanted(entry)]
        stored = self._read(lambda db: _newest(db, count, since_ms, wanted))
        return _merge(stored, unsaved)[-count:]

    def purge(self, nick: str, since: float | None = None) -> int:
        """Delete what ``nick`` (as the room tells nicknames apart) said; how many went.

        Only messages and actions: joins, leaves and kicks stay. Raises HistoryError when
        the file cannot be changed (then nothing was deleted from it).
        """
        key = nick_key(nick)
        since_ms = 0 if since is None else _ms(since)

        def said(run: Run) -> bool:  # a run's entries share kind, millisecond and nickname
            return (
                run.kind in (Kind.MESSAGE, Kind.ACTION)
                and run.first.ms >= since_ms
                and nick_key(run.nick) == key
            )

        with self._write_lock:
            self._commit()
            with self._log_lock:
                with self._lock:
                    memory = self._memory
                    memory.unsaved = [run for run in memory.unsaved if not said(run)]
                    removed = memory.count
                    memory.count = _size(memory.unsaved)
                    removed -= memory.count
                    memory.unlogged = [run for run in memory.unlogged if not said(run)]
                    memory.keep_recent(run for run in memory.recent if not said(run))
                if self._log.is_open:
                    # Before the file changes: the log must not bring the words back after a
                    # kill -9 (the file's newest id may go back). It keeps what is not
                    # committed (usually nothing: emptied).
                    try:
                        self._rewrite_log_locked()
                    except OSError as error:
                        raise HistoryError(f"{self._log.stem}: cannot purge: {error}") from None
                if self._db is not None:
                    try:
                        with _transaction(self._db):
                            stored, shrunk = _purge(self._db, said, since_ms)
                    except sqlite3.Error as error:
                        raise HistoryError(f"{self.path}: cannot purge: {error}") from None
                    self._stored -= shrunk
                    removed += stored
        return removed

    # -- internals -------------------------------------------------------------------

    def _unsaved(self) -> list[Entry]:
        with self._lock:
            runs = list(self._memory.unsaved)
        return _expand(runs)

    def _read(self, read: Callable[[sqlite3.Connection], list[Entry]]) -> list[Entry]:
        """Entries from the file through ``read``; none when there is no usable file (memory
        holds the rest)."""
        try:
            with contextlib.closing(self._reader()) as db:
                return read(db)
        except sqlite3.Error:
            return []

    def _reader(self) -> sqlite3.Connection:
        """A connection for one read: WAL lets it run beside the writer, in any thread."""
        if self._db is None:
            raise sqlite3.OperationalError("no history file")
        return sqlite3.connect(f"{self.path.as_uri()}?mode=ro", uri=True, timeout=1.0)

    def _open(self) -> None:
        """Open (or create) the file; a damaged one is set aside and replaced by an empty one."""
        try:
            self._db = self._connect()
        except sqlite3.Error as error:
            if error.sqlite_errorcode in _DAMAGED or not _readable(self.path):
                self._set_aside(str(error))
            else:
                self._unavailable(str(error))
        except _Damaged as error:
            self._set_aside(str(error))
        except OSError as error:
            if _readable(self.path):
                self._unavailable(error.strerror or str(error))
            else:
                self._set_aside(error.strerror or str(error))

    def _connect(self) -> sqlite3.Connection:
        self.path.parent.mkdir(mode=0o750, parents=True, exist_ok=True)
        fresh = not self.path.exists()
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o640)
        os.close(fd)
        for suffix in ("", "-wal", "-shm"):  # SQLite gives -wal and -shm the file's mode
            _tighten(self.path.with_name(self.path.name + suffix))
        db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        try:
            if fresh:  # before the first write; an existing file keeps its own
                db.execute(f"PRAGMA page_size = {PAGE_SIZE}")
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            # Checkpoints are the writer thread's (_checkpoint), never a round's commit.
            db.execute("PRAGMA wal_autocheckpoint=0")
            if not fresh:
                (verdict,) = db.execute("PRAGMA quick_check").fetchone()
                if verdict != "ok":
                    raise _Damaged(f"quick_check: {verdict}")
            (version,) = db.execute("PRAGMA user_version").fetchone()
            if version > SCHEMA_VERSION:
                raise _Damaged(f"schema {version} is newer than this lanchatd's {SCHEMA_VERSION}")
            db.executescript(_SCHEMA)
            if version < SCHEMA_VERSION:
                _migrate(db, version)
            db.executescript(_VIEW)
            newest = db.execute(f"SELECT last_ms, last_seq FROM batches {_NEWEST_FIRST} LIMIT 1")
            row = newest.fetchone()
            trimmed = db.execute("SELECT value FROM meta WHERE name = 'trimmed_through'")
            mark = trimmed.fetchone()
            recent = _newest(db, MAX_READ)
            (count,) = db.execute("SELECT coalesce(sum(count), 0) FROM batches").fetchone()
        except BaseException:
            db.close()
            raise
        memory = self._memory
        if mark is not None:
            try:
                trimmed_through = MessageId.parse(mark[0])
            except ValueError:
                db.close()
                raise _Damaged(f"bad trimmed_through {mark[0]!r}") from None
            memory.trimmed_through = max(memory.trimmed_through, trimmed_through)
        stored = MessageId(*row) if row is not None else ORIGIN
        memory.last = max(memory.last, stored, memory.trimmed_through)
        memory.committed_through = max(memory.committed_through, stored)
        self._remember(recent, complete=len(recent) < MAX_READ)
        self._stored = count
        self._open_checkpointer()
        self.log.info("history_opened", path=str(self.path), newest=str(memory.last))
        return db

    def _open_checkpointer(self) -> None:
        """(Re)open the checkpoints' connection: with the file, so its descriptors are part
        of the daemon's steady set from the start (one opened and closed per checkpoint left
        one behind: SQLite keeps a closed connection's descriptor while another connection
        holds locks on the file), and never creating a file that is gone."""
        if self._checkpointer is not None:
            self._checkpointer.close()
            self._checkpointer = None
        with contextlib.suppress(sqlite3.Error):
            checkpointer = sqlite3.connect(
                f"{self.path.as_uri()}?mode=rw", uri=True, timeout=0, check_same_thread=False
            )
            try:  # a first checkpoint now opens its descriptor for the WAL too
                checkpointer.execute("PRAGMA wal_checkpoint(PASSIVE)")
            except sqlite3.Error:
                checkpointer.close()
                raise
            self._checkpointer = checkpointer

    def _remember(self, stored: list[Entry], *, complete: bool) -> None:
        """Fill the in-memory copy of the newest entries from the file's newest ``stored``."""
        with self._lock:
            memory = self._memory
            newest = stored[-1].id if stored else ORIGIN
            kept = [Run.of(entry) for entry in stored]
            kept += [rest for run in memory.unsaved if (rest := run.after(newest)) is not None]
            memory.complete = complete
            memory.keep_recent(kept)

    def _set_aside(self, error: str) -> None:
        aside = self.path.with_name(f"{self.path.name}.corrupt-{int(self.clock())}")
        number = 1
        while aside.exists():
            number += 1
            aside = self.path.with_name(f"{self.path.name}.corrupt-{int(self.clock())}.{number}")
        try:
            for suffix in ("-wal", "-shm"):
                companion = self.path.with_name(self.path.name + suffix)
                if companion.exists():
                    companion.rename(aside.with_name(aside.name + suffix))
            self.path.rename(aside)
        except OSError as failure:
            self._unavailable(f"{error}; cannot set it aside: {failure.strerror}")
            return
        self.log.error("history_corrupt", path=str(self.path), moved_to=str(aside), error=error)
        try:
            self._db = self._connect()
        except (sqlite3.Error, OSError) as failure:
            self._unavailable(str(failure))

    def _unavailable(self, error: str) -> None:
        self._retry_at = time.monotonic() + self._intervals[2]
        if not self._failing:
            self._failing = True
            self.log.error("history_unavailable", path=str(self.path), error=error)

    def _commit(self) -> None:
        """Write what is unsaved in one transaction (the caller holds the write lock): the
        runs encoded into rows here, in the writer thread, many at a time."""
        memory = self._memory
        with self._lock:
            runs = list(memory.unsaved)
        if not runs or self._closed:
            return
        if self._failing and time.monotonic() < self._retry_at:
            self._cap()
            return
        if self._db is None:
            if time.monotonic() >= self._retry_at:
                self._open()
            if self._db is None:
                self.counters.failed_writes += 1
                self._cap()
                return
            runs = self._forget_committed()
            if not runs:
                return
        try:
            self._insert(self._db, runs)
        except sqlite3.Error as error:
            self._unavailable(str(error))
            self.counters.failed_writes += 1
            if error.sqlite_errorcode & 0xFF == sqlite3.SQLITE_READONLY:
                # Opened read-only (its WAL could not be written then), SQLite keeps it so:
                # the retry opens the file again.
                self._db.close()
                self._db = None
            self._cap()
            return
        count = _size(runs)
        newest = runs[-1].last
        with self._lock:
            del memory.unsaved[: len(runs)]
            memory.count -= count
            memory.committed_through = newest
            unlogged = memory.unlogged
            if unlogged and unlogged[0].last <= newest:  # no round need log them now
                memory.unlogged = [run for run in unlogged if run.last > newest]
        self.counters.committed += count
        self._stored += count
        self._release_log()
        if self._failing:
            self._failing = False
            self.log.info("history_writes_resumed", path=str(self.path))

    def _forget_committed(self) -> list[Run]:
        """After the file opened late (it could not be opened at start): drop from memory
        what it already holds, which the log's replay put there again; the runs left."""
        memory = self._memory
        with self._log_lock, self._lock:
            committed = memory.committed_through
            memory.unsaved = _after_mark(memory.unsaved, committed)
            memory.count = _size(memory.unsaved)
            memory.unlogged = _after_mark(memory.unlogged, committed)
            return list(memory.unsaved)

    @staticmethod
    def _insert(db: sqlite3.Connection, runs: list[Run]) -> None:
        """The runs as rows of ROW_ENTRIES or more, in one transaction (one statement is
        its own)."""
        rows = _rows(runs)
        if len(rows) == 1:
            db.execute(_INSERT, rows[0])
            return
        with _transaction(db):
            db.executemany(_INSERT, rows)

    def _cap(self) -> None:
        """While nothing can be written, memory keeps the newest ``keep`` entries. Under the
        log lock too: a round writing its runs holds them outside ``unlogged`` meanwhile."""
        with self._log_lock, self._lock:
            memory = self._memory
            excess = memory.count - self._limits.keep
            if excess <= 0:
                return
            first = memory.unsaved[0].first
            lost = _expand(_oldest_runs(memory.unsaved, excess))[excess - 1].id
            memory.trimmed_through = lost
            memory.unsaved = _after_mark(memory.unsaved, lost)
            memory.count -= excess
            memory.unlogged = _after_mark(memory.unlogged, lost)
            memory.keep_recent(
                rest
                for run in memory.recent
                if (rest := run if run.last < first else run.after(lost)) is not None
            )
            self.counters.lost += excess

    def _sweep(self) -> None:
        """Enforce ``keep`` and ``keep_days`` on the file.

        The mark (the newest id to remove) is set first, with the one batch that holds it
        and newer entries rewritten, then whole batches go SWEEP_CHUNK at a time, one
        transaction each with the write lock released between: the delivery thread's commit
        before a round waits behind one chunk at most, not behind a whole sweep.
        """
        with self._write_lock:
            marked = self._mark()
        done = marked is None
        while not done and not self._stop.is_set():
            with self._write_lock:
                done = self._delete_chunk(marked)

    def _mark(self) -> tuple[MessageId, int] | None:
        """Find and record what the limits remove: the newest id, and the rowid of the
        newest batch wholly up to it (None: nothing); the caller holds the write lock. The
        mark is raised before anything is deleted, so a resume from before it is told it is
        too old even while a sweep is under way."""
        self._limits_changed = False
        if (db := self._db) is None:
            return None
        limits = self._limits
        try:
            with _transaction(db):
                marks = [_count_mark(db, self._stored - limits.keep)]
                if limits.keep_days > 0:
                    marks.append(_age_mark(db, _ms(self.clock() - limits.keep_days * 86_400)))
                found = [mark for mark in marks if mark is not None]
                if not found:
                    # The file holds at most ``keep`` entries: a count that drifted above
                    # must not keep the prompt sweep coming every second.
                    self._stored = min(self._stored, limits.keep)
                    return None
                mark = max(found)
                with self._lock:
                    memory = self._memory
                    memory.trimmed_through = max(memory.trimmed_through, mark)
                    memory.forget_recent_through(mark)
                db.execute(
                    "INSERT OR REPLACE INTO meta VALUES ('trimmed_through', ?)", (str(mark),)
                )
                split, through = _split(db, mark)
        except sqlite3.Error as error:
            self._unavailable(str(error))
            return None
        self._stored -= split
        return mark, through

    def _delete_chunk(self, marked: tuple[MessageId, int] | None) -> bool:
        """Delete the oldest SWEEP_CHUNK batches wholly up to the mark; True once none are
        left (or the file cannot be changed). The caller holds the write lock.

        The rowid bounds the walk from the oldest batch; the id is checked too, since a
        purge may empty the table between two chunks and new batches then take low rowids.
        """
        if self._db is None or marked is None:
            return True
        mark, through = marked
        try:
            counts = self._db.execute(
                "DELETE FROM batches WHERE rowid IN (SELECT rowid FROM batches "
                "WHERE rowid <= ? AND (last_ms, last_seq) <= (?, ?) ORDER BY rowid LIMIT ?) "
                "RETURNING count",
                (through, *mark, SWEEP_CHUNK),
            ).fetchall()
        except sqlite3.Error as error:
            self._unavailable(str(error))
            return True
        self._stored -= sum(count for (count,) in counts)
        return len(counts) < SWEEP_CHUNK

    def _checkpoint(self) -> None:
        """Copy what the WAL holds into the database file, off the delivery thread.

        SQLite's automatic checkpoint runs inside the commit that passes 1000 WAL pages,
        mostly a round's, and syncs the disk twice: p99 of a round's commit 3.5-8 ms with
        it, 0.1 ms without. Here the pages are copied on a connection of its own beside the
        commits. Under steady load commits keep coming, so that never completes and the WAL
        would only grow: once it holds WAL_RESTART_FRAMES, the few pages committed meanwhile
        are copied under the write lock, which completes the checkpoint, and the next commit
        starts the WAL over. A checkpoint that fails loses nothing (the WAL keeps it all) and
        is tried again at the next interval; failed writes are what gets reported.
        """
        self._checkpointed = (time.monotonic(), self.counters.committed)
        if self._db is None:
            return
        if self._checkpointer is None:
            self._open_checkpointer()
        if (checkpointer := self._checkpointer) is None:
            return
        with contextlib.suppress(sqlite3.Error):
            _, frames, _ = checkpointer.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
            if frames < WAL_RESTART_FRAMES:
                return
            with self._write_lock:
                if self._db is not None:
                    self._db.execute("PRAGMA wal_checkpoint(PASSIVE)")

    def _checkpoint_due(self) -> float:
        """When the next checkpoint is due (monotonic): the checkpoint interval after the
        last one if anything was committed since, so a store gone quiet is checkpointed once."""
        at, committed = self._checkpointed
        return at + self._intervals[3] if committed != self.counters.committed else math.inf

    def _sweep_due(self, swept: float) -> float:
        """When the next sweep is due (monotonic), the last one having run at ``swept``: every
        sweep interval, and promptly once the file holds more than ``keep`` or the limits
        changed. Nothing is counted per message: commits keep ``_stored`` per batch."""
        sweep = self._intervals[1]
        if self._stored > self._limits.keep or self._limits_changed:
            return swept + min(sweep, PROMPT_SWEEP)
        return swept + sweep

    def _run(self) -> None:
        """The writer thread: a commit every batch interval, a retention sweep when due.

        It sleeps while nothing is unsaved (woken by the next append), then waits one batch
        interval and commits everything appended; while writes fail, it waits for the next
        retry.
        """
        batch = self._intervals[0]
        swept = -math.inf
        while not self._stop.is_set():
            with self._lock:
                pending = bool(self._memory.unsaved)
            if not pending:
                due = min(self._sweep_due(swept), self._checkpoint_due())
                self._wake.wait(max(0.0, due - time.monotonic()))
                self._wake.clear()
            delay = max(batch, self._retry_at - time.monotonic()) if self._failing else batch
            due = self._sweep_due(swept)
            timeout = min(delay, max(batch, due - time.monotonic()))
            if self._stop.wait(timeout):
                return
            try:
                with self._write_lock:
                    self._commit()
                if time.monotonic() >= self._sweep_due(swept):
                    swept = time.monotonic()
                    self._sweep()
                if time.monotonic() >= self._checkpoint_due():
                    self._checkpoint()
            except Exception:
                # A bug here must not end history for good: log it, try again later.
                self.log.exception("history_error")
                self._stop.wait(self._intervals[2])


#: A row of the batches table: first ms and seq, last ms and seq, count, body, times.
_Row = tuple[int, int, int, int, int, str, bytes]


def _size(runs: Iterable[Run]) -> int:
    """Entries in ``runs``."""
    return sum(map(len, map(_TEXTS, runs)))


def _expand(runs: Iterable[Run]) -> list[Entry]:
    return [entry for run in runs for entry in run.entries()]


def _newest_runs(runs: collections.deque[Run], count: int) -> list[Run]:
    """The fewest newest ``runs`` that hold ``count`` entries (or all), oldest first."""
    found: list[Run] = []
    held = 0
    for run in reversed(runs):
        if held >= count:
            break
        found.append(run)
        held += len(run.texts)
    found.reverse()
    return found


def _oldest_runs(runs: list[Run], count: int) -> list[Run]:
    """The fewest oldest ``runs`` that hold ``count`` entries (or all)."""
    held = taken = 0
    while taken < len(runs) and held < count:
        held += len(runs[taken].texts)
        taken += 1
    return runs[:taken]


def _runs_after(runs: collections.deque[Run], mark: MessageId) -> list[Run]:
    """The newest ``runs`` that hold every entry after ``mark``, oldest first."""
    found: list[Run] = []
    for run in reversed(runs):
        if run.last <= mark:
            break
        found.append(run)
    found.reverse()
    return found


def _after_mark(runs: list[Run], mark: MessageId) -> list[Run]:
    """``runs`` without their entries up to ``mark``."""
    if not runs or mark < runs[0].first:
        return runs
    return [rest for run in runs if (rest := run.after(mark)) is not None]


def _rows(runs: list[Run]) -> list[_Row]:
    """Runs as rows of the batches table, each of at least ROW_ENTRIES entries (but the
    last): the commit's many runs in few rows, each encoded at once."""
    rows = []
    group: list[Run] = []
    count = 0
    for run in runs:
        group.append(run)
        count += len(run.texts)
        if count >= ROW_ENTRIES:
            rows.append(_row(group))
            group, count = [], 0
    if group:
        rows.append(_row(group))
    return rows


def _row(runs: list[Run]) -> _Row:
    """``runs`` as one row: its body a JSON list of the runs, each ``[[ms, seq], kind,
    nick, reason, [texts]]``, all encoded in one C call from tuples ``zip`` makes. What a
    run's entries share is encoded once, not an entry at a time (that was a third of the
    writer's JSON).

    Text with a lone surrogate cannot be stored as UTF-8; the room never hands one over
    (clients' bytes are decoded strictly), but should it, that row is stored with U+FFFD in
    its place rather than failing every later write.
    """
    firsts, ats, kinds, nicks, texts, reasons = zip(*runs, strict=True)
    counts = [*map(len, texts)]
    count = sum(counts)
    body = _encode([*zip(firsts, kinds, nicks, reasons, texts, strict=True)])
    if not body.isascii():
        try:
            body.encode()
        except UnicodeEncodeError:
            return _row([_cleaned(run) for run in runs])
    if count != len(runs):
        ats = tuple(_flat(map(itertools.repeat, ats, counts)))
    first, last = runs[0].first, runs[-1].last
    return (first.ms, first.seq, last.ms, last.seq, count, body, struct.pack(f"<{count}d", *ats))


def _records(runs: list[Run]) -> list[tuple[bytes, MessageId]]:
    """``runs`` as log records of _RECORD_RUNS runs at most (a round's are one), each with
    its newest id.

    A record is binary columns (C loops, ~10 µs for a round's runs, where JSON cost ~1 µs
    an entry in the delivery thread), after four zero bytes that tell it from the JSON
    records of earlier versions (they began with their length): the numbers of runs and
    texts; each run's first id, time, count of texts and kind; then the nicknames, reasons
    and texts, each column as its strings' lengths and their UTF-8 joined. Not ``marshal``:
    reading it back trusts the sizes a record declares, and a crafted record could make
    the daemon allocate gigabytes at start; here every size is checked against the record
    first. Only the log holds it; the file stays JSON.
    """
    records = []
    for start in range(0, len(runs), _RECORD_RUNS):
        chunk = runs[start : start + _RECORD_RUNS]
        firsts, ats, kinds, nicks, texts, reasons = zip(*chunk, strict=True)
        lines = [*_flat(texts)]
        count = len(chunk)
        parts = [
            _BINARY,
            _COUNTS.pack(count, len(lines)),
            struct.pack(f"<{2 * count}q{count}d{count}I", *_flat(firsts), *ats, *map(len, texts)),
            bytes(map(_KIND_CODE.__getitem__, kinds)),
        ]
        for column in (nicks, reasons, lines):
            joined = "".join(column).encode("utf-8", "surrogatepass")
            parts.append(struct.pack(f"<{len(column)}I", *map(len, column)))
            parts.append(_LENGTH.pack(len(joined)) + joined)
        records.append((b"".join(parts), chunk[-1].last))
    return records


def _unrecord(record: bytes) -> list[Entry]:
    """A log record's entries; what this code did not write is skipped, never raised."""
    if record.startswith(_BINARY):
        try:
            return _unbinary(memoryview(record)[len(_BINARY) :])
        except (ValueError, TypeError, IndexError, struct.error):
            return []
    if len(record) < _LENGTH.size:
        return []
    (length,) = _LENGTH.unpack_from(record)
    start = _LENGTH.size
    try:
        body = record[start : start + length].decode()
    except UnicodeDecodeError:
        return []
    return _unpack(f"[{body}]", record[start + length :])


def _unbinary(data: memoryview) -> list[Entry]:
    """A record of _records' entries. Raises ValueError (or struct.error) where it is not
    one; every size is checked against the record before anything is made of that size."""
    count, total = _COUNTS.unpack_from(data)
    at = _COUNTS.size
    if count * 37 + total * 4 > len(data):
        raise ValueError("sizes beyond the record")
    numbers = struct.unpack_from(f"<{2 * count}q{count}d{count}I", data, at)
    at += 28 * count
    kinds = [_KIND_OF_CODE[code] for code in data[at : at + count]]
    at += count
    columns: list[list[str]] = []
    for size in (count, count, total):
        lengths = struct.unpack_from(f"<{size}I", data, at)
        at += 4 * size
        (length,) = _LENGTH.unpack_from(data, at)
        at += _LENGTH.size
        if at + length > len(data):
            raise ValueError("a column beyond the record")
        joined = bytes(data[at : at + length]).decode("utf-8", "surrogatepass")
        at += length
        if sum(lengths) != len(joined):
            raise ValueError("lengths that do not add up")
        offsets = [0, *itertools.accumulate(lengths)]
        columns.append([joined[a:b] for a, b in itertools.pairwise(offsets)])
    nicks, reasons, lines = columns
    ids, ats, counts = numbers[: 2 * count], numbers[2 * count : 3 * count], numbers[3 * count :]
    if sum(counts) != total:
        raise ValueError("counts that do not add up")
    entries: list[Entry] = []
    line = 0
    for run in range(count):
        ms, seq = ids[2 * run], ids[2 * run + 1]
        for offset in range(counts[run]):
            item = ((ms, seq + offset), ats[run], kinds[run], nicks[run], lines[line], reasons[run])
            with contextlib.suppress(ValueError, TypeError):
                entries.append(_entry(item))
            line += 1
    return entries


def _unpack(body: str, times: bytes) -> list[Entry]:
    """A row's entries (the STRICT table guarantees the columns' types); what this code did
    not write (not JSON, parts that do not match, an unknown kind, a value of the wrong
    type) is skipped, never raised. A part that does not decode ends the row: the times of
    the parts after it cannot be told apart.

    A part is a run (schema 3, :func:`_row`) or, in the log records of earlier versions,
    columns: ``[[ms, seq, ms, seq, …], kinds, nicks, texts, reasons]``.
    """
    try:
        parts = json.loads(body)
    except (ValueError, RecursionError):
        return []
    entries: list[Entry] = []
    if type(parts) is not list:
        return entries
    offset = 0
    for part in parts:
        try:
            items = _items(part)
            count = len(items)
            ats = struct.unpack_from(f"<{count}d", times, offset)
        except (ValueError, TypeError, struct.error):
            break
        offset += 8 * count
        for (ms_seq, kind, nick, text, reason), at in zip(items, ats, strict=True):
            with contextlib.suppress(ValueError, TypeError):
                entries.append(_entry((ms_seq, at, kind, nick, text, reason)))
    return entries


def _items(part: Any) -> list[tuple[Any, Any, Any, Any, Any]]:
    """A part's entries but their times, undecoded: ``(ids, kind, nick, text, reason)``.
    ValueError or TypeError if it is not a part."""
    if type(part) is not list or len(part) != 5:
        raise ValueError("not a part")
    if type(part[1]) is str:  # a run
        (ms, seq), kind, nick, reason, texts = part
        if type(texts) is not list or type(seq) is not int:
            raise ValueError("not a run")
        return [((ms, seq + at), kind, nick, text, reason) for at, text in enumerate(texts)]
    flat, kinds, nicks, texts, reasons = part
    if len(flat) != 2 * len(kinds) or not len(kinds) == len(nicks) == len(texts) == len(reasons):
        raise ValueError("columns that do not match")
    ids = zip(flat[0::2], flat[1::2], strict=True)
    return list(zip(ids, kinds, nicks, texts, reasons, strict=True))


def _entry(item: Any) -> Entry:
    """One decoded entry; ValueError or TypeError if it is not one."""
    (ms, seq), at, kind, nick, text, reason = item
    if not (
        type(ms) is int
        and type(seq) is int
        and 0 <= ms <= _MAX_ROWID
        and 0 <= seq <= _MAX_ROWID
        and type(at) in (int, float)
        and math.isfinite(at)
        and type(nick) is type(text) is type(reason) is str
    ):
        raise ValueError("not an entry")
    return Entry(MessageId(ms, seq), float(at), Kind(kind), nick, text, reason)


def _newest(
    db: sqlite3.Connection,
    count: int,
    since_ms: int = 0,
    wanted: Callable[[Entry], bool] | None = None,
) -> list[Entry]:
    """The newest ``count`` entries in the file (those ``wanted``, none before ``since_ms``),
    oldest first: batches are read newest first until enough are found."""
    found: list[Entry] = []
    for last_ms, body, times in db.execute(
        f"SELECT last_ms, body, times FROM batches {_NEWEST_FIRST}"
    ):
        if last_ms < since_ms:
            break
        entries = _unpack(body, times)
        found.extend(reversed(entries if wanted is None else list(filter(wanted, entries))))
        if len(found) >= count:
            break
    del found[count:]
    found.reverse()
    return found


def _after(db: sqlite3.Connection, last: MessageId) -> list[Entry]:
    """Every entry in the file after ``last``, oldest first: batches newest first, up to
    the first that ends at or before it."""
    found: list[list[Entry]] = []
    for last_ms, last_seq, body, times in db.execute(
        f"SELECT last_ms, last_seq, body, times FROM batches {_NEWEST_FIRST}"
    ):
        if MessageId(last_ms, last_seq) <= last:
            break
        found.append(_unpack(body, times))
    return [entry for entries in reversed(found) for entry in entries if entry.id > last]


def _count_mark(db: sqlite3.Connection, excess: int) -> MessageId | None:
    """The newest of the oldest ``excess`` entries in the file (None: none to remove).

    Oldest batches first, their counts alone: the rows read are the batches to remove, not
    every batch kept."""
    if excess <= 0:
        return None
    older = 0
    batches = db.execute("SELECT rowid, last_ms, last_seq, count FROM batches ORDER BY rowid")
    for rowid, last_ms, last_seq, count in batches:
        older += count
        if older >= excess:
            keep = older - excess  # this batch's newest ``keep`` entries stay
            if not keep:
                return MessageId(last_ms, last_seq)
            batch = db.execute("SELECT body, times FROM batches WHERE rowid = ?", (rowid,))
            runs = _runs_of_row(*batch.fetchone())
            return _id_at(runs, _size(runs) - keep - 1)
    return None


def _age_mark(db: sqlite3.Connection, cutoff: int) -> MessageId | None:
    """The newest entry in the file from before millisecond ``cutoff`` (None: there is none).

    Oldest batches first, up to the first that ends at or after the cutoff (it may straddle
    it): the rows read are the batches to remove."""
    mark = None
    batches = db.execute("SELECT rowid, first_ms, last_ms, last_seq FROM batches ORDER BY rowid")
    for rowid, first_ms, last_ms, last_seq in batches:
        if last_ms < cutoff:
            mark = MessageId(last_ms, last_seq)
            continue
        if first_ms < cutoff:
            batch = db.execute("SELECT body, times FROM batches WHERE rowid = ?", (rowid,))
            runs = _runs_of_row(*batch.fetchone())
            mark = max((run.last for run in runs if run.first.ms < cutoff), default=mark)
        break
    return mark


def _split(db: sqlite3.Connection, mark: MessageId) -> tuple[int, int]:
    """Rewrite the batch that holds ``mark`` and newer entries to hold only those: how many
    entries went, and the rowid of the newest batch wholly up to ``mark`` (those are
    deleted in chunks)."""
    row = db.execute(
        "SELECT rowid, first_ms, first_seq, count, body, times FROM batches "
        "WHERE (last_ms, last_seq) > (?, ?) ORDER BY rowid LIMIT 1",
        mark,
    ).fetchone()
    if row is None:
        return 0, _MAX_ROWID
    rowid, first_ms, first_seq, count, body, times = row
    if MessageId(first_ms, first_seq) > mark:
        return 0, rowid - 1
    kept = _after_mark(_runs_of_row(body, times), mark)
    return int(count) - _rewrite(db, rowid, kept), rowid - 1


def _purge(db: sqlite3.Connection, said: Callable[[Run], bool], since_ms: int) -> tuple[int, int]:
    """Rewrite the batches holding runs ``said`` selects without them: how many entries were
    removed, and by how much the batches' counts went down."""
    removed = shrunk = 0
    batches = db.execute(
        "SELECT rowid, count, body, times FROM batches WHERE last_ms >= ?", (since_ms,)
    ).fetchall()
    for rowid, count, body, times in batches:
        runs = _runs_of_row(body, times)
        kept = [run for run in runs if not said(run)]
        if len(kept) < len(runs):
            removed += _size(runs) - _size(kept)
            shrunk += count - _rewrite(db, rowid, kept)
    return removed, shrunk


def _rewrite(db: sqlite3.Connection, rowid: int, runs: list[Run]) -> int:
    """Batch ``rowid`` to hold ``runs`` (deleted when none are left); their entries."""
    if runs:
        db.execute(
            "UPDATE batches SET first_ms = ?, first_seq = ?, last_ms = ?, last_seq = ?, "
            "count = ?, body = ?, times = ? WHERE rowid = ?",
            (*_row(runs), rowid),
        )
    else:
        db.execute("DELETE FROM batches WHERE rowid = ?", (rowid,))
    return _size(runs)


def _runs_of_row(body: str, times: bytes) -> list[Run]:
    """A row's runs: a run at a time when the row is what _row writes (a sweep reads one
    each time), else entry by entry, skipping what is not one (see _unpack)."""
    runs: list[Run] = []
    offset = 0
    try:
        for (ms, seq), kind, nick, reason, texts in json.loads(body):
            count = len(texts)
            (at,) = _TIME.unpack_from(times, offset)
            if not (
                type(ms) is type(seq) is int
                and 0 <= ms <= _MAX_ROWID
                and 0 <= seq <= _MAX_ROWID - count
                and type(nick) is type(reason) is str
                and type(texts) is list
                and count
                and all(type(text) is str for text in texts)
                and math.isfinite(at)
                and times[offset : offset + 8 * count] == times[offset : offset + 8] * count
            ):
                raise ValueError("not a run")
            runs.append(Run(MessageId(ms, seq), at, Kind(kind), nick, tuple(texts), reason))
            offset += 8 * count
    except (ValueError, TypeError, LookupError, RecursionError, struct.error):
        return _grouped(_unpack(body, times))
    return runs


def _grouped(entries: list[Entry]) -> list[Run]:
    """``entries`` as the fewest runs: neighbours that one append could have made."""
    groups: list[list[Entry]] = []
    for entry in entries:
        if groups:
            group = groups[-1]
            head = group[0]
            if entry.id == (head.id.ms, head.id.seq + len(group)) and (
                entry.at,
                entry.kind,
                entry.nick,
                entry.reason,
            ) == (head.at, head.kind, head.nick, head.reason):
                group.append(entry)
                continue
        groups.append([entry])
    return [
        Run(
            group[0].id,
            group[0].at,
            group[0].kind,
            group[0].nick,
            tuple(e.text for e in group),
            group[0].reason,
        )
        for group in groups
    ]


def _id_at(runs: list[Run], index: int) -> MessageId | None:
    """The id of entry ``index`` (from 0) of ``runs``; None if there is none."""
    if index < 0:
        return None
    for run in runs:
        if index < len(run.texts):
            return MessageId(run.first.ms, run.first.seq + index)
        index -= len(run.texts)
    return None


def _migrate(db: sqlite3.Connection, version: int) -> None:
    """An older layout to this one, in one transaction: an upgrade keeps the history.

    Schema 0 (a row per entry in a table ``entries``) becomes rows of MIGRATE_BATCH (a row
    of an unknown kind is left behind); in schemas 1 and 2 a row's body was columns (one
    part, or a list of parts), rewritten as runs.
    """
    db.execute("BEGIN IMMEDIATE")
    try:
        if version in (1, 2):
            db.execute("DROP VIEW IF EXISTS entries")
            if version == 1:
                db.execute("UPDATE batches SET body = '[' || body || ']'")
            batches = db.execute("SELECT rowid, body, times FROM batches").fetchall()
            for rowid, body, times in batches:
                _rewrite(db, rowid, _grouped(_unpack(body, times)))
        elif db.execute(
            "SELECT 1 FROM sqlite_schema WHERE name = 'entries' AND type = 'table'"
        ).fetchone():
            rows = db.execute(
                "SELECT ms, seq, at, kind, nick, text, reason FROM entries ORDER BY ms, seq"
            )
            while chunk := rows.fetchmany(MIGRATE_BATCH):
                entries = []
                for ms, seq, *rest in chunk:
                    with contextlib.suppress(ValueError, TypeError):
                        entries.append(_entry([[ms, seq], *rest]))
                if entries:
                    db.execute(_INSERT, _row(_grouped(entries)))
            rows.close()
            db.execute("DROP TABLE entries")
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
    except BaseException:
        db.execute("ROLLBACK")
        raise
    db.execute("COMMIT")


@contextlib.contextmanager
def _transaction(db: sqlite3.Connection) -> Iterator[None]:
    """One transaction for several statements. The connection is in autocommit mode: a
    commit's lone INSERT is its own transaction, without a BEGIN and a COMMIT to prepare
    and step (~1 µs of a commit's ~16)."""
    db.execute("BEGIN IMMEDIATE")
    with db:  # COMMIT, or ROLLBACK on an exception
        yield


def _cleaned(run: Run) -> Run:
    """``run`` with lone surrogates replaced by U+FFFD, so SQLite can store it as UTF-8."""
    nick, reason, *texts = (_SURROGATE.sub("\ufffd", t) for t in (run.nick, run.reason, *run.texts))
    return run._replace(nick=nick, reason=reason, texts=tuple(texts))


def _ms(seconds: float) -> int:
    """A time as an id's millisecond: times and ids are compared in one unit."""
    return int(seconds * 1000)


def _replay(entries: list[Entry], last: MessageId, trimmed: MessageId, limit: int | None) -> Replay:
    """What a resume after ``last`` gets, given every entry kept after it."""
    if last < trimmed:
        return Replay([], too_old=True, missed=len(entries))
    return Replay(entries if limit is None else entries[:limit])


def _merge(stored: Iterable[Entry], unsaved: list[Entry]) -> list[Entry]:
    """File rows then memory, in id order, each id once (a batch may be in both)."""
    entries = list(stored)
    newest = entries[-1].id if entries else ORIGIN
    return entries + [entry for entry in unsaved if entry.id > newest]


def _tighten(path: Path) -> None:
    """Mode 0640 or tighter for a history file found looser (say, restored with cp): the
    room's conversation is not for every local user."""
    with contextlib.suppress(FileNotFoundError, PermissionError):  # absent, or not ours
        found = path.lstat()
        mode = stat.S_IMODE(found.st_mode)
        if stat.S_ISREG(found.st_mode) and mode & ~0o640:  # never through a symlink
            path.chmod(mode & 0o640)


def _readable(path: Path) -> bool:
    """False for a file that exists but this process may not read and write, or that is a
    directory: either way the file is no use and is set aside."""
    if not path.exists():
        return True
    return not path.is_dir() and os.access(path, os.R_OK | os.W_OK)
