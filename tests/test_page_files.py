"""The browser page's static files: what a strict Content-Security-Policy and the page's
contract with tests and scripts rely on, checked in the files the daemon serves.

``catalog.json`` is the page's copy of the server's catalogue (lanchatd/core/catalog.py) and
of which keys are refusals and removals (lanchatd/core/lines.py): the page recognises the
server's lines by these templates. After changing either module, regenerate it with
``.venv/bin/python -m tests.test_page_files``.
"""

from __future__ import annotations

import json
import re
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

from lanchatd.core.catalog import CATALOGUES
from lanchatd.core.lines import REFUSALS, REMOVALS

STATIC = Path(__file__).resolve().parent.parent / "lanchatd" / "daemon" / "web" / "static"
CATALOG_JSON = STATIC / "catalog.json"


def catalog_document() -> str:
    """catalog.json as it must read: every language's templates, the refusal and removal keys."""
    document = {
        "languages": {lang: dict(strings) for lang, strings in CATALOGUES.items()},
        "refusals": sorted(REFUSALS),
        "removals": sorted(REMOVALS),
    }
    return json.dumps(document, indent=1, ensure_ascii=True, sort_keys=True) + "\n"


class _Elements(HTMLParser):
    """Every start tag of a document with its attributes."""

    def __init__(self) -> None:
        super().__init__()
        self.elements: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.elements.append((tag, dict(attrs)))


def _elements() -> list[tuple[str, dict[str, Any]]]:
    parser = _Elements()
    parser.feed((STATIC / "index.html").read_text())
    return parser.elements


def test_catalog_json_is_the_servers_catalogue() -> None:
    assert CATALOG_JSON.read_text() == catalog_document(), (
        "catalog.json is stale: run .venv/bin/python -m tests.test_page_files"
    )


def test_page_has_nothing_a_strict_csp_blocks_and_loads_nothing_from_elsewhere() -> None:
    for tag, attrs in _elements():
        assert "style" not in attrs, f"<{tag}> has an inline style"
        assert not [name for name in attrs if name.startswith("on")], f"<{tag}> has a handler"
        for name in ("src", "href", "action"):
            value = attrs.get(name)
            assert value is None or value.startswith("/"), f"<{tag} {name}={value}> not own"
        if tag == "script":
            assert attrs.get("src"), "an inline script"
    assert "<style" not in (STATIC / "index.html").read_text()
    script = (STATIC / "lanchat.js").read_text()
    for banned in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("):
        assert banned not in script
    assert not re.search(r"https?://", script + (STATIC / "lanchat.css").read_text())


def test_page_offers_the_documented_hooks() -> None:
    elements = _elements()
    by_name = {attrs.get("name"): (tag, attrs) for tag, attrs in elements if attrs.get("name")}
    assert by_name["nick"][0] == "input"
    assert by_name["message"][1]["enterkeyhint"] == "send"
    labelled = {attrs["for"] for tag, attrs in elements if tag == "label"}
    assert {by_name["nick"][1]["id"], by_name["message"][1]["id"]} <= labelled
    logs = [attrs for tag, attrs in elements if attrs.get("role") == "log"]
    assert len(logs) == 1
    assert logs[0]["aria-live"] == "polite"


if __name__ == "__main__":
    CATALOG_JSON.write_text(catalog_document())
