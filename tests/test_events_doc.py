"""docs/events.md lists exactly the events the daemon emits, each with its level."""

from __future__ import annotations

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LEVELS = {"debug": "debug", "info": "info", "warning": "warning", "error": "error"}
LEVELS["exception"] = LEVELS["critical"] = "error"
_ROW = re.compile(r"^\| `([a-z_]+)` \| (\w+) \|", re.MULTILINE)


def emitted() -> dict[str, set[str]]:
    """Every event name logged in the daemon's code, with the levels it is logged at."""
    found: dict[str, set[str]] = {}
    for path in (ROOT / "lanchatd").rglob("*.py"):
        if "client" in path.relative_to(ROOT / "lanchatd").parts:
            continue  # the lanchat client logs nothing
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.Call) or not node.args:
                continue
            func = node.func
            name = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", None)
            first = node.args[0]
            if name in LEVELS and isinstance(first, ast.Constant) and isinstance(first.value, str):
                found.setdefault(first.value, set()).add(LEVELS[name])
    return found


def documented() -> dict[str, str]:
    return dict(_ROW.findall((ROOT / "docs" / "events.md").read_text()))


def test_every_emitted_event_is_documented_with_its_level() -> None:
    docs, code = documented(), emitted()
    assert sorted(code.keys() - docs.keys()) == [], "emitted but not in docs/events.md"
    assert sorted(docs.keys() - code.keys()) == [], "in docs/events.md but never emitted"
    for event, levels in code.items():
        assert levels == {docs[event]}, event
