"""Summaries of runs: medians of repeats, a table for people, and JSON for comparing over time.

Rates, latencies, times, memory and CPU are medians over the repeats of a configuration;
error counts (lost, duplicated, reordered, corrupted, unexpected) are the *maximum* over
the repeats, so one bad repeat is never hidden by two good ones.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Final

from benchmarks.chatbench.servers import SERVERS, LanchatdNoHistory

MEDIAN_KEYS: Final = (
    "deliveries_per_s",
    "messages_per_s",
    "recipients_per_message",
    "messages_sent",
    "latency_p50_ms",
    "latency_p99_ms",
    "latency_max_ms",
    "join_s",
    "join_server_cpu_s",
    "join_generator_cpu_s",
    "connect_gate",
    "drain_s",
    "rss_idle_kib",
    "rss_loaded_kib",
    "rss_per_client_kib",
    "threads_idle",
    "threads_loaded",
    "server_cpu_s",
    "server_cpu_us_per_delivery",
    "server_cpu_us_per_message",
    "generator_cpu_s",
    "generator_cpu_us_per_delivery",
    "generator_verify_s",
    "generator_lag_mean_ms",
    "generator_lag_max_ms",
    "other_cpu_s",
    "softirq_s",
    "prefixes",
    "web_deliveries_per_client_s",
    "line_deliveries_per_client_s",
    "web_ratio",
)
MAX_KEYS: Final = (
    "lost",
    "duplicated",
    "reordered",
    "corrupted",
    "unexpected",
    "invalid_seq",
    "other_lines",
    "readers_dropped",
    "stalled_dropped",
)
SUMMARY_KEYS: Final = (
    "server",
    "mode",
    "clients",
    "stalled",
    "readers",
    "repeats",
    "failed",
    *MEDIAN_KEYS,
    *MAX_KEYS,
    "stalled_ratio",
)

ERROR_KEYS: Final = ("lost", "duplicated", "reordered", "corrupted", "unexpected")


def _median(values: Iterable[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return statistics.median(present) if present else None


def config_key(run: dict[str, Any]) -> tuple[str, str, int, int]:
    return (run["server"], run["mode"], run["clients"], run["stalled"])


def summarise(runs: list[dict[str, Any]], server_order: list[str]) -> list[dict[str, Any]]:
    """One row per configuration, in a stable order (mode, N, stalled, server)."""
    groups: dict[tuple[str, str, int, int], list[dict[str, Any]]] = {}
    for run in runs:
        groups.setdefault(config_key(run), []).append(run)
    rows = []
    for key, group in groups.items():
        done = [r for r in group if not r.get("error")]
        row: dict[str, Any] = dict(zip(("server", "mode", "clients", "stalled"), key, strict=True))
        row["readers"] = group[0]["clients"] - group[0]["stalled"]
        row["repeats"] = len(done)
        row["failed"] = len(group) - len(done)
        for name in MEDIAN_KEYS:
            row[name] = _median(r.get(name) for r in done)
        for name in MAX_KEYS:
            row[name] = max((r.get(name, 0) for r in done), default=None)
        row["stalled_ratio"] = None
        rows.append(row)
    by_key = {config_key(r): r for r in rows}
    for row in rows:
        if row["stalled"]:
            base = by_key.get((row["server"], "throughput", row["clients"], 0))
            if base and base["deliveries_per_s"] and row["deliveries_per_s"] is not None:
                # Per reading client: the stalled run has fewer readers than its baseline.
                ours = row["deliveries_per_s"] / row["readers"]
                theirs = base["deliveries_per_s"] / base["readers"]
                row["stalled_ratio"] = ours / theirs
    order = {name: i for i, name in enumerate(server_order)}
    rows.sort(
        key=lambda r: (
            r["stalled"] > 0,
            r["mode"] != "throughput",
            r["clients"],
            order.get(r["server"], 99),
        )
    )
    return rows


def _num(value: float | None, style: str) -> str:
    if value is None:
        return "-"
    if style == "rate":
        if value >= 1e6:
            return f"{value / 1e6:.2f}M"
        if value >= 1e3:
            return f"{value / 1e3:.1f}k"
        return f"{value:.0f}"
    if style == "ms":
        return f"{value:.2f}" if value < 10 else f"{value:.1f}" if value < 1000 else f"{value:.0f}"
    if style == "int":
        return f"{value:.0f}"
    if style == "s":
        return f"{value:.2f}"
    if style == "us":
        return f"{value:.2f}"
    if style == "kib":
        return f"{value:.1f}"
    if style == "mib":
        return f"{value / 1024:.1f}"
    return str(value)


COLUMNS: Final = (
    ("server", "server", None),
    ("mode", "mode", None),
    ("N", "clients", "int"),
    ("stl", "stalled", "int"),
    ("deliv/s", "deliveries_per_s", "rate"),
    ("msg/s", "messages_per_s", "rate"),
    ("p50 ms", "latency_p50_ms", "ms"),
    ("p99 ms", "latency_p99_ms", "ms"),
    ("max ms", "latency_max_ms", "ms"),
    ("lost", "lost", "int"),
    ("dup", "duplicated", "int"),
    ("reord", "reordered", "int"),
    ("corrupt", "corrupted", "int"),
    ("join s", "join_s", "s"),
    ("RSS0 MiB", "rss_idle_kib", "mib"),
    ("KiB/cli", "rss_per_client_kib", "kib"),
    ("thr 0/N", None, None),
    ("srv CPU s", "server_cpu_s", "s"),
    ("srv us/dlv", "server_cpu_us_per_delivery", "us"),
    ("srv us/msg", "server_cpu_us_per_message", "us"),
    ("gen CPU s", "generator_cpu_s", "s"),
    ("gen us/dlv", "generator_cpu_us_per_delivery", "us"),
    ("other CPU s", "other_cpu_s", "s"),
)


def table(rows: list[dict[str, Any]]) -> str:
    """The summary as an aligned text table (Markdown-compatible)."""
    header = [title for title, _, _ in COLUMNS]
    body = []
    for row in rows:
        cells = []
        for _title, key, style in COLUMNS:
            if key is None:
                cells.append(
                    f"{_num(row['threads_idle'], 'int')}/{_num(row['threads_loaded'], 'int')}"
                )
            elif style is None:
                cells.append(str(row[key]))
            else:
                cells.append(_num(row[key], style))
        if row["failed"]:
            cells[0] += f" ({row['failed']} failed)"
        body.append(cells)
    return _grid(header, body)


def _grid(header: list[str], body: list[list[str]]) -> str:
    """Cells as an aligned, right-justified Markdown table."""
    widths = [max(len(str(c)) for c in column) for column in zip(header, *body, strict=True)]

    def line(cells: list[str]) -> str:
        return "| " + " | ".join(c.rjust(w) for c, w in zip(cells, widths, strict=True)) + " |"

    rule = "|" + "|".join("-" * (w + 1) + ":" for w in widths) + "|"
    return "\n".join([line(header), rule, *(line(cells) for cells in body)])


#: The side-by-side table: (what, mode, key, style) per block of rows.
SIDE_BY_SIDE: Final = (
    ("deliv/s", "throughput", "deliveries_per_s", "rate"),
    ("p99 ms, 50 msg/s", "latency", "latency_p99_ms", "ms"),
    ("srv us/dlv", "throughput", "server_cpu_us_per_delivery", "us"),
    ("join s", "throughput", "join_s", "s"),
)


def side_by_side(rows: list[dict[str, Any]]) -> str:
    """The main figures with one column per server (as in issue 13's table)."""
    servers = list(dict.fromkeys(r["server"] for r in rows))
    by = {config_key(r): r for r in rows}
    body = []
    for what, mode, key, style in SIDE_BY_SIDE:
        for n in sorted({r["clients"] for r in rows if r["mode"] == mode and not r["stalled"]}):
            cells = [what, str(n)]
            for server in servers:
                row = by.get((server, mode, n, 0))
                cells.append(_num(row[key], style) if row else "-")
            body.append(cells)
    return _grid(["figure", "N", *servers], body)


def notes(rows: list[dict[str, Any]]) -> list[str]:
    """Lines under the table: stalled-reader ratios and anything that went wrong."""
    out = []
    for row in rows:
        if row.get("web_ratio") is not None:
            out.append(
                f"{row['server']} {row['mode']} N={row['clients']}: WebSocket clients received "
                f"{_num(row['web_deliveries_per_client_s'], 'rate')} deliveries/s each, line "
                f"clients {_num(row['line_deliveries_per_client_s'], 'rate')}: "
                f"{row['web_ratio']:.2f}x (--web; the generator decodes frames in Python)"
            )
    for row in rows:
        if row["stalled"] and row["stalled_ratio"] is not None:
            out.append(
                f"{row['server']}: with {row['stalled']} stalled readers among {row['clients']}, "
                f"deliveries/s per reading client = {row['stalled_ratio']:.2f}x the run without "
                f"them (stalled readers dropped by the server: {row['stalled_dropped']})"
            )
    for row in rows:
        errors = {k: row[k] for k in ERROR_KEYS if row[k]}
        label = f"{row['server']} {row['mode']} N={row['clients']}"
        if row["stalled"]:
            label += f" stalled={row['stalled']}"
        if errors:
            out.append(f"{label}: {errors} (max over repeats)")
        if row["readers_dropped"]:
            out.append(f"{label}: {row['readers_dropped']} reading clients were disconnected")
        if row["failed"]:
            out.append(f"{label}: {row['failed']} repeat(s) failed (see the JSON)")
    return out


@dataclass
class Goal:
    """One goal of issue 13 (or an earlier one) and how lanchatd did."""

    name: str
    ours: str
    peer: str
    verdict: bool | None  # None: the runs it needs are missing or failed


def _peer(server: str) -> bool:
    """Another server: neither lanchatd nor a variant of it."""
    kind = SERVERS.get(server)
    return server != "lanchatd" and not (kind is not None and kind.variant)


def _peers(rows: list[dict[str, Any]], mode: str, n: int, key: str) -> list[dict[str, Any]]:
    return [
        r
        for r in rows
        if _peer(r["server"])
        and (r["mode"], r["clients"], r["stalled"]) == (mode, n, 0)
        and r[key] is not None
    ]


def goals(rows: list[dict[str, Any]]) -> list[Goal]:
    """lanchatd against issue 13's goals (and issue 6's memory and stalled-reader goals).

    The best peer is the fastest (deliveries/s) or the quickest (p99) of the other servers
    in the same configuration, whatever it lost or corrupted (that is in the main table).
    """
    by = {config_key(r): r for r in rows}
    out: list[Goal] = []
    for n, factor in ((10, 1.0), (100, 1.0), (1000, 1.5)):
        ours = by.get(("lanchatd", "throughput", n, 0))
        if not ours or ours["deliveries_per_s"] is None:
            continue
        errors = {k: ours[k] for k in ERROR_KEYS if ours[k]}
        peers = _peers(rows, "throughput", n, "deliveries_per_s")
        best = max(peers, key=lambda r: r["deliveries_per_s"], default=None)
        rate = ours["deliveries_per_s"]
        if best is None or not best["deliveries_per_s"]:
            verdict, peer = None, "-"
        else:
            ratio = rate / best["deliveries_per_s"]
            verdict = ratio >= factor and not errors
            peer = f"{best['server']} {_num(best['deliveries_per_s'], 'rate')} ({ratio:.2f}x)"
        detail = _num(rate, "rate") + (f" {errors}" if errors else ", clean")
        out.append(Goal(f"deliveries/s N={n} >= {factor:.1f}x best peer, clean", detail, peer,
                        verdict))  # fmt: skip
    for n in (10, 100, 1000):
        ours = by.get(("lanchatd", "latency", n, 0))
        if not ours or ours["latency_p99_ms"] is None:
            continue
        p99 = ours["latency_p99_ms"]
        best = min(_peers(rows, "latency", n, "latency_p99_ms"),
                   key=lambda r: r["latency_p99_ms"], default=None)  # fmt: skip
        peer = f"{best['server']} {best['latency_p99_ms']:.2f} ms" if best else "-"
        if n == 10:
            name, verdict = "latency p99 N=10 <= 1 ms", p99 <= 1.0
        else:
            name = f"latency p99 N={n} <= best peer's"
            verdict = None if best is None else p99 <= best["latency_p99_ms"]
        out.append(Goal(name, f"{p99:.2f} ms", peer, verdict))
    ours = by.get(("lanchatd", "throughput", 10, 0))
    ngircd = by.get(("ngircd", "throughput", 10, 0))
    if ours and ours["server_cpu_us_per_delivery"] is not None:
        cpu = ours["server_cpu_us_per_delivery"]
        theirs = ngircd["server_cpu_us_per_delivery"] if ngircd else None
        out.append(
            Goal(
                "server CPU/delivery N=10 <= 2x ngircd's",
                f"{cpu:.2f} us",
                "-" if theirs is None else f"ngircd {theirs:.2f} us ({cpu / theirs:.1f}x)",
                None if not theirs else cpu <= 2 * theirs,
            )
        )
    out.extend(_join_goal(rows))
    out.extend(_history_goals(by))
    thousand = [r for r in rows if r["server"] == "lanchatd" and r["clients"] == 1000]
    per_client = _median(r["rss_per_client_kib"] for r in thousand)
    if per_client is not None:
        out.append(Goal("(issue 6) RSS <= 40 KiB per client at N=1000", f"{per_client:.1f} KiB",
                        "-", per_client <= 40))  # fmt: skip
    for row in rows:
        if row["server"] == "lanchatd" and row["stalled"] and row["stalled_ratio"] is not None:
            out.append(
                Goal(
                    f"(issue 6) {row['stalled']} stalled readers among {row['clients']}: >= 0.9x",
                    f"{row['stalled_ratio']:.2f}x",
                    "-",
                    row["stalled_ratio"] >= 0.9,
                )
            )
    return out


def _join_goal(rows: list[dict[str, Any]]) -> list[Goal]:
    """1000 clients joined in <= 1 s (issue 13), with the peers' join times beside."""
    joins = [r["join_s"] for r in rows if r["server"] == "lanchatd" and r["clients"] == 1000
             and not r["stalled"] and r["join_s"] is not None]  # fmt: skip
    if not joins:
        return []
    peers: dict[str, float] = {}
    for r in rows:
        if r["clients"] == 1000 and _peer(r["server"]) and r["join_s"] is not None:
            peers[r["server"]] = max(r["join_s"], peers.get(r["server"], 0.0))
    peer = ", ".join(f"{k} {v:.2f} s" for k, v in peers.items()) or "-"
    worst = max(joins)
    return [Goal("1000 clients joined <= 1.0 s (worst median)", f"{worst:.2f} s", peer,
                 worst <= 1.0)]  # fmt: skip


def _history_goals(by: dict[tuple[str, str, int, int], dict[str, Any]]) -> list[Goal]:
    """(issue 14) deliveries/s with history on >= 0.9x off, from lanchatd-nohistory's runs."""
    out = []
    for n in (100, 1000):
        on = by.get(("lanchatd", "throughput", n, 0))
        off = by.get((LanchatdNoHistory.name, "throughput", n, 0))
        if not (on and off and on["deliveries_per_s"] and off["deliveries_per_s"]):
            continue
        ratio = on["deliveries_per_s"] / off["deliveries_per_s"]
        out.append(
            Goal(
                f"(issue 14) deliveries/s N={n}, history on >= 0.9x off",
                f"{_num(on['deliveries_per_s'], 'rate')} ({ratio:.2f}x)",
                f"history off {_num(off['deliveries_per_s'], 'rate')}",
                ratio >= 0.9,
            )
        )
    return out


def goals_table(items: list[Goal]) -> str:
    body = [
        ["n/a" if g.verdict is None else "PASS" if g.verdict else "FAIL", g.name, g.ours, g.peer]
        for g in items
    ]
    return _grid(["verdict", "goal", "lanchatd", "best peer"], body)
