"""Pure rules: nicknames, slash commands, flood control."""

from __future__ import annotations

import pytest

from lanchatd.core import commands
from lanchatd.core.nicknames import NickError, nick_key, parse_nick
from lanchatd.daemon.ratelimit import TokenBucket


@pytest.mark.parametrize(
    ("raw", "nick"),
    [
        (b"alice", "alice"),
        (b"  user1 pc \r", "user1 pc"),
        ("José".encode(), "José"),
        (b"x" * 32, "x" * 32),
        (b"ac/dc", "ac/dc"),
    ],
)
def test_accepted_nicknames(raw: bytes, nick: str) -> None:
    assert parse_nick(raw) == nick


@pytest.mark.parametrize(
    ("raw", "key"),
    [
        (b"   ", "nick_empty"),
        (b"x" * 33, "nick_too_long"),
        (b"al\x1bice", "nick_control"),
        (b"a\tb", "nick_control"),
        (b"al:ice", "nick_colon"),
        (b"*** admin", "nick_reserved"),
        (b"a* b", "nick_reserved"),
        (b"-> bob", "nick_reserved"),
        (b"/capfoo", "nick_command"),
        (b" /who", "nick_command"),
        ("José".encode("latin-1"), "nick_utf8"),
    ],
)
def test_refused_nicknames(raw: bytes, key: str) -> None:
    with pytest.raises(NickError) as caught:
        parse_nick(raw)
    assert caught.value.key == key


def test_nicknames_compare_case_insensitively() -> None:
    assert nick_key("Alice") == nick_key("ALICE") == nick_key("alice")


# alice with a Cyrillic a, in fullwidth letters, in mathematical bold and script letters.
LOOKALIKES = [
    "\u0430lice",
    "\uff41\uff4c\uff49\uff43\uff45",
    "\U0001d41a\U0001d425ice",
    "\U0001d4b6lice",
]


@pytest.mark.parametrize("nick", LOOKALIKES)
def test_look_alike_nicknames_are_the_same_nickname(nick: str) -> None:
    assert parse_nick(nick.encode()) == nick
    assert nick_key(nick) == nick_key("alice")


@pytest.mark.parametrize(("one", "other"), [("bob0", "bobo"), ("user1 pc", "userl pc")])
def test_confusable_digits_are_the_same_nickname(one: str, other: str) -> None:
    assert nick_key(one) == nick_key(other)


@pytest.mark.parametrize(("one", "other"), [("José", "Jose"), ("Zoë", "Zoe"), ("ann", "anna")])
def test_different_names_stay_different(one: str, other: str) -> None:
    assert nick_key(one) != nick_key(other)


@pytest.mark.parametrize(
    ("raw", "key"),
    [
        ("alice\u034f", "nick_invisible"),  # combining grapheme joiner
        ("alice\ufe0f", "nick_invisible"),  # variation selector
        ("alice\u3164", "nick_invisible"),  # Hangul filler
        ("\u3164", "nick_invisible"),
        ("al\u200bice", "nick_invisible"),
        ("\u202eecila", "nick_invisible"),
        ("dave \u2800", "nick_invisible"),  # blank braille cell
        ("bob, carol, dave", "nick_punctuation"),
        ("alice Bergabung! bob", "nick_punctuation"),
        ("alice joined! bob", "nick_punctuation"),
        ("bob\u01c3", "nick_punctuation"),  # a click letter that looks like !
        ("bob\uff0c carol", "nick_punctuation"),  # fullwidth comma
        ("bob\uff1a", "nick_colon"),  # fullwidth colon
        ("\u2217 admin", "nick_reserved"),  # asterisk operator
        ("\u2010> bob", "nick_reserved"),  # a hyphen that is not '-'
        ("\uff0fcap", "nick_command"),  # fullwidth solidus
    ],
)
def test_hidden_and_look_alike_punctuation_are_refused(raw: str, key: str) -> None:
    with pytest.raises(NickError) as caught:
        parse_nick(raw.encode())
    assert caught.value.key == key


@pytest.mark.parametrize("nick", ["José", "user1 pc", "François", "Müller", "李小龍", "Łukasz"])
def test_ordinary_names_are_accepted(nick: str) -> None:
    assert parse_nick(nick.encode()) == nick


@pytest.mark.parametrize(
    ("text", "command"),
    [
        ("hello /who", None),
        ("/who", commands.Who()),
        ("/WHO extra", commands.Who()),
        ("/me waves hello", commands.Me("waves hello")),
        ("/me", commands.Usage("usage_me")),
        (
            "/msg Bob hi there",
            commands.PrivateMessage("Bob hi there", (("bob", 4), ("bob hi", 7)), "Bob"),
        ),
        (
            '/msg "Bob hi" there',
            commands.PrivateMessage('"Bob hi" there', (("bob hi", 9),), "Bob hi"),
        ),
        (
            '/msg "Bob hi there',
            commands.PrivateMessage(
                '"Bob hi there', ((nick_key('"bob'), 5), (nick_key('"bob hi'), 8)), '"Bob'
            ),
        ),
        ("/msg bob", commands.Usage("usage_msg")),
        ("/quit", commands.Quit()),
        ("/help", commands.Help()),
        ("/dance now", commands.Unknown("/dance")),
        ("/history", commands.History(20)),
        ("/HISTORY 5", commands.History(5)),
        ("/history 900", commands.History(500)),
        ("/history 0", commands.Usage("usage_history")),
        ("/history five", commands.Usage("usage_history")),
        ("/history \u0665", commands.Usage("usage_history")),
    ],
)
def test_parse_command(text: str, command: commands.Command | None) -> None:
    assert commands.parse_command(text) == command


def test_msg_readings_stay_within_the_longest_nickname() -> None:
    """Thousands of spaces give at most one reading per space in the first 32 characters."""
    command = commands.parse_command("/msg " + "a " * 5000 + "hi")
    assert isinstance(command, commands.PrivateMessage)
    assert [start for _, start in command.readings] == list(range(2, 33, 2))


def test_token_bucket_allows_burst_then_paces() -> None:
    bucket = TokenBucket(rate=10, burst=3)
    now = bucket._stamp
    assert [bucket.take(now) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert bucket.take(now) == pytest.approx(0.1)
    assert bucket.take(now + 0.1) == pytest.approx(0.1)
    assert bucket.take(now + 10) == 0.0


def test_token_bucket_rate_zero_is_off() -> None:
    bucket = TokenBucket(rate=0, burst=1)
    assert all(bucket.take() == 0.0 for _ in range(1000))
