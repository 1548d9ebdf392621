"""classify_line: every line the server can send is told apart, in both languages."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lanchatd.core.catalog import LANGUAGES, Catalog
from lanchatd.core.lines import LineKind, ReceivedLine, classify_line
from lanchatd.core.nicknames import NickError, parse_nick

# Timing is not the subject here, and the machine is shared: no per-example deadline.
relaxed = settings(deadline=None)


@pytest.mark.parametrize("lang", LANGUAGES)
def test_catalogue_lines_classify(lang: str) -> None:
    say = Catalog(lang)
    assert classify_line(say("joined", nick="user1 pc")) == ReceivedLine(
        LineKind.JOIN, say("joined", nick="user1 pc"), "user1 pc"
    )
    assert classify_line(say("left", nick="bob")).kind is LineKind.LEAVE
    assert classify_line(say("left", nick="bob")).nick == "bob"
    assert classify_line(say("welcome")).kind is LineKind.WELCOME
    assert classify_line(say("action", nick="bob", text="waves")) == ReceivedLine(
        LineKind.ACTION, "bob waves"
    )
    assert classify_line(say("private_in", sender="bob", text="psst: x")) == ReceivedLine(
        LineKind.PRIVATE, "psst: x", "bob"
    )
    assert classify_line(say("private_out", target="bob", text="hi")) == ReceivedLine(
        LineKind.PRIVATE, "hi", "bob", outgoing=True
    )
    for key in ("help", "shutdown", "bad_utf8", "nick_empty", "usage_me"):
        assert classify_line(say(key)).kind is LineKind.NOTICE, key
    notice = say("who", count=2, nicks="alice, bob")
    assert classify_line(notice) == ReceivedLine(LineKind.NOTICE, notice.removeprefix("*** "))


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("alice: hi", ReceivedLine(LineKind.CHAT, "hi", "alice")),
        ("user1 pc: hi: there", ReceivedLine(LineKind.CHAT, "hi: there", "user1 pc")),
        # Forgery attempts arrive attributed: bob cannot look like the server or alice.
        ("bob: *** Server dimatikan", ReceivedLine(LineKind.CHAT, "*** Server dimatikan", "bob")),
        ("bob: alice: hi", ReceivedLine(LineKind.CHAT, "alice: hi", "bob")),
        ("bob: alice Bergabung!", ReceivedLine(LineKind.CHAT, "alice Bergabung!", "bob")),
        ("alice:   spaced", ReceivedLine(LineKind.CHAT, "  spaced", "alice")),
        ("alice: ", ReceivedLine(LineKind.CHAT, "", "alice")),
        (": no nick", ReceivedLine(LineKind.OTHER, ": no nick")),
        ("Bergabung!", ReceivedLine(LineKind.OTHER, "Bergabung!")),
        ("*", ReceivedLine(LineKind.OTHER, "*")),
        ("*broken", ReceivedLine(LineKind.OTHER, "*broken")),
        ("", ReceivedLine(LineKind.OTHER, "")),
    ],
)
def test_edge_lines(line: str, expected: ReceivedLine) -> None:
    assert classify_line(line) == expected


def _parses(nick: str) -> bool:
    try:
        parse_nick(nick.encode())
    except NickError:
        return False
    return True


# Nicknames the daemon accepts, built directly (filtering random text would discard most);
# the filter drops the rare draws that are hidden characters or look-alikes of reserved ones.
NICKS = (
    st.text(
        st.one_of(
            st.characters(
                whitelist_categories=("L", "M", "N", "P", "S"), blacklist_characters=":*,!"
            ),
            st.just(" "),
        ),
        min_size=1,
        max_size=32,
    )
    .map(str.strip)
    .filter(lambda nick: bool(nick) and not nick.startswith("-") and _parses(nick))
)


def _accepted(nick: str) -> str:
    assert parse_nick(nick.encode()) == nick
    return nick


@relaxed
@given(NICKS, st.text(max_size=200))
def test_any_accepted_nick_round_trips_as_chat(nick: str, text: str) -> None:
    _accepted(nick)
    assert classify_line(f"{nick}: {text}") == ReceivedLine(LineKind.CHAT, text, nick)


@relaxed
@given(NICKS, st.sampled_from(LANGUAGES))
def test_any_accepted_nick_round_trips_in_presence_lines(nick: str, lang: str) -> None:
    _accepted(nick)
    say = Catalog(lang)
    assert classify_line(say("joined", nick=nick)).nick == nick
    assert classify_line(say("joined", nick=nick)).kind is LineKind.JOIN
    assert classify_line(say("left", nick=nick)).kind is LineKind.LEAVE


@relaxed
@given(NICKS, st.text(max_size=200))
def test_server_lines_never_look_like_chat(nick: str, text: str) -> None:
    _accepted(nick)
    say = Catalog("en")
    for line in (
        say("action", nick=nick, text=text),
        say("private_in", sender=nick, text=text),
        say("private_out", target=nick, text=text),
        say("who", count=1, nicks=nick),
    ):
        assert classify_line(line).kind is not LineKind.CHAT
