"""Message ids and tags on the wire (negotiated with ``/cap ids``; docs/protocol.md).

A tagged line is ``@key=value;key;... text``: IRCv3 message tags, reduced to what lanchat
needs. ``id`` is a room event's :class:`MessageId`, ``time`` the server's clock (UTC, RFC 3339
with milliseconds), ``history`` marks a replayed entry, ``missed=N`` a resume that came too
late. One home for the format, so the daemon, the client and the tests agree on it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Final, NamedTuple

#: The first line a client sends to negotiate ids (before its nickname).
CAP_COMMAND: Final = "/cap"
CAP_IDS: Final = "ids"
#: Longest ``after=`` value taken seriously (a millisecond and a sequence number in digits).
MAX_ID_CHARS: Final = 40
_KEY: Final = re.compile(r"[a-z0-9-]+")
_VALUE_FORBIDDEN: Final = frozenset(";= \\")


class MessageId(NamedTuple):
    """A room event's identity: ordered, and written ``<ms>-<seq>`` like a Redis stream id.

    A named tuple: the room makes one per event under its lock, and ids are compared on
    every commit and read; a tuple is built and compared in C, several times faster than a
    frozen dataclass, and the history store's codec writes it as a JSON array as it is.
    """

    ms: int
    seq: int

    def __str__(self) -> str:
        return f"{self.ms}-{self.seq}"

    @classmethod
    def parse(cls, text: str) -> MessageId:
        """The id written as ``text``; ValueError if it is not ``<ms>-<seq>`` in digits."""
        ms, dash, seq = text.partition("-")
        if not (
            dash
            and len(text) <= MAX_ID_CHARS
            and ms.isascii()
            and ms.isdigit()
            and seq.isascii()
            and seq.isdigit()
        ):
            raise ValueError(f"not a message id: {text[:MAX_ID_CHARS]!r}")
        return cls(int(ms), int(seq))

    def following(self, ms: int) -> MessageId:
        """The next id at clock millisecond ``ms``: never smaller than this one."""
        if ms > self.ms:
            return MessageId(ms, 0)
        return MessageId(self.ms, self.seq + 1)


#: Before every id: resuming after it replays everything kept.
ORIGIN: Final = MessageId(0, 0)

Tags = dict[str, str | None]


def format_time(at: float) -> str:
    """``at`` (seconds since the epoch) as the ``time`` tag: ``2026-12-05T02:00:00.123Z``."""
    moment = datetime.fromtimestamp(at, UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


def parse_time(value: str) -> datetime | None:
    """A ``time`` tag's moment (aware, UTC), or None if it is not one."""
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else None


def format_tags(tags: Tags) -> str:
    """The tag section for ``tags`` with its trailing space (``@id=...;time=...;history ``).

    Keys and values come from the server's own code; a bad one is a bug, not input.
    """
    parts = []
    for key, value in tags.items():
        if not _KEY.fullmatch(key) or (value is not None and _VALUE_FORBIDDEN & set(value)):
            raise ValueError(f"not a tag: {key}={value}")
        parts.append(key if value is None else f"{key}={value}")
    return "@" + ";".join(parts) + " "


def event_tags(message_id: MessageId | None, at: float, *, history: bool = False) -> Tags:
    """The tags of a line the server sends: ``id`` on room events, always ``time``."""
    tags: Tags = {} if message_id is None else {"id": str(message_id)}
    tags["time"] = format_time(at)
    if history:
        tags["history"] = None
    return tags


def split_tags(line: str) -> tuple[Tags, str]:
    """A received line's tags and its text; a line without a tag section has none.

    Tolerant, as a client must be: a malformed part is skipped, never raised.
    """
    if not line.startswith("@"):
        return {}, line
    section, _, text = line.partition(" ")
    tags: Tags = {}
    for part in section[1:].split(";"):
        key, equals, value = part.partition("=")
        if _KEY.fullmatch(key):
            tags[key] = value if equals else None
    return tags, text


@dataclass(frozen=True, slots=True)
class CapRequest:
    """A client's ``/cap`` line: whether it wants ids, after which id it resumes, and the
    bad ``after=`` value if it sent one (then it is treated as ``/cap ids`` alone)."""

    ids: bool
    after: MessageId | None = None
    bad_after: str | None = None


def is_cap(text: str) -> bool:
    """Whether a client's line is a ``/cap`` line (never a nickname)."""
    word = text.split(maxsplit=1)[0] if text.strip() else ""
    return word.casefold() == CAP_COMMAND


def parse_cap(text: str) -> CapRequest:
    """Read a ``/cap`` line; unknown capabilities are ignored, so later ones can be added."""
    words = text.split()[1:]
    ids = CAP_IDS in words
    after: MessageId | None = None
    bad: str | None = None
    for word in words:
        name, equals, value = word.partition("=")
        if equals and name == "after":
            try:
                after = MessageId.parse(value)
            except ValueError:
                bad = value[:MAX_ID_CHARS]
    if bad is not None or not ids:
        after = None
    return CapRequest(ids, after, bad)


def cap_line(after: MessageId | None) -> str:
    """The ``/cap`` line a client sends to ask for ids (resuming after ``after``)."""
    return f"{CAP_COMMAND} {CAP_IDS}" + ("" if after is None else f" after={after}")
