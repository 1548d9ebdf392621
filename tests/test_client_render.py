"""Safe display: nothing another user sends may act on our terminal; kinds stay distinct."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lanchatd.client.render import NICK_PALETTE, Renderer, color_wanted, nick_color
from lanchatd.core.text import sanitize

# Characters a terminal acts on, or that reorder/break what is displayed.
UNSAFE = re.compile(
    "[\x00-\x08\x0a-\x1f\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069\u2028\u2029]"
)
SGR_COLOR = re.compile(r"\x1b\[[0-9;]*m")

# Timing is not the subject here, and the machine is shared: no per-example deadline.
relaxed = settings(deadline=None)


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        ("\x1b[2J", "^[[2J"),
        ("\x1b]0;pwned\x07", "^[]0;pwned^G"),
        ("a\rb\nc", "a^Mb^Jc"),
        ("nul\x00del\x7f", "nul^@del^?"),
        ("csi\x9b31m", "csi<U+009B>31m"),
        ("\u202eevil\u202c", "<U+202E>evil<U+202C>"),
        ("line\u2028sep", "line<U+2028>sep"),
        ("tab\tkept", "tab\tkept"),
        ("José 👩\u200d💻 ünïcödé", "José 👩\u200d💻 ünïcödé"),
        ("^[ already visible", "^[ already visible"),
    ],
)
def test_sanitize_makes_controls_visible(raw: str, shown: str) -> None:
    assert sanitize(raw) == shown


@relaxed
@given(st.text())
def test_sanitize_leaves_nothing_a_terminal_acts_on(text: str) -> None:
    clean = sanitize(text)
    assert not UNSAFE.search(clean)
    assert sanitize(clean) == clean


@relaxed
@given(st.text())
def test_renderer_without_colour_emits_no_escape_at_all(line: str) -> None:
    renderer = Renderer(color=False)
    for shown in (renderer.line(line), renderer.notice(line), renderer.warning(line)):
        assert "\x1b" not in shown
        assert not UNSAFE.search(shown)


@relaxed
@given(st.text())
def test_renderer_with_colour_adds_only_its_own_sgr(line: str) -> None:
    shown = Renderer(color=True).line(line)
    assert not UNSAFE.search(SGR_COLOR.sub("", shown))


@pytest.mark.parametrize(
    ("raw", "plain"),
    [
        ("alice: hi", "alice: hi"),
        ("* alice waves", "* alice waves"),
        ("*alice* psst", "*alice* psst"),
        ("*-> bob* psst", "*-> bob* psst"),
        ("*** Online (2): alice, bob", "*** Online (2): alice, bob"),
        ("alice Bergabung!", "--> alice Bergabung!"),
        ("alice left!", "<-- alice left!"),
        ("Terkoneksi dengan Server!", "--- Terkoneksi dengan Server!"),
        ("something else", "something else"),
    ],
)
def test_each_kind_has_a_plain_text_marker(raw: str, plain: str) -> None:
    assert Renderer(color=False).line(raw) == plain
    assert SGR_COLOR.sub("", Renderer(color=True).line(raw)) == plain


def test_kinds_look_different_in_colour() -> None:
    renderer = Renderer(color=True)
    styles = {
        kind: SGR_COLOR.findall(renderer.line(raw))
        for kind, raw in [
            ("notice", "*** Server dimatikan"),
            ("action", "* alice waves"),
            ("private", "*alice* psst"),
            ("welcome", "Connected to the server!"),
        ]
    }
    assert len({tuple(found) for found in styles.values()}) == len(styles)
    assert all(styles.values())


def test_nick_colour_is_stable_and_case_blind() -> None:
    assert nick_color("alice") == nick_color("ALICE") == nick_color("Alice")
    assert nick_color("alice") in NICK_PALETTE
    # crc32, not hash(): the same in every process (asserted value guards against a switch).
    assert nick_color("alice") == NICK_PALETTE[663665735 % len(NICK_PALETTE)]
    colours = {nick_color(f"user{i}") for i in range(40)}
    assert len(colours) >= 6


def test_chat_nick_is_coloured_consistently() -> None:
    renderer = Renderer(color=True)
    first = renderer.line("alice: hi")
    second = renderer.line("alice: again")
    assert f"\x1b[1;{nick_color('alice')}malice\x1b[0m" in first
    assert first.split(":")[0] == second.split(":")[0]
    assert "hi" in first


def test_escape_in_a_nickname_position_is_neutralised_too() -> None:
    shown = Renderer(color=True).line("\x1b[31mevil: text")
    assert "^[[31mevil" in shown
    assert "\x1b[31m" not in shown


@pytest.mark.parametrize(
    ("environ", "wanted"),
    [
        ({}, True),
        ({"NO_COLOR": "1"}, False),
        ({"NO_COLOR": "anything"}, False),
        ({"NO_COLOR": ""}, True),
    ],
)
def test_no_color_is_honoured(environ: dict[str, str], wanted: bool) -> None:
    assert color_wanted(environ) is wanted
