"""The chat benchmark (benchmarks/chatbench): its verifier, and a tiny run against real servers.

The full benchmark is too slow for the default test run; this runs it for about a second
per server and checks the report's structure and that lanchatd (and ngircd) lost,
duplicated, reordered and corrupted nothing. Figures are never asserted against targets.
"""

from __future__ import annotations

import json
import os
import random
import shutil
import socket
import time
from pathlib import Path

import pytest

np = pytest.importorskip("numpy", reason="the benchmark needs numpy (pip install -e '.[bench]')")

from benchmarks.chatbench import progress, records, report  # noqa: E402
from benchmarks.chatbench.__main__ import main  # noqa: E402
from benchmarks.chatbench.runner import RunPlan, layout  # noqa: E402
from benchmarks.chatbench.servers import (  # noqa: E402
    BASE_ENV,
    LanchatdBase,
    Naive,
    Ncat,
    Ngircd,
    lanchatd_config,
    parse_setting,
)
from benchmarks.chatbench.verify import RELAYS, Inbox, Verifier  # noqa: E402
from tests.support import WAIT  # noqa: E402

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


def verifier(*, echo: bool = True, readers: list[int] = READERS, relay: str = "ncat") -> Verifier:
    check = Verifier(
        readers, SENDERS, echo=echo, relay=None if echo else RELAYS[relay], epoch_ns=EPOCH
    )
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


def irc(line: bytes) -> bytes:
    """``line`` as ngircd relays a PRIVMSG to #bench: prefixed, and ending in CR LF."""
    nick = line[:5]
    return b":%s!~%s@127.0.0.1 PRIVMSG #bench :%s\r\n" % (nick, nick, line[:-1])


def test_irc_lines_are_unwrapped_and_other_irc_lines_skipped() -> None:
    counts = {0: 15, 1: 15, 2: 15}
    lines = stream(counts)
    check = verifier(echo=False, readers=[3, 4], relay="ngircd")
    relayed = [irc(line) for line in lines]
    relayed.insert(4, b":c0009!~c0009@127.0.0.1 JOIN :#bench\r\n")
    relayed[20] = relayed[20][:60] + b"X" + relayed[20][61:]  # inside the record: corrupted
    relayed[30] = relayed[30].replace(b"\r\n", b"\n")  # a bare LF is still a line end
    run_streams(check, dict.fromkeys(range(2), b"".join(relayed)))
    tally = check.finish(counts)
    assert tally.prefixes == 2 * len(lines)
    assert tally.other_lines == 2
    assert tally.corrupted == 2
    assert tally.lost == 2
    assert tally.valid == 2 * (len(lines) - 1)
    assert (tally.duplicated, tally.reordered, tally.unexpected) == (0, 0, 0)


def test_irc_read_times_map_through_removed_prefixes_and_crs() -> None:
    lines = [irc(line) for line in stream({0: 4}, stamp_us=0)]
    check = verifier(echo=False, readers=[1], relay="ngircd")
    inbox = Inbox(256)
    data = b"".join(lines)
    # Reads end just after line 0's CR, inside line 2's prefix, and at the end.
    cuts = [len(lines[0]) - 1, len(lines[0]) + len(lines[1]) + 10, len(data)]
    start = 0
    for n, cut in enumerate(cuts):
        deliver(inbox, data[start:cut], pieces=1, arrival_ns=EPOCH + (n + 1) * 1_000_000)
        start = cut
    check.feed([(0, inbox)])
    tally = check.finish({0: 4})
    assert tally.valid == 4
    assert tally.lost == 0
    counts = {round(2 ** ((i + 0.5) / 128) / 1000): c for i, c in enumerate(tally.histogram) if c}
    # Line 0's LF came with read 2 (2 ms), line 1 with read 2, lines 2 and 3 with read 3.
    assert counts == {2: 2, 3: 2}


def test_naive_server_speaks_the_tutorial_wire() -> None:
    """Our copy of the tutorial's server: NICK, unterminated joins, chunks relayed as they are."""
    with Naive() as server:
        server.start()
        tut = socket.create_connection(("127.0.0.1", server.port), timeout=WAIT)
        assert tut.recv(1024) == b"NICK"
        tut.send(b"tut")
        assert read_until(tut, b"Server!") == b"tut Bergabung!Terkoneksi dengan Server!"
        bob = socket.create_connection(("127.0.0.1", server.port), timeout=WAIT)
        assert bob.recv(1024) == b"NICK"
        bob.send(b"bob")
        assert read_until(bob, b"Server!") == b"bob Bergabung!Terkoneksi dengan Server!"
        assert read_until(tut, b"Bergabung!") == b"bob Bergabung!"
        bob.send(b"alice: I am alice")  # anyone may speak as anyone
        assert read_until(tut, b"alice") == b"alice: I am alice"
        assert read_until(bob, b"alice") == b"alice: I am alice"
        tut.close()
        bob.close()


def read_until(sock: socket.socket, end: bytes, timeout: float = WAIT) -> bytes:
    """Read until the bytes so far end with ``end``; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    data = b""
    while not data.endswith(end):
        sock.settimeout(max(0.01, deadline - time.monotonic()))
        chunk = sock.recv(1024)
        assert chunk, f"closed; have {data!r}"
        data += chunk
    return data


def test_lanchatd_settings_override_and_extend_the_benchmark_config() -> None:
    settings = [parse_setting("limits.rate = 5"), parse_setting('history.mode="off"')]
    assert lanchatd_config(settings, drop=["limits.per_address"]) == (
        "[server]\nmax_clients = 5000\n\n"
        "[limits]\nrate = 5\n\n"
        '[log]\nformat = "json"\nmessage_text = false\n\n'
        '[history]\nmode = "off"\n\n'
    )
    for bad in ("rate=5", "limits.rate", "limits.rate=", "log.format=json"):
        with pytest.raises(ValueError, match=r"SECTION\.KEY=VALUE|TOML"):
            parse_setting(bad)
    with pytest.raises(SystemExit) as exit_info:
        main(["--set", "log.format=json", "--quiet"])
    assert exit_info.value.code == 2


def test_lanchatd_base_runs_the_lanchatd_of_the_checkout_chatbench_base_names(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv(BASE_ENV, raising=False)
    with pytest.raises(SystemExit) as exit_info:
        main(["--servers", "lanchatd,lanchatd-base", "--quiet"])
    assert exit_info.value.code == 2
    base = tmp_path / "base"
    shutil.copytree(
        Path(__file__).resolve().parents[1] / "lanchatd",
        base / "lanchatd",
        ignore=shutil.ignore_patterns("__pycache__"),
    )
    monkeypatch.setenv(BASE_ENV, str(base))
    with LanchatdBase() as server:
        server.start()
        environ = Path(f"/proc/{server.pid}/environ").read_bytes().split(b"\0")
        paths = next(v for v in environ if v.startswith(b"PYTHONPATH=")).split(b"=", 1)[1]
        assert paths.split(b":")[0] == str(base).encode()
        with socket.create_connection(("127.0.0.1", server.port), timeout=WAIT) as sock:
            sock.settimeout(WAIT)
            assert sock.recv(4) == b"NICK"


def test_layout_gives_every_process_an_observer_of_every_sender() -> None:
    plan = RunPlan(server="lanchatd", mode="throughput", clients=10, stalled=0, workers=2)
    groups, senders, stalled, observers = layout(plan)
    assert sorted(c for g in groups for c in g) == list(range(10))
    assert senders == list(range(10))
    assert not stalled
    assert len(observers) == len(groups)
    for group, watching in zip(groups, observers, strict=True):
        assert sorted(watching) == senders
        for sender, observer in watching.items():
            assert sender != observer
            assert observer in group
    plan = RunPlan(server="ncat", mode="throughput", clients=100, stalled=10, workers=3)
    groups, senders, stalled, observers = layout(plan)
    assert stalled == list(range(90, 100))
    for watching in observers:
        assert sorted(watching) == senders
        assert not set(watching.values()) & set(stalled)
        assert not set(watching.values()) & set(senders)


def test_the_window_waits_for_the_process_that_read_least() -> None:
    fd = progress.create(processes=2, senders=2)
    try:
        first = progress.Progress(fd, 2, [0, 5], index=0)
        second = progress.Progress(fd, 2, [0, 5], index=1)
    finally:
        os.close(fd)
    try:
        first.add(5, 30)
        assert (first.slowest(5), second.slowest(5)) == (0, 0)
        second.add(5, 12)
        second.add(5, 8)
        second.add(0, 3)
        assert (first.slowest(5), second.slowest(5)) == (20, 20)
        assert first.slowest(0) == 0
        first.add(0, 7)
        assert second.slowest(0) == 3
    finally:
        first.close()
        second.close()


def tiny_run(tmp_path: Path, servers: str, stalled: str) -> dict:
    """chatbench at N=10 for 0.6 s per run, 200 msg/s in latency mode; its JSON."""
    out = tmp_path / "bench.json"
    argv = f"--clients 10 --mode throughput,latency --senders 3 {stalled} --repeat 1"
    argv += " --duration 0.6 --warmup 0.2 --rate 200"
    status = main([*argv.split(), "--servers", servers, "--json", str(out), "--quiet"])
    assert status == 0
    return json.loads(out.read_text())


@pytest.mark.timeout(180)
def test_tiny_benchmark_run_reports_a_clean_lanchatd(tmp_path: Path) -> None:
    servers = "lanchatd,lanchatd-nohistory" + (",ncat" if Ncat.available() else "")
    logs = tmp_path / "logs"
    result = tiny_run(tmp_path, servers, f"--stalled 2 --stalled-clients 10 --server-log {logs}")
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
        if row["server"].startswith("lanchatd"):
            errors = ("lost", "duplicated", "reordered", "corrupted", "unexpected")
            assert {key: row[key] for key in errors} == dict.fromkeys(errors, 0), row
        if row["stalled"]:
            assert row["stalled_ratio"] is not None
    latency = [r for r in result["summary"] if r["mode"] == "latency"]
    for row in latency:
        # 200 messages/s for 0.6 s, to every reading client (ncat does not echo).
        readers = 10 if row["server"].startswith("lanchatd") else 9
        assert row["deliveries_per_s"] == pytest.approx(200 * readers, rel=0.1)
    # The variant is lanchatd with history off: only the other one opened a history file.
    opened = {
        log.name.rsplit("-", 3)[0]: '"history_opened"' in log.read_text() for log in logs.iterdir()
    }
    assert opened == {"lanchatd": True, "lanchatd-nohistory": False}


@pytest.mark.timeout(120)
def test_tiny_web_run_compares_websocket_and_line_clients(tmp_path: Path) -> None:
    """--web: half the clients on lanchatd's WebSocket port, nothing lost or corrupted."""
    out = tmp_path / "bench.json"
    argv = "--clients 10 --mode throughput,latency --senders 3 --stalled 0 --repeat 1"
    argv += " --duration 0.6 --warmup 0.2 --rate 200 --web --servers lanchatd"
    assert main([*argv.split(), "--json", str(out), "--quiet"]) == 0
    for row in json.loads(out.read_text())["summary"]:
        errors = ("lost", "duplicated", "reordered", "corrupted", "unexpected", "other_lines")
        assert {key: row[key] for key in errors} == dict.fromkeys(errors, 0), row
        assert row["web_deliveries_per_client_s"] > 0
        assert row["web_ratio"] == pytest.approx(1.0, rel=0.2)  # one room: the same lines


@pytest.mark.timeout(180)
def test_tiny_benchmark_run_of_the_naive_and_ngircd_peers(tmp_path: Path) -> None:
    servers = "naive,ngircd" if Ngircd.available() else "naive"
    result = tiny_run(tmp_path, servers, "--stalled 0")
    assert len(result["runs"]) == 2 * len(servers.split(","))
    for row in result["summary"]:
        assert not row["failed"]
        assert row["deliveries_per_s"] > 0
        assert row["server_cpu_us_per_delivery"] is not None
        # The naive server corrupts lines when chunks of two senders interleave, never more.
        assert (row["duplicated"], row["reordered"], row["unexpected"]) == (0, 0, 0), row
        assert row["lost"] == row["corrupted"], row
        if row["server"] == "ngircd":
            assert row["lost"] == 0, row
        if row["mode"] == "latency":
            # 200 messages/s for 0.6 s, to every reading client (ngircd does not echo).
            readers = 10 if row["server"] == "naive" else 9
            assert row["recipients_per_message"] == readers
            assert row["deliveries_per_s"] == pytest.approx(200 * readers, rel=0.1)
            assert row["messages_per_s"] == pytest.approx(200, rel=0.1)


def summary_row(server: str, mode: str, clients: int, **figures: float) -> dict:
    row = dict.fromkeys(report.SUMMARY_KEYS)
    row.update(dict.fromkeys(report.MAX_KEYS, 0))
    row.update(server=server, mode=mode, clients=clients, stalled=0, failed=0, **figures)
    return row


def test_goals_compare_lanchatd_with_the_best_peer_of_each_configuration() -> None:
    rows = [
        summary_row(
            "lanchatd",
            "throughput",
            10,
            deliveries_per_s=700e3,
            server_cpu_us_per_delivery=0.5,
            join_s=0.01,
        ),
        summary_row(
            "ngircd",
            "throughput",
            10,
            deliveries_per_s=600e3,
            server_cpu_us_per_delivery=0.3,
            join_s=0.01,
        ),
        summary_row("naive", "throughput", 10, deliveries_per_s=750e3, corrupted=9, lost=9),
        summary_row(
            "lanchatd", "throughput", 1000, deliveries_per_s=7e6, join_s=0.9, rss_per_client_kib=30
        ),
        summary_row("ncat", "throughput", 1000, deliveries_per_s=5e6, join_s=5.0),
        # A variant of lanchatd: never the best peer, only what history on is compared with.
        summary_row("lanchatd-nohistory", "throughput", 1000, deliveries_per_s=8e6, join_s=0.3),
        summary_row("lanchatd-nohistory", "throughput", 100, deliveries_per_s=2e6),
        summary_row("lanchatd", "throughput", 100, deliveries_per_s=1.9e6),
        summary_row("ncat", "latency", 1000, latency_p99_ms=9.0, join_s=6.0),
        summary_row("lanchatd", "latency", 10, latency_p99_ms=0.8),
        summary_row("ncat", "latency", 10, latency_p99_ms=20.0),
        summary_row("lanchatd", "latency", 100, latency_p99_ms=3.0),
        summary_row("ngircd", "latency", 100, latency_p99_ms=2.0),
        summary_row("naive", "latency", 100, latency_p99_ms=25.0),
    ]
    table = {g.name: (g.verdict, g.ours, g.peer) for g in report.goals(rows)}
    assert table == {
        "deliveries/s N=10 >= 1.0x best peer, clean": (
            False,
            "700.0k, clean",
            "naive 750.0k (0.93x)",
        ),
        "deliveries/s N=100 >= 1.0x best peer, clean": (None, "1.90M, clean", "-"),
        "deliveries/s N=1000 >= 1.5x best peer, clean": (
            False,
            "7.00M, clean",
            "ncat 5.00M (1.40x)",
        ),
        "latency p99 N=10 <= 1 ms": (True, "0.80 ms", "ncat 20.00 ms"),
        "latency p99 N=100 <= best peer's": (False, "3.00 ms", "ngircd 2.00 ms"),
        "server CPU/delivery N=10 <= 2x ngircd's": (True, "0.50 us", "ngircd 0.30 us (1.7x)"),
        "1000 clients joined <= 1.0 s (worst median)": (True, "0.90 s", "ncat 6.00 s"),
        "(issue 6) RSS <= 40 KiB per client at N=1000": (True, "30.0 KiB", "-"),
        "(issue 14) deliveries/s N=100, history on >= 0.9x off": (
            True,
            "1.90M (0.95x)",
            "history off 2.00M",
        ),
        "(issue 14) deliveries/s N=1000, history on >= 0.9x off": (
            False,
            "7.00M (0.88x)",
            "history off 8.00M",
        ),
    }
    lines = report.goals_table(report.goals(rows)).splitlines()
    cells = [cell.strip() for cell in lines[2].strip("|").split("|")]
    assert cells == ["FAIL", "deliveries/s N=10 >= 1.0x best peer, clean", "700.0k, clean",
                     "naive 750.0k (0.93x)"]  # fmt: skip
