"""Admin commands on the daemon itself: its counters, where its web page is, and reloading
its configuration."""

from __future__ import annotations

from typing import Any, Final

from lanchatd.core.adminwire import Code, CommandError
from lanchatd.daemon.admin.api import Caller, Operations

#: How long ``reload`` waits for the main thread to apply the configuration.
RELOAD_TIMEOUT: Final = 10.0


def stats(ops: Operations, args: dict[str, Any], caller: Caller) -> dict[str, Any]:
    return ops.stats(caller.admin_connections)


def url(ops: Operations, args: dict[str, Any], caller: Caller) -> dict[str, Any]:
    page = ops.web_page()
    if page is None:
        raise CommandError(Code.WEB_OFF, "the web page is turned off ([web] enabled = false)")
    return page


def reload(ops: Operations, args: dict[str, Any], caller: Caller) -> dict[str, Any]:
    caller.log.info("reload_requested")
    outcome = ops.reload(RELOAD_TIMEOUT)
    if outcome is None:
        raise CommandError(Code.RELOAD_FAILED, "the daemon did not finish reloading in time")
    if "error" in outcome:
        raise CommandError(Code.RELOAD_FAILED, f"configuration not reloaded: {outcome['error']}")
    return outcome
