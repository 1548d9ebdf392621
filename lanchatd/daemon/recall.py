"""History shown to a person: stored events as the lines the room sent, each with its time.

Entries are rendered in the room's current language from what was stored (kind, nickname,
text, reason), so a replay reads like the live chat did; the ``*** ...`` lines around them and
the ``*** [HH:MM]`` before each (server local time) tell a person they are not live. The lines
then go through the peer's framing like any other (sanitised, ASCII for classic clients).
"""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass

from lanchatd.core.catalog import Catalog
from lanchatd.core.lines import chat_prefix
from lanchatd.core.tags import ORIGIN, MessageId, event_tags, format_tags
from lanchatd.daemon.history import MAX_READ, Entry, History, Kind

#: A line for one client and, for a client that negotiated ids, its tag section.
Shown = tuple[str, str | None]


@dataclass(frozen=True, slots=True)
class Earlier:
    """What a newcomer is shown: the last ``count`` events up to ``newest``, as lines; for a
    client that negotiated ids (``tagged``), tagged entries, or everything after ``after``."""

    count: int
    newest: MessageId
    lines: list[Shown]
    tagged: bool = False
    after: MessageId | None = None
    budget: int | None = None


def earlier(
    history: History,
    count: int,
    catalog: Catalog,
    *,
    tagged: bool = False,
    after: MessageId | None = None,
    budget: int | None = None,
) -> Earlier:
    """Read and render the last ``count`` events (none at all: no lines, not even a frame),
    or for a resuming client every event after ``after`` (or the one "missed" line).

    A resume replay is queued at once, and a client whose backlog passes
    ``send_buffer_bytes`` is dropped: the replay keeps within ``budget`` bytes, its newest
    entries, after one line saying how many older ones it leaves out.

    The room calls it before taking its lock, and again under the lock only if an event
    came meanwhile (``newest`` is no longer the history's newest), so a join storm does not
    hold up the chat with reads.
    """
    if after is not None:
        newest = history.newest()  # read first: unchanged later means nothing came since
        replay = history.after(after)
        if replay.too_old:
            resumed = [missed_line(replay.missed, catalog)]
        else:
            resumed = _within(tagged_lines(replay.entries, catalog), budget, catalog)
        return Earlier(count, newest, resumed, True, after, budget)
    entries = history.last(count)
    newest = entries[-1].id if entries else ORIGIN
    if tagged:
        return Earlier(count, newest, tagged_lines(entries, catalog), True)
    lines = replay_lines(entries, catalog) if entries else []
    return Earlier(count, newest, [(line, None) for line in lines])


def tagged_lines(entries: list[Entry], catalog: Catalog) -> list[Shown]:
    """Entries for a client that negotiated ids: each line as it was sent live, tagged with
    its id, time and ``history``; the client draws its own frame."""
    return [
        (
            event_line(entry, catalog),
            format_tags(event_tags(entry.id, entry.at, history=True)),
        )
        for entry in entries
    ]


def missed_line(count: int, catalog: Catalog, key: str = "history_missed") -> Shown:
    """The one line a client resuming too late gets: how many events it missed."""
    tags = event_tags(None, time.time())
    tags["missed"] = str(count)
    return catalog(key, count=count), format_tags(tags)


def _within(lines: list[Shown], budget: int | None, catalog: Catalog) -> list[Shown]:
    """The newest of ``lines`` that fit in ``budget`` bytes, after a ``missed`` line counting
    the rest; all of them when they fit."""
    if budget is None:
        return lines
    used = 0
    for kept, (line, tags) in enumerate(reversed(lines)):
        used += len(line.encode()) + len(tags or "") + 1
        if used > budget:
            left_out = len(lines) - kept
            return [missed_line(left_out, catalog, "history_not_replayed"), *lines[-kept:]]
    return lines


def replay_lines(entries: list[Entry], catalog: Catalog) -> list[str]:
    """The framed replay of ``entries``: a header, one line per entry, a footer."""
    if not entries:
        return [catalog("history_empty")]
    return [
        catalog("history_begin", count=len(entries)),
        *(_entry_line(entry, catalog) for entry in entries),
        catalog("history_end"),
    ]


@functools.lru_cache(maxsize=2 * MAX_READ)
def _entry_line(entry: Entry, catalog: Catalog) -> str:
    """One entry as shown, with its time. Cached: in a join storm every newcomer is shown
    nearly the same entries, and rendering them (local time, two catalogue lines each) was
    most of what a join with history did under the room lock. A reload brings a new
    catalogue, so nothing stale is shown."""
    return catalog(
        "history_entry",
        time=time.strftime("%H:%M", time.localtime(entry.at)),
        line=event_line(entry, catalog),
    )


def event_line(entry: Entry, catalog: Catalog) -> str:
    """The line the room broadcast for ``entry``."""
    match entry.kind:
        case Kind.MESSAGE:
            return chat_prefix(entry.nick) + entry.text
        case Kind.ACTION:
            return catalog("action", nick=entry.nick, text=entry.text)
        case Kind.JOIN:
            return catalog("joined", nick=entry.nick)
        case Kind.LEAVE:
            return catalog("left", nick=entry.nick)
        case Kind.KICK:
            return catalog("kicked", nick=entry.nick, reason=entry.reason)
        case Kind.BAN:
            return catalog("banned", nick=entry.nick, reason=entry.reason)
        case Kind.NOTICE:
            return catalog("notice", text=entry.text)
