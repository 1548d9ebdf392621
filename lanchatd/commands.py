"""Slash commands typed by chat users, parsed without side effects."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Who:
    """``/who``: list the nicknames online."""


@dataclass(frozen=True, slots=True)
class Me:
    """``/me ACTION``: an action line, ``* nick waves``."""

    action: str


@dataclass(frozen=True, slots=True)
class PrivateMessage:
    """``/msg NICK TEXT``: to one user, echoed to the sender.

    Nicknames may contain spaces, so the target is the longest prefix of the argument that is
    an online nickname; the room resolves it, this only keeps the raw argument.
    """

    argument: str


@dataclass(frozen=True, slots=True)
class Quit:
    """``/quit``: leave the room."""


@dataclass(frozen=True, slots=True)
class Help:
    """``/help``: list the commands."""


@dataclass(frozen=True, slots=True)
class Unknown:
    """A command the server does not know; ``name`` as typed."""

    name: str


@dataclass(frozen=True, slots=True)
class Usage:
    """A known command with missing arguments; ``key`` is the catalogue usage string."""

    key: str


Command = Who | Me | PrivateMessage | Quit | Help | Unknown | Usage


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
        case "/msg":
            return PrivateMessage(argument) if " " in argument else Usage("usage_msg")
        case _:
            return Unknown(name)
