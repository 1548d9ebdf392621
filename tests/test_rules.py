"""Pure rules: nicknames, slash commands, flood control."""

from __future__ import annotations

import pytest

from lanchatd import commands
from lanchatd.nicknames import NickError, nick_key, parse_nick
from lanchatd.ratelimit import TokenBucket


@pytest.mark.parametrize(
    ("raw", "nick"),
    [
        (b"alice", "alice"),
        (b"  user1 pc \r", "user1 pc"),
        ("José".encode(), "José"),
        (b"x" * 32, "x" * 32),
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
        ("José".encode("latin-1"), "nick_utf8"),
    ],
)
def test_refused_nicknames(raw: bytes, key: str) -> None:
    with pytest.raises(NickError) as caught:
        parse_nick(raw)
    assert caught.value.key == key


def test_nicknames_compare_case_insensitively() -> None:
    assert nick_key("Alice") == nick_key("ALICE") == nick_key("alice")


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
            commands.PrivateMessage('"Bob hi there', (('"bob', 5), ('"bob hi', 8)), '"Bob'),
        ),
        ("/msg bob", commands.Usage("usage_msg")),
        ("/quit", commands.Quit()),
        ("/help", commands.Help()),
        ("/dance now", commands.Unknown("/dance")),
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
