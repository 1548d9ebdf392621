"""Summaries of runs: medians of repeats, a table for people, and JSON for comparing over time.

Rates, latencies, times, memory and CPU are medians over the repeats of a configuration;
error counts (lost, duplicated, reordered, corrupted, unexpected) are the *maximum* over
the repeats, so one bad repeat is never hidden by two good ones.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable
from typing import Any, Final

MEDIAN_KEYS: Final = (
    "deliveries_per_s",
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
    "generator_cpu_s",
    "generator_cpu_us_per_delivery",
    "generator_verify_s",
    "generator_lag_mean_ms",
    "generator_lag_max_ms",
    "other_cpu_s",
    "softirq_s",
    "prefixes",
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
    widths = [max(len(str(c)) for c in column) for column in zip(header, *body, strict=True)]

    def line(cells: list[str]) -> str:
        return "| " + " | ".join(c.rjust(w) for c, w in zip(cells, widths, strict=True)) + " |"

    rule = "|" + "|".join("-" * (w + 1) + ":" for w in widths) + "|"
    return "\n".join([line(header), rule, *(line(cells) for cells in body)])


def notes(rows: list[dict[str, Any]]) -> list[str]:
    """Lines under the table: stalled-reader ratios and anything that went wrong."""
    out = []
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


def targets(rows: list[dict[str, Any]]) -> list[str]:
    """lanchatd against the targets of issue 6, where the needed runs are present."""
    by = {config_key(r): r for r in rows}

    def get(server: str, mode: str, n: int, stalled: int = 0) -> dict[str, Any] | None:
        return by.get((server, mode, n, stalled))

    out = []

    def verdict(name: str, ok: bool | None, detail: str) -> None:
        mark = "n/a " if ok is None else "PASS" if ok else "FAIL"
        out.append(f"[{mark}] {name}: {detail}")

    for n in (100, 1000):
        ours, ref = get("lanchatd", "throughput", n), get("ncat", "throughput", n)
        if ours and ref and ours["deliveries_per_s"] and ref["deliveries_per_s"]:
            ratio = ours["deliveries_per_s"] / ref["deliveries_per_s"]
            clean = not (ours["lost"] or ours["corrupted"])
            verdict(
                f"throughput N={n} >= 1.0x ncat, no loss/corruption",
                ratio >= 1.0 and clean,
                f"{ratio:.2f}x ({_num(ours['deliveries_per_s'], 'rate')} vs "
                f"{_num(ref['deliveries_per_s'], 'rate')}), lost {ours['lost']}, "
                f"corrupted {ours['corrupted']}",
            )
    ours = get("lanchatd", "latency", 10)
    if ours and ours["latency_p99_ms"] is not None:
        verdict("latency p99 <= 2 ms at N=10", ours["latency_p99_ms"] <= 2.0,
                f"{ours['latency_p99_ms']:.2f} ms")  # fmt: skip
    ours, ref = get("lanchatd", "latency", 1000), get("ncat", "latency", 1000)
    if ours and ref and ours["latency_p99_ms"] is not None and ref["latency_p99_ms"] is not None:
        verdict(
            "latency p99 at N=1000 <= ncat's",
            ours["latency_p99_ms"] <= ref["latency_p99_ms"],
            f"{ours['latency_p99_ms']:.2f} ms vs {ref['latency_p99_ms']:.2f} ms",
        )
    joins = [r for r in rows if r["server"] == "lanchatd" and r["clients"] == 1000]
    if joins:
        worst = max(r["join_s"] for r in joins if r["join_s"] is not None)
        verdict("1000 clients joined in <= 1 s", worst <= 1.0, f"{worst:.2f} s (worst median)")
        per_client = _median(r["rss_per_client_kib"] for r in joins)
        if per_client is not None:
            verdict("RSS <= 40 KiB per client", per_client <= 40, f"{per_client:.1f} KiB")
    for row in rows:
        if row["server"] == "lanchatd" and row["stalled"] and row["stalled_ratio"] is not None:
            verdict(
                f"{row['stalled']} stalled readers among {row['clients']}: >= 0.9x",
                row["stalled_ratio"] >= 0.9,
                f"{row['stalled_ratio']:.2f}x",
            )
    return out
