"""Nickname rules: what a client may call itself, and when two names are the same.

Two names are the same when they look the same: the identity of a nickname is its
confusable skeleton (Unicode TR39, as ergo does for IRC), so ``alice`` with a Cyrillic
``a`` (U+0430), in fullwidth or in mathematical letters cannot join beside ``alice``, and
``kick alice`` means the one that is here. Invisible characters are refused outright
(lanchatd.core.text).
"""

from __future__ import annotations

import json
import unicodedata
from collections.abc import Mapping
from typing import Final

from confusable_homoglyphs.utils import path

from lanchatd.core.text import has_hidden

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
    leading ``-`` (the ``*-> nick*`` echo) would let a user forge server or private lines;
    ``,`` would fake the ``/who`` list and ``!`` a join or leave line (``alice Bergabung!
    bob``); a leading ``/`` would read as a command (``/cap ...`` is the capability line a
    client may send before its nickname). Look-alikes of these characters (fullwidth colon,
    U+01C3 click...) count as them.
    """
    try:
        nick = raw.decode().strip()
    except UnicodeDecodeError:
        raise NickError("nick_utf8") from None
    if not nick:
        raise NickError("nick_empty")
    if len(nick) > MAX_NICK_CHARS:
        raise NickError("nick_too_long")
    if any(unicodedata.category(char) == "Cc" for char in nick):
        raise NickError("nick_control")
    if has_hidden(nick):
        raise NickError("nick_invisible")
    if not nick.isprintable():
        raise NickError("nick_control")
    key = nick_key(nick)
    if ":" in key:
        raise NickError("nick_colon")
    if "*" in key or key.startswith("-"):
        raise NickError("nick_reserved")
    if "," in key or "!" in key:
        raise NickError("nick_punctuation")
    if key.startswith("/"):
        raise NickError("nick_command")
    return nick


def nick_key(nick: str) -> str:
    """The identity of a nickname: its confusable skeleton, case-insensitive.

    Compatibility forms are folded first (fullwidth, mathematical letters), then each
    character becomes its TR39 prototype. Case is folded before (``Alice`` is ``alice``) and
    after (prototypes may be capitals: ``0`` → ``O``).
    """
    folded = unicodedata.normalize("NFKD", nick).casefold()
    return unicodedata.normalize("NFD", folded.translate(_PROTOTYPES)).casefold()


def _prototypes(pairs: Mapping[str, list[str]]) -> dict[int, str]:
    """TR39's table (code point → prototype) from confusable_homoglyphs' data.

    The package keeps each confusables.txt line in both directions, some wrapped in
    direction marks, and has no skeleton function. A source has exactly one entry, its
    prototype; a prototype lists all its sources. When a pair lists only each other either
    could be the prototype, and mapping the later code point to the earlier one gives the
    same equality. Prototypes that hold sources are resolved until nothing changes.
    """
    linked: dict[str, list[str]] = {}
    for key, entries in pairs.items():
        linked.setdefault(_unmarked(key), []).extend(map(_unmarked, entries))
    table: dict[int, str] = {}
    for source, targets in linked.items():
        if len(source) != 1 or len(targets) != 1:
            continue
        target = targets[0]
        if len(target) != 1 or len(linked.get(target, ())) != 1 or source > target:
            table[ord(source)] = target
    for code, target in table.items():
        resolved = target
        for _ in range(8):
            resolved, previous = resolved.translate(table), resolved
            if resolved == previous:
                break
        table[code] = resolved
    return table


def _unmarked(text: str) -> str:
    return text.replace("\u200e", "").replace("\u200f", "")


def _load_pairs() -> dict[str, list[str]]:
    """confusable_homoglyphs' data without the character names (most of its memory)."""
    with open(path("confusables.json"), encoding="utf-8") as file:
        pairs: dict[str, list[str]] = json.load(
            file, object_hook=lambda entry: entry["c"] if entry.keys() == {"c", "n"} else entry
        )
    return pairs


_PROTOTYPES: Final = _prototypes(_load_pairs())
