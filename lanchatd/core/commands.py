"""Slash commands typed by chat users, parsed without side effects."""

from __future__ import annotations

from dataclasses import dataclass

from lanchatd.core.nicknames import MAX_NICK_CHARS, nick_key


@dataclass(frozen=True, slots=True)
class Who:
    """``/who``: list the nicknames online."""


@dataclass(frozen=True, slots=True)
class Me:
    """``/me ACTION``: an action line, ``* nick waves``."""

    action: str


@dataclass(frozen=True, slots=True)
class PrivateMessage:
    """``/msg NICK TEXT`` or ``/msg "NICK" TEXT``: to one user, echoed to the sender.

    Nicknames may contain spaces, so unquoted, any of the first words could end the nickname.
    ``readings`` lists each way to read it as ``(nick_key, text_start)``: only splits within
    the longest possible nickname, so there are a few dozen at most and the room looks them
    up in a moment, however long the line. A quoted nickname is the only reading. ``wanted``
    is the nickname to name if nobody matches.
    """

    argument: str
    readings: tuple[tuple[str, int], ...]
    wanted: str


@dataclass(frozen=True, slots=True)
class Quit:
    """``/quit``: leave the room."""


@dataclass(frozen=True, slots=True)
class Help:
    """``/help``: list the commands."""


@dataclass(frozen=True, slots=True)
class History:
    """``/history [N]``: the room's last ``count`` events, to the sender only."""

    count: int


@dataclass(frozen=True, slots=True)
class Unknown:
    """A command the server does not know; ``name`` as typed."""

    name: str


@dataclass(frozen=True, slots=True)
class Usage:
    """A known command with missing arguments; ``key`` is the catalogue usage string."""

    key: str


Command = Who | Me | PrivateMessage | Quit | Help | History | Unknown | Usage

#: What ``/history`` alone shows, and the most one ``/history N`` shows.
HISTORY_DEFAULT = 20
HISTORY_MAX = 500


def parse_command(text: str) -> Command | None:
    """Return the command in ``text``, or None when it is an ordinary chat line."""
    if not text.startswith("/"):
        return None
    name, _, argument = text.partition(" ")
    argument = argument.strip()
    match name.lower():
        case "/who":
            return Who()
        case "/quit":
            return Quit()
        case "/help":
            return Help()
        case "/me":
            return Me(argument) if argument else Usage("usage_me")
        case "/history":
            return _history(argument)
        case "/msg":
            return _private_message(argument) if " " in argument else Usage("usage_msg")
        case "/cap":  # negotiated only as the first line (core/tags.py)
            return Usage("cap_too_late")
        case _:
            return Unknown(name)


def _history(argument: str) -> History | Usage:
    """``/history`` shows HISTORY_DEFAULT events, ``/history N`` N of them (at most HISTORY_MAX)."""
    if not argument:
        return History(HISTORY_DEFAULT)
    if not (argument.isascii() and argument.isdigit()) or int(argument) == 0:
        return Usage("usage_history")
    return History(min(int(argument), HISTORY_MAX))


def _private_message(argument: str) -> PrivateMessage:
    """Every reading of ``NICK TEXT`` (``argument`` is stripped and holds a space)."""
    close = argument.find('" ', 1) if argument.startswith('"') else -1
    if close > 1:
        nick = argument[1:close]
        return PrivateMessage(argument, ((nick_key(nick), close + 2),), nick)
    readings = []
    space = argument.find(" ")
    while 0 < space <= MAX_NICK_CHARS:
        readings.append((nick_key(argument[:space]), space + 1))
        space = argument.find(" ", space + 1)
    return PrivateMessage(argument, tuple(readings), argument.partition(" ")[0])
