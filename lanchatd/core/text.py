"""Showing text that someone else wrote: the one sanitiser for the daemon, lanchat and lanchatctl.

A chat line, a nickname or a kick reason ends up on somebody's terminal. Nothing in it may
act on that terminal (CR rewrites a line, ESC starts sequences that clear the screen, set the
window title or write the clipboard, BEL rings, C1 U+009B is a one-character CSI), and nothing
may be invisible or reorder what is displayed (bidi controls, zero-width and other format
characters, Hangul fillers, variation selectors on their own), because those let one user
make a line read as if someone else wrote it. Such characters are shown as visible escapes,
never dropped, so the reader sees that something was there: ``ESC`` becomes ``^[`` as in
``cat -v``, DEL ``^?``, everything else ``<U+202E>``.

Three exceptions keep ordinary writing intact: tab (it moves the cursor forward and cannot
hide or overwrite anything); a presentation selector (U+FE0E/U+FE0F) directly after a visible
character (``❤️``); and a zero-width joiner or non-joiner (U+200D/U+200C) between visible
characters (emoji sequences such as ``👩‍💻``, Persian and Indic spelling). Anywhere else they
are escaped like the rest.

Sans-IO and pure: no sockets, threads or clocks.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Callable
from typing import Final

#: C0 controls except tab, DEL and the C1 controls.
_CONTROLS: Final = "\x00-\x08\x0a-\x1f\x7f-\x9f"
#: Characters that are invisible or change the display of others: every format (Cf)
#: character, the line and paragraph separators, surrogates (JSON can carry lone ones),
#: and the default-ignorable code points that are letters or marks (U+034F, Hangul fillers,
#: variation selectors, Mongolian selectors, Khmer inherent vowels). Whole blocks are listed
#: where Unicode keeps adding format characters to them, so newer Pythons change nothing.
_INVISIBLE: Final = (
    "\u00ad\u034f\u0600-\u0605\u061c\u06dd\u070f\u0890\u0891\u08e2\u115f\u1160"
    "\u17b4\u17b5\u180b-\u180f\u200b\u200e\u200f\u2028-\u202e\u2060-\u206f\u3164"
    "\ud800-\udfff\ufe00-\ufe0d\ufeff\uffa0\ufff0-\ufffb"
    "\U000110bd\U000110cd\U00013430-\U0001345f\U0001bca0-\U0001bca3"
    "\U0001d173-\U0001d17a\U000e0000-\U000e0fff"
)
_PRESENTATION: Final = "\ufe0e\ufe0f"
_JOINERS: Final = "\u200c\u200d"
#: Every character that may need escaping, so text without any is returned after one scan.
_CANDIDATE: Final = re.compile(f"[{_CONTROLS}{_INVISIBLE}{_PRESENTATION}{_JOINERS}]")
_ALWAYS: Final = re.compile(f"[{_CONTROLS}{_INVISIBLE}]")
_CONTEXTUAL: Final = re.compile(f"[{_PRESENTATION}{_JOINERS}]")
_VISIBLE: Final = f"[^\\s{_CONTROLS}{_INVISIBLE}{_PRESENTATION}{_JOINERS}]"
#: A selector not right after a visible character; a joiner not between visible characters
#: (a selector before it counts: emoji sequences put one there). One pattern per character,
#: so each is replaced by a constant string and no Python runs per match.
_LONE_SELECTOR: Final = f"{{0}}(?<!{_VISIBLE}{{0}})"
_LONE_JOINER: Final = f"{{0}}(?<![^\\s{_CONTROLS}{_INVISIBLE}{_JOINERS}]{{0}})|{{0}}(?!{_VISIBLE})"
#: Names (nicknames) refuse every hidden character, joiners, selectors and blank braille too.
_HIDDEN: Final = re.compile(f"[{_CONTROLS}{_INVISIBLE}{_PRESENTATION}{_JOINERS}\u2800]")


def _escape(char: str) -> str:
    code = ord(char)
    if code < 0x20:
        return "^" + chr(code + 0x40)
    if code == 0x7F:
        return "^?"
    return f"<U+{code:04X}>"


_LONE: Final = tuple(
    (re.compile((_LONE_SELECTOR if char in _PRESENTATION else _LONE_JOINER).format(char)), shown)
    for char in _PRESENTATION + _JOINERS
    for shown in [_escape(char)]
)


class _Table(dict[int, str]):
    """A ``str.translate`` table filled as characters are met (translating runs in C).

    It stops growing at ``_KEPT`` entries, so text holding every code point cannot make it
    large; beyond that, entries are computed each time.
    """

    __slots__ = ("_form",)

    def __init__(self, form: Callable[[str], str]) -> None:
        super().__init__()
        self._form = form

    def __missing__(self, code: int) -> str:
        form = self._form(chr(code))
        if len(self) < _KEPT:
            self[code] = form
        return form


_KEPT: Final = 8192
_ESCAPES: Final = _Table(lambda char: _escape(char) if _ALWAYS.match(char) else char)


def sanitize(text: str) -> str:
    """``text`` with every character a terminal acts on, or that hides or reorders, made visible."""
    if (text.isascii() and text.isprintable()) or _CANDIDATE.search(text) is None:
        return text
    if _CONTEXTUAL.search(text) is not None:
        for pattern, shown in _LONE:
            text = pattern.sub(shown, text)
    return text.translate(_ESCAPES)


def has_hidden(text: str) -> bool:
    """True if ``text`` holds a control, invisible or formatting character (names refuse them)."""
    return _HIDDEN.search(text) is not None


def to_ascii(text: str) -> str:
    """``text`` sanitised and in printable ASCII, for clients that decode ASCII (classic mode).

    Letters lose their accents (``José`` → ``Jose``), common punctuation gets its ASCII form
    (``—`` → ``-``, ``…`` → ``...``); anything without a close form becomes ``?``.
    """
    text = sanitize(text)
    return text if text.isascii() else text.translate(_ASCII_FORMS)


#: Letters and punctuation whose ASCII form NFKD does not find.
_SPECIAL_FORMS: Final = {
    "ß": "ss", "æ": "ae", "Æ": "AE", "œ": "oe", "Œ": "OE", "ø": "o", "Ø": "O", "đ": "d",
    "Đ": "D", "ł": "l", "Ł": "L", "ð": "d", "Ð": "D", "þ": "th", "Þ": "Th", "\u0131": "i",
    **dict.fromkeys("\u2010\u2011\u2012\u2013\u2014\u2015\u2212", "-"),  # dashes, minus
    **dict.fromkeys("\u2018\u2019\u201a\u201b\u2039\u203a", "'"),  # single quotes
    **dict.fromkeys("\u201c\u201d\u201e\u201f\u00ab\u00bb", '"'),  # double quotes
    "\u2022": "*", "\u00b7": ".", "\u2044": "/", "\u00d7": "x", "\u00f7": "/", "€": "EUR",
    "©": "(c)", "®": "(R)", "°": "deg",
    # Kept beside a visible character by sanitize(); the character itself becomes ASCII.
    "\ufe0e": "", "\ufe0f": "", "\u200c": "", "\u200d": "",
}  # fmt: skip


def _ascii_form(char: str) -> str:
    form = _SPECIAL_FORMS.get(char)
    if form is not None:
        return form
    pieces = [c for c in unicodedata.normalize("NFKD", char) if not unicodedata.combining(c)]
    out = "".join(c if " " <= c <= "~" else _SPECIAL_FORMS.get(c, "?") for c in pieces)
    return out or "?"


_ASCII_FORMS: Final = _Table(lambda char: char if char < "\x80" else _ascii_form(char))
