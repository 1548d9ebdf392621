"""``python -m benchmarks.chatbench``: lanchatd against ngircd, the tutorial's server and ncat.

Example (the full comparison of issue 13)::

    .venv/bin/python -m benchmarks.chatbench --servers lanchatd,ngircd,naive,ncat \\
        --clients 10,100,1000 --mode throughput,latency --repeat 3 --json bench.json

What history costs (issue 14): ``--servers lanchatd,lanchatd-nohistory`` runs lanchatd with
history on and off in turns; the goals table gives the ratio.

Old code against new (a change's A/B): ``CHATBENCH_BASE=DIR`` and ``--servers
lanchatd,lanchatd-base`` run this checkout's lanchatd and DIR's (say ``git worktree add DIR
HEAD~1``) in turns, under the same load.

See docs/performance.md for the method and what every column means.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Final

from benchmarks.chatbench import report
from benchmarks.chatbench.runner import RunError, RunPlan, run_once
from benchmarks.chatbench.servers import BASE_ENV, SERVERS, Ncat, Ngircd, parse_setting

#: Peers that are Debian packages: whether installed, and the hint if not.
PACKAGED: Final = {
    "ncat": (Ncat.available, "apt-get install ncat"),
    "ngircd": (Ngircd.available, "apt-get install ngircd"),
}


def _list(kind: type, text: str) -> list[Any]:
    return [kind(part) for part in text.split(",") if part.strip()]


def _installed(name: str) -> bool:
    return name not in PACKAGED or PACKAGED[name][0]()


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    default_servers = ",".join(
        name for name, kind in SERVERS.items() if _installed(name) and not kind.variant
    )
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.chatbench",
        description="Benchmark chat servers on loopback: deliveries/s, latency, loss, "
        "join time, memory and CPU. Every run starts the server fresh.",
    )
    known = ",".join(SERVERS)
    parser.add_argument("--servers", default=default_servers,
                        help=f"comma-separated, of {known} [{default_servers}]")  # fmt: skip
    parser.add_argument("--clients", default="10,100,1000", help="values of N [10,100,1000]")
    parser.add_argument("--mode", default="throughput,latency",
                        help="throughput and/or latency [throughput,latency]")  # fmt: skip
    parser.add_argument("--repeat", type=int, default=3, help="runs per configuration [3]")
    parser.add_argument("--stalled", type=int, default=10,
                        help="stalled readers in that scenario; 0 skips it [10]")  # fmt: skip
    parser.add_argument("--stalled-clients", type=int, default=100,
                        help="N of the stalled-readers scenario [100]")  # fmt: skip
    parser.add_argument("--senders", type=int, default=10, help="S, clients that send [10]")
    parser.add_argument("--window", type=int, default=32,
                        help="throughput mode: messages in flight per sender [32]")  # fmt: skip
    parser.add_argument("--rate", type=float, default=50.0,
                        help="latency mode: messages/s in total, open loop [50]")  # fmt: skip
    parser.add_argument("--duration", type=float, default=5.0,
                        help="measured seconds per run [5]")  # fmt: skip
    parser.add_argument("--warmup", type=float, default=1.0,
                        help="seconds of load before the measured window [1]")  # fmt: skip
    parser.add_argument("--workers", type=int, default=2,
                        help="load-generator processes [2]")  # fmt: skip
    parser.add_argument("--connect-concurrency", type=int, default=0,
                        help="clients awaiting the server's first byte at once; 0: all, "
                        "within the server's listen backlog [0]")  # fmt: skip
    parser.add_argument("--nice", type=int, default=0,
                        help="run servers and generators at this niceness (root may go "
                        "below 0 to shield them from other load on the machine) [0]")  # fmt: skip
    parser.add_argument("--json", type=Path, help="write every run and the summary here")
    parser.add_argument("--server-log", help="keep lanchatd's logs in this directory")
    parser.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                        help="lanchatd configuration on top of the benchmark's (VALUE in TOML: "
                        '0, true, "text"); repeatable, e.g. --set limits.rate=0')  # fmt: skip
    parser.add_argument("--web", action="store_true",
                        help="lanchatd: half the clients (every other generator process) are "
                        "browsers on its WebSocket port; compares their deliveries/s with "
                        "the line clients' in the same run")  # fmt: skip
    parser.add_argument("--quiet", action="store_true", help="no progress lines on stderr")
    parser.add_argument("--from-json", type=Path, metavar="PATH",
                        help="run nothing: print the table of an earlier --json file")  # fmt: skip
    args = parser.parse_args(argv)
    args.servers = _list(str, args.servers)
    args.clients = _list(int, args.clients)
    args.mode = _list(str, args.mode)
    for server in args.servers:
        if server not in SERVERS:
            parser.error(f"unknown server {server!r}")
    for server in args.servers:
        if not _installed(server) and not args.from_json:
            parser.error(f"{server} is not installed (Debian: {PACKAGED[server][1]})")
    if "lanchatd-base" in args.servers and not args.from_json:
        base = os.environ.get(BASE_ENV, "")
        if not base or not Path(base, "lanchatd", "__main__.py").is_file():
            parser.error(f"lanchatd-base runs {BASE_ENV}/lanchatd: set {BASE_ENV} to a checkout")
    try:
        args.lanchatd_settings = tuple(parse_setting(text) for text in args.set)
    except ValueError as error:
        parser.error(f"--set {error}")
    for mode in args.mode:
        if mode not in ("throughput", "latency"):
            parser.error(f"unknown mode {mode!r}")
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    return args


def plans(args: argparse.Namespace) -> list[RunPlan]:
    """Every run, repeats outermost and servers innermost, so noise hits all servers alike."""
    common = {
        "senders": args.senders,
        "window": args.window,
        "rate": args.rate,
        "duration": args.duration,
        "warmup": args.warmup,
        "workers": args.workers,
        "connect_concurrency": args.connect_concurrency,
        "server_log": args.server_log,
        "lanchatd_settings": args.lanchatd_settings,
    }
    matrix = [(n, mode, 0) for n in args.clients for mode in args.mode]
    if args.stalled:
        baseline = (args.stalled_clients, "throughput", 0)
        if baseline not in matrix:
            matrix.append(baseline)
        matrix.append((args.stalled_clients, "throughput", args.stalled))
    out = []
    for _ in range(args.repeat):
        for n, mode, stalled in matrix:
            for server in args.servers:
                plan = RunPlan(
                    server=server,
                    mode=mode,
                    clients=n,
                    stalled=stalled,
                    web=args.web and server == "lanchatd",
                    **common,
                )
                plan.validate()
                out.append(plan)
    return out


def _git(*args: str) -> str:
    try:
        result = subprocess.run(
            ["git", *args],
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
            cwd=Path(__file__).resolve().parent,
        )
    except OSError:
        return ""
    return result.stdout.strip()


def meta(args: argparse.Namespace, argv: list[str]) -> dict[str, Any]:
    import numpy  # noqa: PLC0415 - only to record its version

    versions = {}
    for name in args.servers:
        try:
            versions[name] = SERVERS[name]().version()
        except (OSError, subprocess.SubprocessError):
            versions[name] = "?"
    return {
        "command": "python -m benchmarks.chatbench " + shlex.join(argv),
        "started": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "git_commit": _git("rev-parse", "--short", "HEAD"),
        "git_dirty": bool(_git("status", "--porcelain", "--", "lanchatd")),
        "base": os.environ.get(BASE_ENV) if "lanchatd-base" in args.servers else None,
        "python": platform.python_version(),
        "numpy": numpy.__version__,
        "kernel": platform.release(),
        "cpus": os.cpu_count(),
        "loadavg_start": os.getloadavg(),
        "server_versions": versions,
        "settings": {
            k: v
            for k, v in vars(args).items()
            if k not in ("json", "quiet", "server_log", "from_json", "lanchatd_settings")
        },
    }


def print_summary(rows: list[dict[str, Any]], settings: dict[str, Any]) -> None:
    print(
        f"\nchatbench: medians of {settings['repeat']} run(s); {settings['senders']} senders, "
        f"80-byte lines, window {settings['window']} (throughput), {settings['rate']:g} msg/s "
        f"(latency), {settings['duration']:g} s measured; errors are the max over repeats"
    )
    print(report.table(rows))
    for line in report.notes(rows):
        print(line)
    print("\nDeliveries/s and latency p99 by server (medians):")
    print(report.side_by_side(rows))
    goals = report.goals(rows)
    if goals:
        print("\nGoals (issue 13), lanchatd against the best peer:")
        print(report.goals_table(goals))


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    if args.from_json:
        document = json.loads(args.from_json.read_text())
        settings = document["meta"]["settings"]
        print_summary(report.summarise(document["runs"], settings["servers"]), settings)
        return 0
    if args.nice:
        # Inherited by every server and generator process started from here.
        try:
            os.setpriority(os.PRIO_PROCESS, 0, args.nice)
        except OSError as error:
            print(f"chatbench: cannot set niceness {args.nice}: {error}", file=sys.stderr)
            return 2
    # SIGTERM unwinds like Ctrl-C, so every run's servers and generators are cleaned up.
    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        return _run_all(args, argv)
    finally:
        signal.signal(signal.SIGTERM, previous)


def _run_all(args: argparse.Namespace, argv: list[str]) -> int:
    todo = plans(args)
    info = meta(args, argv)
    runs: list[dict[str, Any]] = []
    started = time.monotonic()
    for number, plan in enumerate(todo, 1):
        if not args.quiet:
            print(f"[{number}/{len(todo)}] {plan.label} ...", end="", file=sys.stderr, flush=True)
        try:
            result = run_once(plan)
        except RunError as error:
            result = {"server": plan.server, "mode": plan.mode, "clients": plan.clients,
                      "stalled": plan.stalled, "error": str(error)}  # fmt: skip
            if not args.quiet:
                print(f" FAILED: {error}", file=sys.stderr, flush=True)
        else:
            if not args.quiet:
                print(" " + _progress(result), file=sys.stderr, flush=True)
        runs.append(result)
    info["seconds"] = round(time.monotonic() - started, 1)
    info["loadavg_end"] = os.getloadavg()
    rows = report.summarise(runs, args.servers)
    print_summary(rows, info["settings"])
    if args.json:
        document = {"meta": info, "summary": rows, "runs": runs}
        args.json.write_text(json.dumps(document, indent=1) + "\n")
        print(f"\nJSON: {args.json}")
    return 1 if any(r.get("error") for r in runs) else 0


def _terminate(signum: int, _frame: object) -> None:
    raise SystemExit(128 + signum)


def _progress(result: dict[str, Any]) -> str:
    bad = {k: result[k] for k in report.ERROR_KEYS if result[k]}
    p99 = result["latency_p99_ms"]
    return (
        f"{result['deliveries_per_s']:,.0f} deliveries/s, p99 "
        f"{'-' if p99 is None else f'{p99:.2f}'} ms, join {result['join_s']:.2f} s, "
        f"other CPU {result['other_cpu_s']:.2f} s{', ' + str(bad) if bad else ''}"
    )


if __name__ == "__main__":
    sys.exit(main())
