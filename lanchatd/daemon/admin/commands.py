"""The admin command table: one row per command, in the order the greeting lists them.

As in ngircd's ``parse.c``: a row names the command, its handler and the arguments it takes;
the session looks a request up here, checks its arguments against the row, and calls the
handler. Handlers are grouped per family (room, bans, the daemon itself), one module each.
"""

from __future__ import annotations

from typing import Final

from lanchatd.core.adminwire import Code, CommandError
from lanchatd.daemon.admin import ban_commands, daemon_commands, history_commands, room_commands
from lanchatd.daemon.admin.api import Command

TABLE: Final = {
    command.name: command
    for command in (
        Command("who", room_commands.who),
        Command("kick", room_commands.kick, {"nick": str}, {"reason": str}),
        Command("broadcast", room_commands.broadcast, {"text": str}),
        Command("stats", daemon_commands.stats),
        Command(
            "ban", ban_commands.ban, {"target": str}, {"reason": str, "duration_s": (int, float)}
        ),
        Command("unban", ban_commands.unban, {"address": str}),
        Command("bans", ban_commands.bans),
        Command("watch", room_commands.watch, streams=True),
        Command("reload", daemon_commands.reload),
        Command(
            "history",
            history_commands.history,
            {},
            {"count": int, "since": (int, float), "nick": str},
        ),
        Command("purge", history_commands.purge, {"nick": str}, {"since": (int, float)}),
        Command("url", daemon_commands.url),
    )
}
NAMES: Final = list(TABLE)


def lookup(name: str) -> Command:
    """The row for ``name``; ``unknown_command`` (listing the commands) if there is none."""
    command = TABLE.get(name)
    if command is None:
        raise CommandError(
            Code.UNKNOWN_COMMAND, f"unknown command {name!r}; commands: {', '.join(NAMES)}"
        )
    return command
