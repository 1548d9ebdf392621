"""Nickname rules: what a client may call itself, and how names compare."""

from __future__ import annotations

from typing import Final

MAX_NICK_CHARS: Final = 32


class NickError(ValueError):
    """A nickname was refused; ``key`` names the catalogue string that says why."""

    def __init__(self, key: str) -> None:
        super().__init__(key)
        self.key = key


def parse_nick(raw: bytes) -> str:
    """Decode and check a nickname as received on the wire; raise NickError if refused.

    Surrounding whitespace is trimmed, inner spaces are kept (``user1 pc``). ``:`` would make
    chat lines ambiguous; ``*`` (server lines and private-message frames use it) and a
    leading ``-`` (the ``*-> nick*`` echo) would let a user forge server or private lines.
    """
    try:
        nick = raw.decode().strip()
    except UnicodeDecodeError:
        raise NickError("nick_utf8") from None
    if not nick:
        raise NickError("nick_empty")
    if len(nick) > MAX_NICK_CHARS:
        raise NickError("nick_too_long")
    if not nick.isprintable():
        raise NickError("nick_control")
    if ":" in nick:
        raise NickError("nick_colon")
    if "*" in nick or nick.startswith("-"):
        raise NickError("nick_reserved")
    return nick


def nick_key(nick: str) -> str:
    """The identity of a nickname: unique case-insensitively (``Alice`` is ``alice``)."""
    return nick.casefold()
