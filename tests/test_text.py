"""The one sanitiser (lanchatd.core.text): what others wrote never acts on a terminal or hides."""

from __future__ import annotations

import unicodedata

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lanchatd.core.text import has_hidden, sanitize, to_ascii

# Timing is not the subject here, and the machine is shared: no per-example deadline.
relaxed = settings(deadline=None, max_examples=300)

#: Default-ignorable code points that are not format characters (DerivedCoreProperties.txt).
IGNORABLE_LETTERS = {
    0x034F, 0x115F, 0x1160, 0x17B4, 0x17B5, 0x180B, 0x180C, 0x180D, 0x180F, 0x3164, 0xFFA0,
    *range(0xFE00, 0xFE10), *range(0xE0100, 0xE01F0),
}  # fmt: skip
PRESENTATION = "\ufe0e\ufe0f"
JOINERS = "\u200c\u200d"


def visible(char: str) -> bool:
    """A character that shows as itself: the oracle, from unicodedata, not from text.py."""
    return not (
        char.isspace()
        or unicodedata.category(char) in {"Cc", "Cf", "Cs", "Zl", "Zp"}
        or ord(char) in IGNORABLE_LETTERS
    )


def kept(char: str) -> bool:
    """Shown as itself wherever it stands: visible, an ordinary space, or a tab."""
    return visible(char) or unicodedata.category(char) == "Zs" or char == "\t"


def assert_safe(shown: str) -> None:
    for index, char in enumerate(shown):
        before = shown[index - 1] if index else " "
        after = shown[index + 1] if index + 1 < len(shown) else " "
        if char in PRESENTATION:
            assert visible(before), (shown, index)
        elif char in JOINERS:
            assert visible(before) or before in PRESENTATION, (shown, index)
            assert visible(after), (shown, index)
        else:
            assert kept(char), (shown, index)


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        ("fake\rncvictim: hi", "fake^Mncvictim: hi"),
        ("\x1b[2J*** Server notice: x", "^[[2J*** Server notice: x"),
        ("\x1b]52;c;cm0gLXJmIH4vKg==\x07", "^[]52;c;cm0gLXJmIH4vKg==^G"),
        ("\x1b]0;pwned\x1b\\", "^[]0;pwned^[\\"),
        ("ding\x07", "ding^G"),
        ("nul\x00del\x7f", "nul^@del^?"),
        ("csi\x9b31m", "csi<U+009B>31m"),
        ("\u202eevil\u202c", "<U+202E>evil<U+202C>"),
        ("zero\u200bwidth\ufeff", "zero<U+200B>width<U+FEFF>"),
        ("\u2066iso\u2069\u200f\u061c", "<U+2066>iso<U+2069><U+200F><U+061C>"),
        ("filler\u3164\u115f\uffa0", "filler<U+3164><U+115F><U+FFA0>"),
        ("cgj\u034f vs\ufe00 tag\U000e0041", "cgj<U+034F> vs<U+FE00> tag<U+E0041>"),
        ("lone \ufe0f and \u200d", "lone <U+FE0F> and <U+200D>"),
        ("surrogate \ud800", "surrogate <U+D800>"),
        ("tab\tkept", "tab\tkept"),
        (
            "❤\ufe0f 👩\u200d💻 \u0645\u06cc\u200c\u062e",
            "❤\ufe0f 👩\u200d💻 \u0645\u06cc\u200c\u062e",
        ),
        ("José ünïcödé 李", "José ünïcödé 李"),
    ],
)
def test_sanitize_shows_what_would_act_or_hide(raw: str, shown: str) -> None:
    assert sanitize(raw) == shown


def test_every_format_control_and_separator_is_escaped_on_its_own() -> None:
    """Completeness against this Python's Unicode data, not against our own ranges."""
    for code in range(0x110000):
        char = chr(code)
        if not kept(char) or char in PRESENTATION:
            assert sanitize(char) != char, f"U+{code:04X}"


@relaxed
@given(st.text())
def test_sanitized_text_holds_nothing_that_acts_or_hides(text: str) -> None:
    shown = sanitize(text)
    assert_safe(shown)
    assert sanitize(shown) == shown


@relaxed
@given(st.text(st.sampled_from("a ❤\x1b\t\ufe0f\u200d\u200c\u202e\u3164")))
def test_sanitized_joiners_and_selectors_only_beside_visible_characters(text: str) -> None:
    assert_safe(sanitize(text))


@pytest.mark.parametrize(
    ("raw", "ascii"),
    [
        ("José", "Jose"),
        ("café ☕", "cafe ?"),
        ("Kantin tutup — “besok” lagi…", 'Kantin tutup - "besok" lagi...'),
        ("Straße, Łódź, Ærø, ½, ﬁ", "Strasse, Lodz, AEro, 1/2, fi"),
        ("\uff21\uff22\uff23 李", "ABC ?"),
        ("❤\ufe0f 👩\u200d💻", "? ??"),
        ("\x1b[2J\u202e", "^[[2J<U+202E>"),
    ],
)
def test_to_ascii_transliterates_or_shows_a_placeholder(raw: str, ascii: str) -> None:
    assert to_ascii(raw) == ascii


@relaxed
@given(st.text())
def test_to_ascii_is_printable_ascii(text: str) -> None:
    out = to_ascii(text)
    assert all(" " <= char <= "~" or char == "\t" for char in out), out


@pytest.mark.parametrize(
    "name", ["alice\u034f", "alice\ufe0f", "alice\u3164", "\u3164", "a\u200db", "\u2800", "x\x1b"]
)
def test_names_refuse_every_hidden_character(name: str) -> None:
    assert has_hidden(name)


@pytest.mark.parametrize("name", ["alice", "José", "user1 pc", "李小龍", "Ærø"])
def test_names_keep_ordinary_letters(name: str) -> None:
    assert not has_hidden(name)
