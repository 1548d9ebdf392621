"""Aligned columns for a terminal, shared by ``lanchatctl`` (who, bans) and ``lanchat --list``.

Cells are sanitised before they are measured, and measured in terminal columns: an emoji or a
CJK character takes two. Sans-IO and pure.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from wcwidth import wcswidth

from lanchatd.core.text import sanitize


def width(text: str) -> int:
    """Columns ``text`` takes on a terminal."""
    columns = wcswidth(text)
    return len(text) if columns < 0 else columns


def table(
    header: Sequence[str], rows: Iterable[Sequence[object]], right: frozenset[int] = frozenset()
) -> list[str]:
    """The header and the rows as aligned lines; columns in ``right`` are right-aligned."""
    cells = [list(header), *([sanitize(str(cell)) for cell in row] for row in rows)]
    widths = [max(width(row[column]) for row in cells) for column in range(len(header))]
    lines = []
    for row in cells:
        parts = []
        for column, (cell, size) in enumerate(zip(row, widths, strict=True)):
            padding = " " * (size - width(cell))
            parts.append(padding + cell if column in right else cell + padding)
        lines.append("  ".join(parts).rstrip())
    return lines
