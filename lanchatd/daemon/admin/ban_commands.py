"""Admin commands on bans: ban, unban, and the list in force."""

from __future__ import annotations

from typing import Any, Final

from lanchatd.core.adminwire import Code, CommandError
from lanchatd.daemon.admin.api import Caller, Operations, reason
from lanchatd.daemon.bans import normalize_address

#: The longest ban ``duration_s`` allows.
MAX_DURATION_S: Final = 100 * 365 * 86400


def ban(ops: Operations, args: dict[str, Any], caller: Caller) -> dict[str, Any]:
    target, duration = args["target"].strip(), args.get("duration_s")
    if duration is not None and not 0 < duration <= MAX_DURATION_S:
        raise CommandError(Code.BAD_REQUEST, "duration_s must be positive (at most 100 years)")
    address = ops.address_of(target)
    if address is None:
        raise CommandError(Code.NO_SUCH_TARGET, f"no such nickname or IP address: {target}")
    why = reason(args.get("reason"))
    outcome = ops.ban(address, why, duration, caller.uid)
    details, nicks = outcome.ban.to_json(), outcome.disconnected
    caller.log.info(
        "ban_added",
        address=address,
        reason=why,
        expires_at=details["expires_at"],
        disconnected=nicks,
        saved=outcome.save_error is None,
    )
    if outcome.save_error:
        raise CommandError(
            Code.NOT_SAVED,
            f"{address} is banned now, but the ban was not saved and will not survive "
            f"a restart: {outcome.save_error}",
            ban=details,
            disconnected=nicks,
        )
    return {"ban": details, "disconnected": nicks}


def unban(ops: Operations, args: dict[str, Any], caller: Caller) -> dict[str, Any]:
    try:
        address = normalize_address(args["address"])
    except ValueError:
        raise CommandError(
            Code.BAD_REQUEST, f"not an IP address: {args['address']} (unban takes an address)"
        ) from None
    lifted, save_error = ops.unban(address, caller.uid)
    if lifted is None:
        raise CommandError(Code.NOT_BANNED, f"{address} is not banned")
    caller.log.info("ban_removed", address=address, saved=save_error is None)
    if save_error:
        raise CommandError(
            Code.NOT_SAVED,
            f"the ban on {address} is lifted now, but that was not saved: it comes back "
            f"after a restart: {save_error}",
            ban=lifted.to_json(),
        )
    return {"ban": lifted.to_json()}


def bans(ops: Operations, args: dict[str, Any], caller: Caller) -> dict[str, Any]:
    return {"bans": [each.to_json() for each in ops.bans()]}
