"""Headless Chromium driven by selenium, for the web page's tests.

Debian's ``chromium`` and ``chromium-driver`` (.ci/run installs them): the driver is named
explicitly, so selenium downloads nothing, and the browser's own background traffic (updates,
safe browsing, metrics) is turned off, so it talks to the test's daemon on loopback only.
"""

from __future__ import annotations

import contextlib
import shutil
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from selenium import webdriver
from selenium.common.exceptions import WebDriverException
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.remote.webelement import WebElement
from selenium.webdriver.support.ui import WebDriverWait

from tests.support import WAIT

CHROMIUM = Path("/usr/bin/chromium")
CHROMEDRIVER = Path("/usr/bin/chromedriver")
_QUIET = (
    "--headless=new",
    "--no-sandbox",  # root cannot use Chromium's sandbox
    "--disable-dev-shm-usage",
    "--disable-gpu",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-client-side-phishing-detection",
    "--disable-domain-reliability",
    "--disable-sync",
    "--disable-extensions",
    "--metrics-recording-only",
)

needs_chromium = pytest.mark.skipif(
    not (CHROMIUM.exists() and CHROMEDRIVER.exists() and shutil.which(str(CHROMEDRIVER))),
    reason="Debian's chromium and chromium-driver are not installed (.ci/run installs them)",
)


def new_driver(width: int = 1024, height: int = 768) -> webdriver.Chrome:
    """A fresh headless Chromium (its own profile) with a window of ``width`` x ``height``."""
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for argument in _QUIET:
        options.add_argument(argument)
    options.add_argument(f"--window-size={width},{height}")
    driver = webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)
    driver.set_page_load_timeout(WAIT)
    driver.set_script_timeout(WAIT)
    return driver


class Page:
    """The chat page in one browser, through the hooks the page documents: ``input[name=nick]``,
    ``[name=message]`` and the entries of ``[role=log]``."""

    def __init__(self, driver: webdriver.Chrome, url: str) -> None:
        self.driver = driver
        self.url = url
        driver.get(url)

    def wait(
        self, predicate: Callable[[webdriver.Chrome], Any], what: str, timeout: float = WAIT
    ) -> Any:
        return WebDriverWait(self.driver, timeout, poll_frequency=0.05).until(
            predicate, f"timed out after {timeout}s waiting for {what}"
        )

    def find(self, selector: str) -> WebElement:
        return self.driver.find_element(By.CSS_SELECTOR, selector)

    def join(self, nick: str) -> None:
        """Type ``nick`` and press Enter; returns once the page shows the room."""
        self.submit_nick(nick)
        self.wait(lambda d: self.find("[name=message]").is_displayed(), f"{nick} in the room")

    def submit_nick(self, nick: str) -> None:
        field = self.find("input[name=nick]")
        self.wait(lambda d: self.find("#join button").is_enabled(), "the page ready to join")
        field.clear()
        field.send_keys(nick + "\n")

    def say(self, text: str) -> None:
        field = self.find("[name=message]")
        field.send_keys(text + "\n")

    def entries(self) -> list[str]:
        """The text of every entry of the conversation, oldest first."""
        return list(
            self.driver.execute_script(
                "return [...document.querySelector('[role=log]').children]"
                ".map((e) => e.textContent)"
            )
        )

    def wait_entry(self, *parts: str, timeout: float = WAIT) -> str:
        """The first entry containing every one of ``parts``, once there is one."""

        def found(_: webdriver.Chrome) -> str | None:
            return next((e for e in self.entries() if all(p in e for p in parts)), None)

        return str(self.wait(found, f"an entry with {parts!r}", timeout))

    def text(self, selector: str) -> str:
        return str(self.find(selector).text)


@contextlib.contextmanager
def drivers() -> Iterator[Callable[..., webdriver.Chrome]]:
    """Start browsers on demand; every one is quit at the end, whatever happens."""
    started: list[webdriver.Chrome] = []

    def start(width: int = 1024, height: int = 768) -> webdriver.Chrome:
        driver = new_driver(width, height)
        started.append(driver)
        return driver

    try:
        yield start
    finally:
        for driver in started:
            with contextlib.suppress(WebDriverException):
                driver.quit()
