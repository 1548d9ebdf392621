"""docs/architecture.md's layout names every module, under the layer it belongs to.

The layout is the map a newcomer reads first; a module added without a line there (as
core/tags.py, history.py and cluster/ once were) is a part of the code the map hides.
"""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LAYERS = ("lanchatd/core/", "lanchatd/daemon/", "lanchatd/client/", "lanchatctl/")


def layout() -> dict[str, str]:
    """The text of the layout block under each layer's heading line."""
    text = (ROOT / "docs/architecture.md").read_text()
    block = re.search(r"```text\n(.*?)```", text, re.DOTALL)
    assert block is not None, "docs/architecture.md has no ```text layout block"
    sections: dict[str, str] = {}
    layer = ""
    for line in block.group(1).splitlines():
        heading = line.split(maxsplit=1)[0] if line.startswith(" ") and line[1:2] != " " else ""
        if heading in LAYERS:
            layer = heading
        sections[layer] = sections.get(layer, "") + line + "\n"
    return sections


def test_every_module_is_named_under_its_layer() -> None:
    sections = layout()
    missing = []
    for layer in LAYERS:
        for path in sorted((ROOT / layer).rglob("*.py")):
            if path.name in {"__init__.py", "__main__.py"}:
                continue
            named = re.search(rf"(?<![\w.]){re.escape(path.name)}\b", sections.get(layer, ""))
            if named is None:
                missing.append(str(path.relative_to(ROOT)))
    assert missing == []


def test_every_subpackage_has_a_line() -> None:
    sections = layout()
    for layer in LAYERS:
        for package in sorted(p for p in (ROOT / layer).iterdir() if (p / "__init__.py").exists()):
            assert f" {package.name}/ " in sections.get(layer, ""), package
