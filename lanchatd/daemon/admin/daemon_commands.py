"""Admin commands on the daemon itself: its counters, and reloading its configuration."""

from __future__ import annotations

from typing import Any, Final

from lanchatd.core.adminwire import Code, CommandError
from lanchatd.daemon.admin.api import Caller, Operations

#: How long ``reload`` waits for the main thread to apply the configuration.
RELOAD_TIMEOUT: Final = 10.0


def stats(ops: Operations, args: dict[str, Any], caller: Caller) -> dict[str, Any]:
    return ops.stats(caller.admin_connections)


def reload(ops: Operations, args: dict[str, Any], caller: Caller) -> dict[str, Any]:
    caller.log.info("reload_requested")
    outcome = ops.reload(RELOAD_TIMEOUT)
    if outcome is None:
        raise CommandError(Code.RELOAD_FAILED, "the daemon did not finish reloading in time")
    if "error" in outcome:
        raise CommandError(Code.RELOAD_FAILED, f"configuration not reloaded: {outcome['error']}")
    return outcome
