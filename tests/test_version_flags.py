"""Every program says its version with -V and --version, the same way."""

from __future__ import annotations

import subprocess

import pytest

import lanchatd
from tests.support import BIN, WAIT


@pytest.mark.parametrize("program", ["lanchatd", "lanchatctl", "lanchat"])
@pytest.mark.parametrize("flag", ["-V", "--version"])
def test_version(program: str, flag: str) -> None:
    result = subprocess.run(
        [str(BIN / program), flag], capture_output=True, text=True, timeout=WAIT, check=False
    )
    assert (result.returncode, result.stderr) == (0, "")
    assert result.stdout == f"{program}, version {lanchatd.__version__}\n"
