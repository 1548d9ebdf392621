"""What the history store costs: the room's side of an append, commits, and the reads.

Run ``python -m benchmarks.historybench`` (``--help`` for the sizes). It prints one JSON
object; the figures for this machine are in the history branch's report. The store runs on
a real SQLite file in a temporary directory, with its own writer thread.
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import structlog

from lanchatd.daemon.history import History, Kind

TEXT = "x" * 80


def _per_second(count: int, seconds: float) -> float:
    return round(count / seconds) if seconds > 0 else 0.0


def _timed(function: Callable[[], object], repeat: int) -> float:
    """Mean milliseconds per call."""
    start = time.perf_counter()
    for _ in range(repeat):
        function()
    return round((time.perf_counter() - start) / repeat * 1000, 4)


def measure(directory: Path, appends: int, rounds: int, reads: int) -> dict[str, Any]:
    """Every figure, on a store in ``directory``."""
    quiet = structlog.wrap_logger(
        structlog.PrintLogger(),
        wrapper_class=structlog.make_filtering_bound_logger(logging.CRITICAL),
    )
    store = History(directory / "history.db", quiet, keep=max(appends, 10_000))
    room = threading.Lock()
    figures: dict[str, Any] = {}
    start = time.perf_counter()
    for _ in range(appends):
        with room:
            store.append(Kind.MESSAGE, "alice", TEXT)
    spent = time.perf_counter() - start
    figures["appends_per_second"] = _per_second(appends, spent)
    figures["append_us"] = round(spent / appends * 1e6, 3)
    if hasattr(store, "append_many"):  # absent before it (an A/B run against an old commit)
        lines = [TEXT] * 4
        start = time.perf_counter()
        for _ in range(appends // 4):
            with room:
                store.append_many(Kind.MESSAGE, "alice", lines)
        spent = time.perf_counter() - start
        figures["append_many_4_us_per_entry"] = round(spent / (appends // 4 * 4) * 1e6, 3)
    start = time.perf_counter()
    store.commit_through(store.append(Kind.MESSAGE, "alice", TEXT).id)
    figures["drain_after_appends_ms"] = round((time.perf_counter() - start) * 1000, 1)
    # What a delivery round calls before sending (commit_through before the log).
    secure = getattr(store, "secure_through", store.commit_through)
    for size in (1, 10, 100):
        waits: list[float] = []
        start, cpu = time.perf_counter(), time.process_time()
        for _ in range(rounds):
            for _ in range(size):
                with room:
                    last = store.append(Kind.MESSAGE, "bob", TEXT)
            before = time.perf_counter()
            secure(last.id)
            waits.append(time.perf_counter() - before)
        spent = time.perf_counter() - start
        # Every thread of the process (the writer's commits, sweeps and checkpoints too):
        # what history takes from the daemon's share of the CPU.
        cpu = time.process_time() - cpu
        figures[f"round_of_{size}_us"] = round(spent / rounds * 1e6, 1)
        figures[f"round_of_{size}_cpu_us_per_entry"] = round(cpu / (rounds * size) * 1e6, 2)
        figures[f"round_of_{size}_entries_per_second"] = _per_second(rounds * size, spent)
        # What a delivery round waits for before its first send: the tail is what clients feel.
        waits.sort()
        for name, wait in (
            ("p50", waits[len(waits) // 2]),
            ("p99", waits[len(waits) * 99 // 100]),
            ("max", waits[-1]),
        ):
            figures[f"round_of_{size}_commit_{name}_us"] = round(wait * 1e6, 1)
    ids = [entry.id for entry in store.query(501)]
    for count in (20, 500):
        anchor = ids[-count - 1]
        assert len(store.after(anchor).entries) == count
        figures[f"after_id_{count}_ms"] = _timed(functools.partial(store.after, anchor), reads)
        figures[f"last_{count}_ms"] = _timed(functools.partial(store.last, count), reads)
    store.close()
    return figures


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.historybench")
    parser.add_argument("--appends", type=int, default=100_000, help="appends timed in a row")
    parser.add_argument("--rounds", type=int, default=1000, help="delivery rounds per size")
    parser.add_argument("--reads", type=int, default=300, help="reads timed per kind")
    options = parser.parse_args(argv)
    with tempfile.TemporaryDirectory() as directory:
        figures = measure(Path(directory), options.appends, options.rounds, options.reads)
    print(json.dumps(figures, indent=1))
    return figures


if __name__ == "__main__":
    main()
