"""core/announce.py: the TXT record the daemon announces, and what a browser shows of anyone's."""

from __future__ import annotations

from hypothesis import example, given
from hypothesis import strategies as st

from lanchatd.core.announce import (
    SERVICE_TYPE,
    Announcement,
    Found,
    found,
    instance_label,
)
from lanchatd.core.text import sanitize


def received(properties: dict[str, str]) -> dict[bytes, bytes | None]:
    """A TXT record as zeroconf hands it over from the network: bytes both ways."""
    return {key.encode(): value.encode() for key, value in properties.items()}


def test_the_announced_record_reads_back_as_announced() -> None:
    sent = Announcement("lanchat on lab-1", 5001, True, "en", web_port=8080, web_path="/chat")
    server = found(
        f"lanchat on lab-1.{SERVICE_TYPE}",
        ["fd00::2", "192.168.1.2"],
        5001,
        received(sent.properties()),
    )
    assert server == Found(
        name="lanchat on lab-1",
        addresses=("fd00::2", "192.168.1.2"),
        port=5001,
        tls=True,
        lang="en",
        proto=1,
        web_port=8080,
        web_path="/chat",
    )
    assert server.address == "192.168.1.2"
    assert server.web_url == "https://192.168.1.2:8080/chat"
    assert server.as_json() == {
        "name": "lanchat on lab-1",
        "addresses": ["fd00::2", "192.168.1.2"],
        "port": 5001,
        "tls": True,
        "lang": "en",
        "proto": 1,
        "web": "https://192.168.1.2:8080/chat",
    }


def test_without_a_web_page_the_record_says_nothing_of_one() -> None:
    record = Announcement("room", 5001, False, "id").properties()
    assert record == {"proto": "1", "tls": "0", "lang": "id", "room": "room"}


def test_a_long_name_keeps_whole_characters_in_the_63_byte_label() -> None:
    label = instance_label("é" * 40)
    assert label == "é" * 31
    assert len(label.encode()) == 62


def test_a_record_without_fields_falls_back_to_the_instance_label() -> None:
    server = found(f"bare.{SERVICE_TYPE}", ["10.0.0.1"], 5001, {})
    assert server == Found("bare", ("10.0.0.1",), 5001, False, None, None, None, "/")
    assert server.web_url is None


def test_hostile_values_are_shown_harmlessly() -> None:
    server = found(
        f"x\x1b[2J.{SERVICE_TYPE}",
        ["not an address", "10.0.0.1", "10.0.0.1"],
        5001,
        {
            b"room": b"\x1b]0;pwned\x07\xff\xfe caf\xc3\xa9\xe2\x80\xae",
            b"lang": b"x" * 1000,
            b"tls": b"yes",
            b"web": b"99999999",
            b"path": b"/\x1b[2J",
            b"proto": b"-1",
            b"\xff": b"junk",
            b"novalue": None,
        },
    )
    assert server.name == "^[]0;pwned^G\ufffd\ufffd caf\u00e9<U+202E>"
    assert server.lang == "x" * 100
    assert (server.tls, server.web_port, server.proto) == (False, None, None)
    assert server.addresses == ("10.0.0.1",)


def test_addresses_that_reach_the_browsing_machine_itself_are_dropped() -> None:
    announced = ["127.0.0.1", "0.0.0.0", "224.0.0.251", "255.255.255.255", "::1", "::"]
    announced += ["ff02::fb", "::ffff:127.0.0.1", "192.168.1.2", "169.254.7.7", "2001:db8::2"]
    server = found(f"x.{SERVICE_TYPE}", announced, 5001, {})
    assert server.addresses == ("192.168.1.2", "169.254.7.7", "2001:db8::2")
    assert found(f"x.{SERVICE_TYPE}", ["127.0.0.1"], 5001, {}).address is None


def test_an_unsafe_path_becomes_the_root_of_the_web_page() -> None:
    server = found(f"a.{SERVICE_TYPE}", ["10.0.0.1"], 5001, {b"web": b"80", b"path": b'x"><'})
    assert server.web_url == "http://10.0.0.1:80/"


@given(
    st.text(),
    st.lists(st.text(max_size=50), max_size=20),
    st.integers(),
    st.dictionaries(st.binary(max_size=300), st.none() | st.binary(max_size=300), max_size=20),
)
@example("a\tb", [], 0, {b"lang": b"\t\x1b"})  # tabs would break the list's columns
def test_nothing_a_neighbour_sends_raises_or_reaches_the_terminal(
    instance: str, addresses: list[str], port: int, properties: dict[bytes, bytes | None]
) -> None:
    server = found(instance, addresses, port, properties)
    shown = [server.name, server.lang or "", server.web_url or "", *server.addresses]
    for text in shown:
        assert sanitize(text) == text
        assert not any(ord(c) < 0x20 or 0x7F <= ord(c) < 0xA0 for c in text)
        assert len(text) <= 200
    assert 0 <= server.port < 65536
