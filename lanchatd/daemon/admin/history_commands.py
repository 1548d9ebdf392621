"""Admin commands on the room's history: read it, and purge what one nickname said."""

from __future__ import annotations

from typing import Any

from lanchatd.core.adminwire import Code, CommandError
from lanchatd.core.nicknames import nick_key
from lanchatd.daemon.admin.api import Caller, Operations
from lanchatd.daemon.bans import iso
from lanchatd.daemon.history import MAX_READ, Entry, History, HistoryError

#: What ``history`` returns when no ``count`` is given.
DEFAULT_COUNT = 20


def history(ops: Operations, args: dict[str, Any], caller: Caller) -> dict[str, Any]:
    count = args.get("count")
    count = DEFAULT_COUNT if count is None else count
    if not 1 <= count <= MAX_READ:
        raise CommandError(Code.BAD_REQUEST, f"count must be between 1 and {MAX_READ}")
    entries = _store(ops).query(count, since=_since(args), nick=_nick(args))
    return {"entries": [_json(entry) for entry in entries]}


def purge(ops: Operations, args: dict[str, Any], caller: Caller) -> dict[str, Any]:
    """Delete from history what ``nick`` said; the daemon's event log keeps what it logged."""
    nick, since = _nick(args), _since(args)
    assert nick is not None
    try:
        removed = _store(ops).purge(nick, since)
        ops.purged(nick, since)
    except HistoryError as error:
        caller.log.error("history_purge_failed", nick=nick, error=str(error))
        raise CommandError(Code.HISTORY_FAILED, str(error)) from None
    caller.log.info("history_purged", nick=nick, since=_iso(since), removed=removed)
    return {"nick": nick, "since": _iso(since), "removed": removed}


def _store(ops: Operations) -> History:
    store = ops.history()
    if store is None:
        raise CommandError(Code.HISTORY_OFF, "history is turned off ([history] enabled = false)")
    return store


def _nick(args: dict[str, Any]) -> str | None:
    nick: str | None = args.get("nick")
    if nick is not None and not nick_key(nick):
        raise CommandError(Code.BAD_REQUEST, "the nickname is empty")
    return nick


def _since(args: dict[str, Any]) -> float | None:
    since: float | None = args.get("since")
    if since is not None and not 0 <= since < 1e11:
        raise CommandError(Code.BAD_REQUEST, "since must be seconds since the epoch")
    return since


def _iso(seconds: float | None) -> str | None:
    return None if seconds is None else iso(seconds)


def _json(entry: Entry) -> dict[str, Any]:
    return {
        "id": str(entry.id),
        "time": iso(entry.at),
        "kind": entry.kind.value,
        "nick": entry.nick,
        "text": entry.text,
        "reason": entry.reason,
    }
