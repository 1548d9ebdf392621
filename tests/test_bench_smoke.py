"""The chat benchmark (benchmarks/chatbench): its verifier, and a tiny run against real servers.

The full benchmark is too slow for the default test run; this runs it for about a second
per server and checks the report's structure and that lanchatd lost, duplicated,
reordered and corrupted nothing.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

np = pytest.importorskip("numpy", reason="the benchmark needs numpy (pip install -e '.[bench]')")

from benchmarks.chatbench import records, report  # noqa: E402
from benchmarks.chatbench.__main__ import main  # noqa: E402
from benchmarks.chatbench.runner import RunPlan, layout  # noqa: E402
from benchmarks.chatbench.servers import Ncat  # noqa: E402
from benchmarks.chatbench.verify import Inbox, Verifier  # noqa: E402

SENDERS = [0, 1, 2]
READERS = [0, 1, 2, 3, 4]
EPOCH = 1_000_000_000_000


def stream(counts: dict[int, int], stamp_us: int = 500) -> list[bytes]:
    """Records of every sender interleaved, sequence numbers from 0."""
    lines = []
    for seq in range(max(counts.values())):
        for sender, count in counts.items():
            if seq < count:
                lines.append(records.encode(records.head(sender), sender, seq, stamp_us))
    return lines


def deliver(inbox: Inbox, data: bytes, pieces: int = 7, arrival_ns: int | None = None) -> None:
    """Write ``data`` into ``inbox`` as the kernel would, in ``pieces`` reads."""
    rng = random.Random(len(data))
    cuts = sorted(rng.sample(range(1, len(data)), min(pieces - 1, len(data) - 1)))
    start = 0
    for cut in [*cuts, len(data)]:
        chunk = data[start:cut]
        view = inbox.get_buffer()
        view[: len(chunk)] = chunk
        del view
        inbox.updated(len(chunk))
        if arrival_ns is not None:
            inbox.times[-1] = arrival_ns
        start = cut


def verifier(*, echo: bool = True, readers: list[int] = READERS) -> Verifier:
    check = Verifier(readers, SENDERS, echo=echo, strip_prefix=not echo, epoch_ns=EPOCH)
    check.set_window(EPOCH, EPOCH + 10**12)
    return check


def run_streams(check: Verifier, per_reader: dict[int, bytes], passes: int = 3) -> None:
    inboxes = [Inbox(256) for _ in check.readers]
    for part in range(passes):
        for index, data in per_reader.items():
            size = len(data) // passes
            chunk = data[part * size : (part + 1) * size if part < passes - 1 else len(data)]
            if chunk:
                deliver(inboxes[index], chunk, arrival_ns=EPOCH + 2_000_000)
        check.feed(list(enumerate(inboxes)))


def test_clean_streams_with_join_lines_verify_exactly() -> None:
    counts = {0: 40, 1: 25, 2: 31}
    lines = stream(counts)
    check = verifier()
    data = b"c0009 Bergabung!\n" + b"".join(lines[:30]) + b"c0010 Keluar!\n" + b"".join(lines[30:])
    run_streams(check, dict.fromkeys(range(len(READERS)), data))
    tally = check.finish(counts)
    assert tally.valid == len(lines) * len(READERS)
    assert (tally.lost, tally.duplicated, tally.reordered, tally.corrupted) == (0, 0, 0, 0)
    assert tally.other_lines == 2 * len(READERS)
    assert tally.window_deliveries == tally.valid
    # Sent at 500 µs after the epoch, arrived at 2000 µs: 1.5 ms within the bin width.
    assert tally.percentile_us(0.5) == pytest.approx(1500, rel=0.01)
    assert tally.latency_max_us == 1500


def test_loss_duplicate_reorder_and_corruption_are_counted() -> None:
    counts = {0: 20, 1: 20, 2: 20}
    lines = stream(counts)
    check = verifier()
    lost = lines[:5] + lines[6:]
    duplicated = [*lines[:10], lines[3], *lines[10:]]
    reordered = [*lines[:10], lines[13], *lines[10:13], *lines[14:]]
    broken = list(lines)
    broken[7] = broken[7][:20] + b"X" + broken[7][21:]
    spliced = list(lines)
    spliced[9] = spliced[9][:20] + spliced[10][20:]  # same length: two records' halves
    run_streams(
        check,
        {
            0: b"".join(lines),
            1: b"".join(lost),
            2: b"".join(duplicated),
            3: b"".join(reordered),
            4: b"".join(broken),
        },
    )
    tally = check.finish(counts)
    assert tally.duplicated == 1
    assert tally.reordered == 1  # line 13 is sender 1's seq 4: its seq 3 (line 10) came late
    assert tally.corrupted == 1
    assert tally.lost == 2  # the one left out, and the corrupted one
    check = verifier()
    run_streams(check, {0: b"".join(spliced)})
    assert check.tally.corrupted == 1


def test_ncat_prefixes_are_stripped_and_a_prefix_inside_a_line_corrupts_it() -> None:
    counts = {0: 12, 1: 12, 2: 12}
    lines = stream(counts)
    check = verifier(echo=False, readers=[3, 4])
    relayed = []
    for index, line in enumerate(lines):
        sender = int(line[1:5])
        if index == 17:  # ncat relayed this line in two chunks: its prefix lands inside it
            relayed.append(b"<user%d> " % (sender + 5) + line[:30])
            relayed.append(b"<user%d> " % (sender + 5) + line[30:])
        elif index % 3 == 0:  # one prefix per relayed chunk of up to three lines
            relayed.append(b"<user%d> " % (sender + 5) + line)
        else:
            relayed.append(line)
    data = b"<announce> 127.0.0.1 is connected as <user9>.\n" + b"".join(relayed)
    # Readers 3 and 4 do not send: they must see everything but the one broken line.
    run_streams(check, {0: data, 1: data})
    tally = check.finish(counts)
    assert tally.corrupted == 2
    assert tally.lost == 2
    assert tally.other_lines == 2
    assert tally.valid == 2 * (len(lines) - 1)
    assert tally.prefixes > 0


def test_ncat_read_times_map_through_stripped_prefixes() -> None:
    """A record takes the arrival time of the read that carried its last byte."""
    lines = stream({0: 6}, stamp_us=0)
    check = verifier(echo=False, readers=[1])
    inbox = Inbox(256)
    reads = [b"<user5> " + lines[0] + lines[1][:50], lines[1][50:] + b"<user5> " + lines[2][:3]]
    reads.append(lines[2][3:] + b"<user5> " + b"".join(lines[3:]))
    for n, read in enumerate(reads):
        deliver(inbox, read, pieces=1, arrival_ns=EPOCH + (n + 1) * 1_000_000)
    check.feed([(0, inbox)])
    tally = check.finish({0: 6})
    assert tally.valid == 6
    assert tally.lost == 0
    counts = {round(2 ** ((i + 0.5) / 128) / 1000): c for i, c in enumerate(tally.histogram) if c}
    assert counts == {1: 1, 2: 1, 3: 4}


def test_layout_gives_every_sender_an_observer_in_its_process() -> None:
    plan = RunPlan(server="lanchatd", mode="throughput", clients=10, stalled=0, workers=2)
    groups, senders, stalled, observers = layout(plan)
    assert sorted(c for g in groups for c in g) == list(range(10))
    assert senders == list(range(10))
    assert not stalled
    for sender, observer in observers.items():
        assert sender != observer
        assert any(sender in g and observer in g for g in groups)
    plan = RunPlan(server="ncat", mode="throughput", clients=100, stalled=10, workers=3)
    groups, senders, stalled, observers = layout(plan)
    assert stalled == list(range(90, 100))
    assert not set(observers.values()) & set(stalled)
    assert not set(observers.values()) & set(senders)


@pytest.mark.timeout(180)
def test_tiny_benchmark_run_reports_a_clean_lanchatd(tmp_path: Path) -> None:
    servers = "lanchatd,ncat" if Ncat.available() else "lanchatd"
    out = tmp_path / "bench.json"
    argv = "--clients 10 --mode throughput,latency --senders 3 --stalled 2 --stalled-clients 10"
    argv += " --repeat 1 --duration 0.6 --warmup 0.2 --rate 200"
    status = main([*argv.split(), "--servers", servers, "--json", str(out), "--quiet"])
    assert status == 0
    result = json.loads(out.read_text())
    assert set(result) >= {"meta", "runs", "summary"}
    assert result["meta"]["command"].startswith("python -m benchmarks.chatbench")
    assert len(result["runs"]) == 3 * len(servers.split(","))
    configs = {(r["server"], r["mode"], r["clients"], r["stalled"]) for r in result["summary"]}
    for server in servers.split(","):
        assert (server, "throughput", 10, 0) in configs
        assert (server, "latency", 10, 0) in configs
        assert (server, "throughput", 10, 2) in configs
    for row in result["summary"]:
        assert set(report.SUMMARY_KEYS) <= set(row)
        assert row["repeats"] == 1
        assert not row["failed"]
        assert row["deliveries_per_s"] > 0
        assert row["join_s"] > 0
        assert row["rss_idle_kib"] > 0
        assert row["threads_loaded"] >= 1
        assert row["server_cpu_us_per_delivery"] is not None
        assert row["generator_cpu_s"] > 0
        assert row["latency_p99_ms"] is not None
        if row["server"] == "lanchatd":
            errors = ("lost", "duplicated", "reordered", "corrupted", "unexpected")
            assert {key: row[key] for key in errors} == dict.fromkeys(errors, 0), row
        if row["stalled"]:
            assert row["stalled_ratio"] is not None
    latency = [r for r in result["summary"] if r["mode"] == "latency"]
    for row in latency:
        # 200 messages/s for 0.6 s, to every reading client (ncat does not echo).
        readers = 10 if row["server"] == "lanchatd" else 9
        assert row["deliveries_per_s"] == pytest.approx(200 * readers, rel=0.1)
