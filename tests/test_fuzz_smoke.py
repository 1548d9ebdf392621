"""The atheris fuzz target runs: a few seconds of coverage-guided fuzzing find nothing."""

from __future__ import annotations

import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

TARGET = Path(__file__).resolve().parents[1] / "fuzz" / "fuzz_protocol.py"
SECONDS = 5


def test_fuzz_target_runs_clean_for_a_few_seconds(
    tmp_path: Path, figures: Callable[[str], None]
) -> None:
    pytest.importorskip("atheris", reason="atheris is not installed: pip install -e '.[fuzz]'")
    result = subprocess.run(
        [
            sys.executable,
            str(TARGET),
            f"-max_total_time={SECONDS}",
            "-print_final_stats=1",
            f"-artifact_prefix={tmp_path}/",
        ],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=SECONDS + 50,
        check=False,
        stdin=subprocess.DEVNULL,
    )
    output = result.stdout + result.stderr
    crashes = sorted(p.name for p in tmp_path.glob("crash-*"))
    assert result.returncode == 0, f"exit {result.returncode}, {crashes}:\n{output[-3000:]}"
    assert not crashes, output[-3000:]
    executed = re.search(r"stat::number_of_executed_units: (\d+)", output)
    assert executed, output[-3000:]
    runs = int(executed.group(1))
    assert runs > 100, output[-3000:]
    rate = re.search(r"stat::average_exec_per_sec:\s+(\d+)", output)
    figures(
        f"fuzz (atheris): {runs} executions of fuzz/fuzz_protocol.py in {SECONDS}s"
        + (f" ({rate.group(1)}/s)" if rate else "")
    )
