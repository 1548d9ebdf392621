"""The import contracts in pyproject.toml catch what they promise, in the modules added since.

A contract that names packages covers new modules by itself, but only a planted import shows
that a contract would fail: each one below breaks one layer rule, in a copy of the tree.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")

#: (module file, planted import, the edge lint-imports must report).
PLANTED = [
    ("lanchatd/core/tags.py", "import socket", "lanchatd.core.tags -> socket"),
    ("lanchatd/core/announce.py", "import zeroconf", "lanchatd.core.announce -> zeroconf"),
    ("lanchatd/core/wsframe.py", "import sqlite3", "lanchatd.core.wsframe -> sqlite3"),
    ("lanchatd/core/columns.py", "import redis", "lanchatd.core.columns -> redis"),
    ("lanchatd/core/tags.py", "import lanchatd.daemon", "lanchatd.core.tags -> lanchatd.daemon"),
    (
        "lanchatd/client/discover.py",
        "import lanchatd.daemon.discovery",
        "lanchatd.client.discover -> lanchatd.daemon.discovery",
    ),
    (
        "lanchatd/daemon/web/site.py",
        "import lanchatd.client.render",
        "lanchatd.daemon.web.site -> lanchatd.client.render",
    ),
    (
        "lanchatd/daemon/cluster/room.py",
        "import lanchatctl.cli",
        "lanchatd.daemon.cluster.room -> lanchatctl.cli",
    ),
    ("lanchatctl/cli.py", "import lanchatd.daemon.history", "lanchatctl.cli -> lanchatd.daemon"),
    ("lanchatd/daemon/history.py", "import redis", "lanchatd.daemon.history -> redis"),
    ("lanchatd/daemon/web/http.py", "import zeroconf", "lanchatd.daemon.web.http -> zeroconf"),
]


def lint_imports(tree: Path) -> subprocess.CompletedProcess[str]:
    """lint-imports on the copy ``tree`` (first on the path, ahead of the editable install)."""
    return subprocess.run(
        [LINT_IMPORTS, "--no-cache"],
        cwd=tree,
        env={"PYTHONPATH": str(tree), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    if not LINT_IMPORTS.exists():
        pytest.skip("needs import-linter (the dev extra)")
    for name in ("lanchatd", "lanchatctl"):
        shutil.copytree(REPO / name, tmp_path / name, ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy2(REPO / "pyproject.toml", tmp_path)
    return tmp_path


def test_the_tree_as_it_is_keeps_every_contract(tree: Path) -> None:
    result = lint_imports(tree)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "BROKEN" not in result.stdout


def test_every_planted_import_breaks_a_contract(tree: Path) -> None:
    for module, line, _ in PLANTED:
        with (tree / module).open("a") as source:
            source.write(f"\n{line}\n")
    result = lint_imports(tree)
    assert result.returncode == 1, result.stdout + result.stderr
    missed = [edge for _, _, edge in PLANTED if edge not in result.stdout]
    assert missed == [], result.stdout
