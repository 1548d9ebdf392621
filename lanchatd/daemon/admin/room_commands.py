"""Admin commands on the room: who is here, kick, notices, watching events."""

from __future__ import annotations

import time
from typing import Any, Final

from lanchatd.core.adminwire import Code, CommandError
from lanchatd.daemon.admin.api import Caller, Operations, check_text, reason
from lanchatd.daemon.bans import iso

#: Longest notice text, in UTF-8 bytes.
MAX_NOTICE_BYTES: Final = 2000


def who(ops: Operations, args: dict[str, Any], caller: Caller) -> dict[str, Any]:
    now = time.monotonic()
    cluster = ops.elsewhere()
    here = {} if cluster is None else {"node": cluster[0]}
    elsewhere = [] if cluster is None else cluster[1]
    return {
        "clients": [
            {
                **here,
                "nick": member.nick,
                "host": member.host,
                "port": member.port,
                "mode": member.framing.value,
                "connected_at": iso(member.connected_at),
                "idle_s": round(max(0.0, now - member.last_active), 1),
                "messages": member.messages,
            }
            for member in ops.who()
        ]
        + [dict.fromkeys(_ONLY_HERE) | {"nick": nick, "node": node} for nick, node in elsewhere]
    }


#: What a node knows only of its own clients: null for members served by other nodes.
_ONLY_HERE: Final = ("host", "port", "mode", "connected_at", "idle_s", "messages")


def kick(ops: Operations, args: dict[str, Any], caller: Caller) -> dict[str, Any]:
    why = reason(args.get("reason"))
    kicked = ops.kick(args["nick"], why, caller.uid)
    if kicked is None:
        node = ops.kick_elsewhere(args["nick"], why)
        if node is not None:
            return {"nick": args["nick"], "host": None, "port": None, "reason": why, "node": node}
        raise CommandError(Code.NO_SUCH_NICK, f"no such nickname: {args['nick']}")
    member, given = kicked
    return {"nick": member.nick, "host": member.host, "port": member.port, "reason": given}


def broadcast(ops: Operations, args: dict[str, Any], caller: Caller) -> dict[str, Any]:
    text = args["text"].strip()
    if not text:
        raise CommandError(Code.BAD_REQUEST, "the notice text is empty")
    check_text("text", text)
    if len(text.encode()) > MAX_NOTICE_BYTES:
        raise CommandError(Code.BAD_REQUEST, f"the notice is over {MAX_NOTICE_BYTES} bytes")
    recipients = ops.notice(text, caller.uid)
    if recipients < 0:
        raise CommandError(Code.CLUSTER_UNAVAILABLE, "the room's Redis cannot be reached")
    return {"recipients": recipients, "text": text}


def watch(ops: Operations, args: dict[str, Any], caller: Caller) -> dict[str, Any]:
    """The answer to ``watch``; the session then streams events (the table row says so)."""
    return {"watching": True}
