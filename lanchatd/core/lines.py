"""What the lines on the wire mean: who said a chat line, what kind a line is, which refusal.

One home for the rules both sides rely on. The server attributes every chat line
(:func:`chat_prefix`) and strips a sender's own prefix first (:func:`own_words`: the
tutorial client types its name before every message); the client expects the same echo
back and tells lines apart (:func:`classify_line`). Refusals are recognised by catalogue key
(:func:`refusal_key`), matched against whole templates in every language, so a client's
behaviour depends on which key a line is, never on how one translation happens to begin.
"""

from __future__ import annotations

import enum
import re
import string
from dataclasses import dataclass
from typing import Final

from lanchatd.core.catalog import CATALOGUES, LANGUAGES


def chat_prefix(nick: str) -> str:
    """What starts every chat line ``nick`` says: ``{nick}: ``."""
    return nick + ": "


def own_words(nick: str, text: str) -> str:
    """``text`` without a leading :func:`chat_prefix` of its sender: the server adds it back,
    so a client that typed it (the tutorial client always does) is not attributed twice."""
    return text.removeprefix(chat_prefix(nick))


#: Catalogue keys of lines refusing a connection or a nickname: the server closes after one.
REFUSALS: Final = frozenset(
    {
        "nick_empty",
        "nick_too_long",
        "nick_control",
        "nick_colon",
        "nick_reserved",
        "nick_taken",
        "nick_lookalike",
        "nick_invisible",
        "nick_punctuation",
        "nick_command",
        "nick_utf8",
        "nick_timeout",
        "server_full",
        "handshake_shed",
        "per_address",
        "tls_required",
    }
)
#: Catalogue keys telling a client it was put out by an administrator (kicked, banned):
#: coming straight back would defeat the administrator, so a client does not retry.
REMOVALS: Final = frozenset({"kicked_you", "banned_you", "banned_you_until"})


def _pattern(template: str) -> str:
    """A template as a regular expression: literal text exact, each field any text."""
    return "".join(
        re.escape(literal) + ("(?:.*)" if field is not None else "")
        for literal, field, _, _ in string.Formatter().parse(template)
    )


_REFUSAL_PATTERNS: Final = tuple(
    (key, re.compile(_pattern(CATALOGUES[lang][key]), re.DOTALL))
    for key in sorted(REFUSALS | REMOVALS, key=lambda key: (-len(key), key))
    for lang in LANGUAGES
)


def refusal_key(line: str) -> str | None:
    """The catalogue key (in :data:`REFUSALS` or :data:`REMOVALS`) that ``line`` is, in any
    language, or None. Only server lines (starting with ``*``) can match."""
    if not line.startswith("*"):
        return None
    for key, pattern in _REFUSAL_PATTERNS:
        if pattern.fullmatch(line):
            return key
    return None


class LineKind(enum.Enum):
    """What a line received from the server is, as far as the client can tell."""

    CHAT = "chat"  #: ``{nick}: {text}``
    ACTION = "action"  #: ``* {nick} {text}`` (``/me``)
    PRIVATE = "private"  #: ``*{sender}* {text}`` or the echo ``*-> {target}* {text}``
    NOTICE = "notice"  #: ``*** ...``: answers, errors, shutdown
    JOIN = "join"  #: ``{nick} Bergabung!`` / ``{nick} joined!``
    LEAVE = "leave"  #: ``{nick} Keluar!`` / ``{nick} left!``
    WELCOME = "welcome"  #: ``Terkoneksi dengan Server!`` / ``Connected to the server!``
    OTHER = "other"  #: none of the above (another server, a newer catalogue)


@dataclass(frozen=True, slots=True)
class ReceivedLine:
    """A received line split into its parts.

    ``nick`` is the speaker (chat), the other party (private) or who came or went (join,
    leave); empty otherwise. ``text`` is the rest: the message for chat and private lines,
    everything after ``* `` for actions (a nickname may hold spaces, so where it ends is not
    knowable), everything after ``*** `` for notices, the whole line otherwise.
    ``outgoing`` marks the echo of one's own ``/msg``.
    """

    kind: LineKind
    text: str
    nick: str = ""
    outgoing: bool = False


def _presence_suffixes(key: str) -> tuple[str, ...]:
    return tuple(CATALOGUES[lang][key].removeprefix("{nick}") for lang in LANGUAGES)


_JOIN_SUFFIXES: Final = _presence_suffixes("joined")
_LEAVE_SUFFIXES: Final = _presence_suffixes("left")
_WELCOMES: Final = frozenset(CATALOGUES[lang]["welcome"] for lang in LANGUAGES)


def classify_line(line: str) -> ReceivedLine:
    """Tell what a line from the server is (see "Telling lines apart" in docs/protocol.md).

    This relies on the daemon's guarantees: nicknames never contain ``:`` nor start with
    ``*``, so only the server can send a line starting with ``*``, and only chat lines
    carry a ``:`` straight after the first word(s) (:func:`chat_prefix`).
    """
    if line.startswith("**"):
        return ReceivedLine(LineKind.NOTICE, line.removeprefix("***").removeprefix(" "))
    if line.startswith("* "):
        return ReceivedLine(LineKind.ACTION, line[2:])
    if line.startswith("*"):
        outgoing = line.startswith("*-> ")
        body = line[4:] if outgoing else line[1:]
        nick, star, text = body.partition("* ")
        if star and nick:
            return ReceivedLine(LineKind.PRIVATE, text, nick, outgoing)
        return ReceivedLine(LineKind.OTHER, line)
    nick, colon, text = line.partition(":")
    if colon and nick.strip():
        return ReceivedLine(LineKind.CHAT, text.removeprefix(" "), nick)
    if line in _WELCOMES:
        return ReceivedLine(LineKind.WELCOME, line)
    for suffixes, kind in ((_JOIN_SUFFIXES, LineKind.JOIN), (_LEAVE_SUFFIXES, LineKind.LEAVE)):
        for suffix in suffixes:
            if line.endswith(suffix) and len(line) > len(suffix):
                return ReceivedLine(kind, line, line.removesuffix(suffix))
    return ReceivedLine(LineKind.OTHER, line)
