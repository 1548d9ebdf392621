"""Turning received lines into safe terminal text.

Everything another user typed reaches our terminal, so nothing they send may be interpreted
by it: every line goes through the one sanitiser (lanchatd.core.text), which shows control
characters, escape sequences and invisible or reordering Unicode as visible text (``ESC``
becomes ``^[`` as in ``cat -v``), even if a server let them through. Colour is added only
by us, after sanitising, and only when wanted (a terminal, and no ``NO_COLOR``). Each kind
of line also carries a plain-text marker (``***``, ``*``, ``-->``, ``<--``, ``-!-``), so
kinds stay distinct without colour.
"""

from __future__ import annotations

import os
import zlib
from collections.abc import Mapping
from typing import Final

from lanchatd.client.words import say
from lanchatd.core.lines import LineKind, ReceivedLine, classify_line
from lanchatd.core.text import sanitize


def color_wanted(environ: Mapping[str, str] | None = None) -> bool:
    """False when the user asked for no colour (https://no-color.org: set and not empty)."""
    environ = os.environ if environ is None else environ
    return not environ.get("NO_COLOR")


# SGR parameters. The nickname palette leaves out black, white and their bright forms,
# which vanish on one background or the other.
NICK_PALETTE: Final = ("31", "32", "33", "34", "35", "36", "91", "92", "93", "94", "95", "96")
_BOLD: Final = "1"
_ITALIC: Final = "3"
_GREY: Final = "90"
_NOTICE: Final = "33"
_PRIVATE: Final = "1;35"
_WARNING: Final = "1;33"
_ERROR: Final = "1;31"


def nick_color(nick: str) -> str:
    """The SGR colour of a nickname: the same for everyone, every run (crc32, not hash())."""
    key = nick.casefold().encode()
    return NICK_PALETTE[zlib.crc32(key) % len(NICK_PALETTE)]


class Renderer:
    """Formats received lines and the client's own notices for display."""

    __slots__ = ("color",)

    def __init__(self, color: bool) -> None:
        self.color = color

    def _sgr(self, params: str, text: str) -> str:
        return f"\x1b[{params}m{text}\x1b[0m" if self.color and text else text

    def _nick(self, nick: str) -> str:
        return self._sgr(f"{_BOLD};{nick_color(nick)}", sanitize(nick))

    def line(self, raw: str) -> str:
        """One received line, sanitised and styled by kind."""
        return self.received(classify_line(raw), raw)

    def history(self, clock: str, raw: str) -> str:
        """A replayed line: styled as live, after a grey mark with its time."""
        return f"{self._sgr(_GREY, say('history_mark', time=clock))} {self.line(raw)}"

    def received(self, line: ReceivedLine, raw: str) -> str:
        """Style a classified line; ``raw`` is used as is when nothing more is known."""
        text = sanitize(line.text)
        match line.kind:
            case LineKind.CHAT:
                return f"{self._nick(line.nick)}: {text}"
            case LineKind.ACTION:
                return self._sgr(_ITALIC, f"* {text}")
            case LineKind.PRIVATE:
                arrow = "-> " if line.outgoing else ""
                frame = f"*{arrow}{sanitize(line.nick)}*"
                return f"{self._sgr(_PRIVATE, frame)} {text}"
            case LineKind.NOTICE:
                return self._sgr(_NOTICE, f"*** {text}")
            case LineKind.JOIN | LineKind.LEAVE:
                arrow = "-->" if line.kind is LineKind.JOIN else "<--"
                rest = sanitize(line.text.removeprefix(line.nick))
                return f"{self._sgr(_GREY, arrow)} {self._nick(line.nick)}{self._sgr(_GREY, rest)}"
            case LineKind.WELCOME:
                return self._sgr(_GREY, f"--- {text}")
        return sanitize(raw)

    def notice(self, text: str) -> str:
        """A message from this client itself (not from the server)."""
        return self._sgr(_GREY, f"-!- {sanitize(text)}")

    def warning(self, text: str) -> str:
        """Something the user must notice: connection lost, a message not sent."""
        return self._sgr(_WARNING, f"-!- {sanitize(text)}")

    def error(self, text: str) -> str:
        """Something went wrong for good (the client is about to stop)."""
        return self._sgr(_ERROR, f"-!- {sanitize(text)}")
