"""The delivery-round benchmark (benchmarks/roundbench.py) runs; its figures are not asserted."""

from __future__ import annotations

from benchmarks import roundbench


def test_the_round_benchmark_times_each_kind_of_round() -> None:
    figures = roundbench.main(["--clients", "5", "--rounds", "3"])
    assert (figures["clients"], figures["rounds"]) == (5, 3)
    for kind in ("outbox_flush", "bare_send", "fan_out"):
        summary = figures[kind]
        assert isinstance(summary, dict)
        assert set(summary) == {"p50_ms", "p90_ms", "p99_ms", "max_ms", "us_per_client"}
        assert all(value > 0 for value in summary.values())
