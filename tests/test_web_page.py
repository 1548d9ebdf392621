"""The chat page in a real headless Chromium, against the real daemon's web port.

Browsers, netcat-style line clients and the tutorial client share one room here: what the page
shows is checked through the hooks it documents (``input[name=nick]``, ``[name=message]``, the
entries of ``[role=log]``).
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from selenium import webdriver
from selenium.common.exceptions import NoAlertPresentException
from selenium.webdriver.common.by import By

from tests.browser_helpers import Page, drivers, needs_chromium
from tests.support import Daemon, TutorialClient, free_port, wait_until

pytestmark = needs_chromium

#: The page's first retry comes after 0.5 s (+-20%): three times that with nothing is "no retry".
NO_RETRY_WINDOW = 1.5


@pytest.fixture
def browsers() -> Iterator[Callable[..., webdriver.Chrome]]:
    with drivers() as start:
        yield start


def _web(daemon: Daemon) -> str:
    return f"http://127.0.0.1:{daemon.wait_event('web_started')['port']}/"


def _chat_entries(page: Page, words: list[str]) -> list[str]:
    """The page's entries that are one of ``words``'s chat lines, in the page's order."""
    return [e for e in page.entries() if any(w in e for w in words)]


def test_browsers_netcat_and_tutorial_client_see_one_room_in_one_order(
    start_daemon: Callable[..., Daemon], browsers: Callable[..., webdriver.Chrome], clients: list
) -> None:
    daemon = start_daemon("--web-port", "0")
    url = _web(daemon)
    ana, budi = Page(browsers(), url), Page(browsers(), url)
    ana.join("ana")
    budi.join("budi")
    nc = daemon.chat("nc")
    tutorial = TutorialClient(daemon.port, "tut")
    clients += [nc, tutorial]
    daemon.wait_event("client_joined", nick="tut")
    ana.wait_entry("tut", "Bergabung!")

    said = [("ana", "halo semua"), ("nc", "dari netcat"), ("budi", "dari browser"), ("tut", "hi")]
    for nick, text in said:
        if nick == "ana":
            ana.say(text)
        elif nick == "budi":
            budi.say(text)
        elif nick == "nc":
            nc.send(text)
        else:
            tutorial.write(text)
        daemon.wait_event("message", nick=nick)
    lines = [f"{nick}: {text}" for nick, text in said]

    for page in (ana, budi):
        wait_until(lambda p=page: len(_chat_entries(p, lines)) == 4, what="four chat lines")
        shown = _chat_entries(page, lines)
        assert [line for entry in shown for line in lines if line in entry] == lines
    assert nc.expect(lines[-1])[-3:] == lines[:3]
    heard = tutorial.until(lines[-1])
    assert [heard.index(line) for line in lines] == sorted(heard.index(line) for line in lines)
    ana.wait(
        lambda d: ana.text("#who-list").split("\n") == ["ana", "budi", "nc", "tut"],
        "everyone in ana's list of who is online",
    )


def test_markup_from_others_is_shown_as_text_and_runs_nothing(
    daemon_with_web: tuple[Daemon, str], browsers: Callable[..., webdriver.Chrome], clients: list
) -> None:
    daemon, url = daemon_with_web
    page = Page(browsers(), url)
    page.join("ana")
    mallory = daemon.chat("mallory")
    clients.append(mallory)
    payloads = ["<img src=x onerror=alert(1)>", '<img src=x onerror="window.owned=1">']
    for payload in payloads:
        mallory.send(payload)
    for payload in payloads:
        page.wait_entry(f"mallory: {payload}")
    log = page.find("[role=log]")
    assert log.find_elements(By.TAG_NAME, "img") == []
    assert page.driver.execute_script("return window.owned") is None
    with pytest.raises(NoAlertPresentException):
        page.driver.switch_to.alert.text  # noqa: B018


@pytest.fixture
def daemon_with_web(start_daemon: Callable[..., Daemon]) -> tuple[Daemon, str]:
    daemon = start_daemon("--web-port", "0")
    return daemon, _web(daemon)


def test_a_kicked_page_says_why_and_does_not_come_back(
    daemon_with_web: tuple[Daemon, str], browsers: Callable[..., webdriver.Chrome]
) -> None:
    daemon, url = daemon_with_web
    page = Page(browsers(), url)
    page.join("ana")
    assert daemon.ctl("kick", "ana", "--reason", "spamming").returncode == 0
    page.wait(lambda d: "spamming" in page.text("#status"), "the reason in the status")
    status = page.text("#status")
    assert "Anda dikeluarkan oleh administrator: spamming" in status
    assert "tidak akan menyambung ulang" in status
    page.wait_entry("Anda dikeluarkan oleh administrator: spamming")
    assert not page.find("[name=message]").is_displayed()
    joins = len(daemon.find("client_joined"))
    with pytest.raises(AssertionError):
        wait_until(lambda: len(daemon.find("client_joined")) > joins, timeout=NO_RETRY_WINDOW)
    assert "spamming" in page.text("#status")


def test_a_banned_page_shows_the_ban_and_does_not_knock_again(
    daemon_with_web: tuple[Daemon, str], browsers: Callable[..., webdriver.Chrome]
) -> None:
    daemon, url = daemon_with_web
    page = Page(browsers(), url)
    page.join("ana")
    assert daemon.ctl("ban", "ana", "--reason", "flooding").returncode == 0
    page.wait(lambda d: "flooding" in page.text("#status"), "the ban in the status")
    assert page.text("#status") == (
        "*** Anda diblokir dari server ini: flooding Halaman ini tidak akan menyambung ulang."
    )
    with pytest.raises(AssertionError):
        wait_until(lambda: daemon.find("client_refused"), timeout=NO_RETRY_WINDOW)


def _network(page: Page, *, online: bool) -> None:
    """Take the browser off the network or put it back (new connections fail meanwhile)."""
    conditions = {"latency": 0, "downloadThroughput": -1, "uploadThroughput": -1}
    page.driver.execute_cdp_cmd("Network.enable", {})
    page.driver.execute_cdp_cmd(
        "Network.emulateNetworkConditions", {"offline": not online, **conditions}
    )


def test_after_a_restart_the_page_comes_back_and_shows_what_it_missed(
    start_daemon: Callable[..., Daemon], browsers: Callable[..., webdriver.Chrome], clients: list
) -> None:
    daemon = start_daemon("--web-port", str(free_port()))
    url = _web(daemon)
    page = Page(browsers(), url)
    page.join("ana")
    bob = daemon.chat("bob")
    bob.send("before the restart")
    page.wait_entry("bob: before the restart")
    bob.close()
    # Offline, the page cannot come back before the test has said what it is to miss.
    _network(page, online=False)
    assert daemon.stop() == 0
    page.wait(
        lambda d: "reconnecting" in page.find("#status").get_attribute("class"),
        "the reconnecting state",
    )
    daemon.start()
    carol = daemon.chat("carol")
    clients.append(carol)
    carol.send("while ana was away")
    daemon.wait_event("message", nick="carol")
    page.say("typed while away")
    page.wait(lambda d: "1 pesan menunggu dikirim" in page.text("#status"), "the waiting count")
    _network(page, online=True)
    assert carol.expect_start("ana: ") == "ana: typed while away"
    missed = page.wait_entry("carol: while ana was away", timeout=30)
    assert "riwayat" in missed
    page.wait(
        lambda d: "reconnecting" not in page.find("#status").get_attribute("class"),
        "the page back in the room",
    )
    entries = page.entries()
    assert sum("bob: before the restart" in e for e in entries) == 1
    assert sum("carol: while ana was away" in e for e in entries) == 1
    carol.send("live again")
    page.wait_entry("carol: live again")


def _rect(page: Page, selector: str) -> dict[str, float]:
    return dict(
        page.driver.execute_script(
            "const r = document.querySelector(arguments[0]).getBoundingClientRect();"
            "return {top: r.top, bottom: r.bottom, left: r.left, right: r.right,"
            " width: innerWidth, height: innerHeight};",
            selector,
        )
    )


def _inside_viewport(rect: dict[str, float]) -> bool:
    return (
        0 <= rect["top"] < rect["bottom"] <= rect["height"]
        and 0 <= rect["left"] < rect["right"] <= rect["width"]
    )


def test_on_a_phone_the_input_stays_in_view_even_with_the_keyboard_open(
    daemon_with_web: tuple[Daemon, str],
    browsers: Callable[..., webdriver.Chrome],
    clients: list,
    tmp_path: Path,
) -> None:
    daemon, url = daemon_with_web
    driver = browsers(360, 640)
    metrics = {"width": 360, "height": 640, "deviceScaleFactor": 2, "mobile": True}
    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", metrics)
    page = Page(driver, url)
    assert float(page.find("input[name=nick]").value_of_css_property("font-size")[:-2]) >= 16
    page.join("ana")
    bob = daemon.chat("bob")
    clients.append(bob)
    for number in range(40):
        bob.send(f"line {number} of a long conversation")
    page.wait_entry("line 39 of")
    message = page.find("[name=message]")
    assert float(message.value_of_css_property("font-size")[:-2]) >= 16
    message.click()
    driver.save_screenshot(str(tmp_path / "phone.png"))
    assert _rect(page, "body")["width"] == 360  # nothing wider than the phone
    assert _inside_viewport(_rect(page, "[name=message]"))
    assert _inside_viewport(_rect(page, "[role=log] > :last-child"))
    assert not page.find("#who-list").is_displayed()  # folded away on a phone
    page.find("#who-toggle").click()
    assert page.text("#who-list").split("\n") == ["ana", "bob"]
    assert _inside_viewport(_rect(page, "#who"))
    page.find("#who-toggle").click()

    driver.execute_cdp_cmd("Emulation.setDeviceMetricsOverride", {**metrics, "height": 300})
    page.wait(lambda d: _rect(page, "[name=message]")["height"] == 300, "the smaller viewport")
    driver.save_screenshot(str(tmp_path / "keyboard.png"))
    assert _inside_viewport(_rect(page, "[name=message]"))
    assert _inside_viewport(_rect(page, "[role=log] > :last-child"))


def test_a_taken_nickname_is_refused_inline_with_the_servers_reason(
    daemon_with_web: tuple[Daemon, str], browsers: Callable[..., webdriver.Chrome], clients: list
) -> None:
    daemon, url = daemon_with_web
    clients.append(daemon.chat("ana"))
    page = Page(browsers(), url)
    page.submit_nick("ana")
    page.wait(lambda d: page.text("#nick-error"), "the refusal")
    assert page.text("#nick-error") == "*** Nickname ditolak: ana sudah dipakai"
    assert page.find("input[name=nick]").is_displayed()
    assert not page.find("[name=message]").is_displayed()
    page.submit_nick("ana kedua")
    page.wait(lambda d: page.find("[name=message]").is_displayed(), "the second try in the room")
    assert page.text("#nick-error") == ""


def _entry_of(page: Page, text: str) -> dict[str, str]:
    """The class and nickname hue of the entry whose text ends with ``text``."""
    return dict(
        page.driver.execute_script(
            "const e = [...document.querySelector('[role=log]').children]"
            ".find((e) => e.textContent.endsWith(arguments[0]));"
            "const nick = e.querySelector('.nick');"
            "return {kind: e.className, hue: nick ? nick.style.getPropertyValue('--hue') : ''};",
            text,
        )
    )


def test_kinds_of_lines_look_different_in_the_servers_language(
    start_daemon: Callable[..., Daemon], browsers: Callable[..., webdriver.Chrome], clients: list
) -> None:
    daemon = start_daemon("--web-port", "0", "--lang", "en")
    page = Page(browsers(), _web(daemon))
    page.join("ana")
    assert page.driver.execute_script("return document.documentElement.lang") == "en"
    assert page.text("#send button") == "Send"
    bob = daemon.chat("bob")
    clients.append(bob)
    page.wait(lambda d: page.text("#who-list").split("\n") == ["ana", "bob"], "bob online")
    bob.send("/me waves")
    bob.send("/msg ana psst")
    page.say("/msg bob hi")
    page.say("hello")
    assert daemon.ctl("broadcast", "Lab closes soon").returncode == 0
    page.wait_entry("*** Server notice: Lab closes soon")
    bob.close()
    page.wait_entry("bob left!")
    page.wait(lambda d: page.text("#who-list") == "ana", "bob gone from the list")

    bob_hue = str(zlib.crc32(b"bob") % 360)
    assert _entry_of(page, "bob joined!") == {"kind": "line line-join", "hue": bob_hue}
    assert _entry_of(page, "* bob waves") == {"kind": "line line-action", "hue": bob_hue}
    assert _entry_of(page, "*bob* psst") == {"kind": "line line-private", "hue": bob_hue}
    assert _entry_of(page, "*-> bob* hi") == {"kind": "line line-private", "hue": bob_hue}
    assert _entry_of(page, "ana: hello") == {
        "kind": "line line-chat",
        "hue": str(zlib.crc32(b"ana") % 360),
    }
    assert _entry_of(page, "Lab closes soon")["kind"] == "line line-notice"
    assert _entry_of(page, "bob left!") == {"kind": "line line-leave", "hue": bob_hue}


def _titles(driver: webdriver.Chrome) -> list[str]:
    """Every tab's title, read without bringing any tab to the front."""
    targets = driver.execute_cdp_cmd("Target.getTargets", {})["targetInfos"]
    return [target["title"] for target in targets if target["type"] == "page"]


def test_a_hidden_page_counts_unread_messages_in_its_title(
    daemon_with_web: tuple[Daemon, str], browsers: Callable[..., webdriver.Chrome], clients: list
) -> None:
    daemon, url = daemon_with_web
    driver = browsers()
    page = Page(driver, url)
    page.join("ana")
    room = driver.current_window_handle
    driver.switch_to.new_window("tab")
    bob = daemon.chat("bob")
    clients.append(bob)
    bob.send("one")
    bob.send("two")
    wait_until(lambda: "(2) lanchat" in _titles(driver), what="the unread count in the title")
    driver.switch_to.window(room)
    page.wait(lambda d: d.title == "lanchat", "the count cleared once the page is seen")


def test_the_page_shows_its_own_address_as_a_qr_code(
    daemon_with_web: tuple[Daemon, str], browsers: Callable[..., webdriver.Chrome]
) -> None:
    _, url = daemon_with_web
    page = Page(browsers(), url)
    image = page.find("#qr-image")
    assert image.get_attribute("src") in (None, "")  # nothing fetched until asked
    page.find("#qr-toggle").click()
    page.wait(
        lambda d: d.execute_script(
            "return arguments[0].complete && arguments[0].naturalWidth", image
        ),
        "the QR code",
    )
    assert image.get_attribute("src") == url + "qr.svg"
    assert page.text("#qr-caption") == url
    page.find("#qr-toggle").click()
    assert not image.is_displayed()


def test_quit_leaves_the_room_and_offers_the_form_again(
    daemon_with_web: tuple[Daemon, str], browsers: Callable[..., webdriver.Chrome]
) -> None:
    daemon, url = daemon_with_web
    page = Page(browsers(), url)
    page.join("ana")
    page.say("/quit")
    page.wait(lambda d: page.find("input[name=nick]").is_displayed(), "the nickname form")
    assert page.text("#nick-error") == "Anda sudah keluar."
    daemon.wait_event("client_left", nick="ana", reason="quit")
    with pytest.raises(AssertionError):
        wait_until(lambda: len(daemon.find("client_joined")) > 1, timeout=NO_RETRY_WINDOW)
    assert page.find("input[name=nick]").get_attribute("value") == "ana"


def test_recent_history_is_marked_and_comes_before_the_join(
    start_daemon: Callable[..., Daemon], browsers: Callable[..., webdriver.Chrome], clients: list
) -> None:
    daemon = start_daemon("--history-on-join", "5")
    bob = daemon.chat("bob")
    clients.append(bob)
    bob.send("said before ana came")
    daemon.wait_event("message", nick="bob")
    page = Page(browsers(), _web(daemon))
    page.join("ana")
    earlier = page.wait_entry("bob: said before ana came")
    assert "riwayat" in earlier
    entries = page.entries()
    assert entries.index(earlier) < next(i for i, e in enumerate(entries) if "ana Bergabung!" in e)
    assert _entry_of(page, "bob: said before ana came")["kind"] == "line line-chat history"
    bob.send("said after")
    assert "riwayat" not in page.wait_entry("bob: said after")
