"""Stream entries: what a node appends to the room's stream and how it reads them back.

Free of Redis and threads: fields in, fields out. Entries come from other nodes (or anyone
who can write to the stream), so one that does not decode is skipped, never raised.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Final

from lanchatd.core.tags import MessageId
from lanchatd.daemon.history import Entry, Kind

#: Room events (history kinds) plus the controls every node carries out on its own.
ROOM_KINDS: Final = frozenset(kind.value for kind in Kind)


class Control(enum.StrEnum):
    """Entries that are not room events: they get no line and no history row."""

    #: Remove what ``nick`` said (``text``: since when, seconds, or empty) from history.
    PURGE = "purge"
    #: A ban (``data``: the ban as JSON) on the address ``target``: every node refuses it and
    #: disconnects its members from there with ``text``.
    EXPEL = "expel"
    #: The ban on the address ``target`` was lifted.
    UNBAN = "unban"


CONTROL_KINDS: Final = frozenset(control.value for control in Control)


@dataclass(frozen=True, slots=True)
class StreamEvent:
    """One entry read back: its stream id, what it is, and which node appended it.

    ``target`` is the node incarnation that must act on a kick, or the address of an expel.
    """

    id: MessageId
    kind: str
    nick: str
    text: str
    reason: str
    at: float
    origin: str
    target: str = ""
    data: str = ""

    def entry(self) -> Entry:
        """The history entry of a room event, under the stream's id."""
        return Entry(self.id, self.at, Kind(self.kind), self.nick, self.text, self.reason)


def fields(
    kind: str,
    nick: str,
    at: float,
    origin: str,
    *,
    text: str = "",
    reason: str = "",
    target: str = "",
    data: str = "",
) -> dict[str, str]:
    """The stream fields of an event; empty ones are left out."""
    out = {"k": str(kind), "n": nick, "at": repr(at), "o": origin}
    for name, value in (("t", text), ("r", reason), ("g", target), ("d", data)):
        if value:
            out[name] = value
    return out


def decode(entry_id: str, raw: dict[str, str]) -> StreamEvent | None:
    """An entry as read by XREAD; None if it is not one of ours."""
    try:
        kind = raw["k"]
        if kind not in ROOM_KINDS and kind not in CONTROL_KINDS:
            return None
        return StreamEvent(
            MessageId.parse(entry_id),
            kind,
            raw.get("n", ""),
            raw.get("t", ""),
            raw.get("r", ""),
            float(raw["at"]),
            raw.get("o", ""),
            raw.get("g", ""),
            raw.get("d", ""),
        )
    except (KeyError, ValueError, TypeError):
        return None
