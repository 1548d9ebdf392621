"""``lanchatctl``: manage a running lanchatd through its admin socket."""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import re
import sys
from collections.abc import Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, Final

import click
from click.shell_completion import CompletionItem

from lanchatctl.transport import (
    DENIED,
    REFUSED,
    UNREACHABLE,
    USAGE,
    AdminClient,
    AdminError,
)
from lanchatd import __version__
from lanchatd.core import columns
from lanchatd.core.paths import ADMIN_SOCKET_ENV
from lanchatd.core.text import sanitize

_CONTEXT: Final = {"help_option_names": ["-h", "--help"], "max_content_width": 100}

_EPILOG: Final = f"""\b
Exit status: 0 success, {REFUSED} the daemon refused the command (e.g. no such nick),
{USAGE} usage error, {UNREACHABLE} cannot reach the daemon, {DENIED} permission denied.

\b
Shell completion (bash; zsh and fish likewise with zsh_source, fish_source):
  eval "$(_LANCHATCTL_COMPLETE=bash_source lanchatctl)"
"""


@contextlib.contextmanager
def _daemon(ctx: click.Context) -> Iterator[AdminClient]:
    """A connection to the daemon; an AdminError is one line on stderr and its exit status."""
    try:
        with AdminClient.at(ctx.find_root().params.get("socket_path")) as client:
            yield client
    except AdminError as error:
        _echo(f"lanchatctl: error: {error.message}", err=True)
        raise click.exceptions.Exit(error.status) from None


# Formatting ---------------------------------------------------------------------------------


def _echo(text: str, *, err: bool = False) -> None:
    """Print one line for a person, through the one sanitiser (lanchatd.core.text).

    Nicknames, reasons, chat text and error messages come from the daemon, and whatever
    listens at the socket answers: none of it may drive the admin's terminal. JSON output
    needs no such care: ``json.dumps`` escapes every control and non-ASCII character.
    """
    click.echo(sanitize(text), err=err)


def _local_time(iso: str | None, fmt: str = "%Y-%m-%d %H:%M:%S") -> str:
    if not iso:
        return "-"
    try:
        moment = dt.datetime.fromisoformat(iso.replace("Z", "+00:00"))
    except ValueError:
        return iso
    return moment.astimezone().strftime(fmt)


def _duration(seconds: float) -> str:
    """A short human duration: 5s, 3m05s, 2h03m, 4d02h."""
    seconds = int(seconds)
    if seconds < 60:
        return f"{seconds}s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m{seconds:02d}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours}h{minutes:02d}m"
    days, hours = divmod(hours, 24)
    return f"{days}d{hours:02d}h"


def _size(count: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if count < 1024 or unit == "GiB":
            return f"{count} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024  # type: ignore[assignment]
    raise AssertionError


def _table(header: Sequence[str], rows: Iterable[Sequence[str]], right: set[int]) -> None:
    """Print aligned columns (cells sanitised first)."""
    for line in columns.table(header, rows, frozenset(right)):
        click.echo(line)


def _echo_json(value: Any, *, lines: bool = False) -> None:
    """JSON for scripts; a list prints one object per line, as ``[...]`` or bare (``--nl``)."""
    if not isinstance(value, list):
        click.echo(json.dumps(value, indent=2))
    elif lines:
        for item in value:
            click.echo(json.dumps(item))
    elif not value:
        click.echo("[]")
    else:
        body = ",\n ".join(json.dumps(item) for item in value)
        click.echo(f"[{body}]")


# Parameters ---------------------------------------------------------------------------------


if TYPE_CHECKING:
    # Generic from click 8.4 on; Debian 12's click 8.1 cannot subscript it at run time.
    _FloatType = click.ParamType[float]
else:
    _FloatType = click.ParamType


class Duration(_FloatType):
    """``90``, ``45s``, ``30m``, ``1h``, ``2d``, ``1w`` or combinations like ``1h30m``."""

    name = "duration"
    _PART: Final = re.compile(r"(\d+(?:\.\d+)?)([smhdw])")
    _UNITS: Final = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> float:
        if isinstance(value, int | float):
            return float(value)
        text = str(value).strip().lower().replace(" ", "")
        try:
            seconds = float(text)
        except ValueError:
            parts = self._PART.findall(text)
            if not parts or "".join(number + unit for number, unit in parts) != text:
                self.fail(f"{value!r} is not a duration like 30m, 1h, 2d or 1h30m", param, ctx)
            seconds = sum(float(number) * self._UNITS[unit] for number, unit in parts)
        if seconds <= 0:
            self.fail("the duration must be longer than zero", param, ctx)
        return seconds


class Since(_FloatType):
    """A moment as seconds since the epoch: a time ago (``30m``, ``2d``), or a local date and
    time (``2026-12-05``, ``2026-12-05 14:30``), or a time today (``14:30``)."""

    name = "time"

    def convert(
        self, value: Any, param: click.Parameter | None, ctx: click.Context | None
    ) -> float:
        if isinstance(value, int | float):
            return float(value)
        text = str(value).strip()
        with contextlib.suppress(ValueError):
            clock = dt.time.fromisoformat(text)
            return dt.datetime.combine(dt.date.today(), clock).timestamp()
        with contextlib.suppress(ValueError):
            return dt.datetime.fromisoformat(text).timestamp()
        try:
            ago = Duration().convert(text, param, ctx)
        except click.BadParameter:
            self.fail(
                f"{value!r} is not a time like 30m, 2d, 14:30 or 2026-12-05 14:30", param, ctx
            )
        return dt.datetime.now().timestamp() - ago


def _complete_nicks(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[Any]:
    """Nicknames online, asked from the daemon (quietly nothing if it cannot be reached)."""
    try:
        with AdminClient.at(ctx.find_root().params.get("socket_path"), timeout=1.0) as client:
            clients = client.request("who")["clients"]
    except Exception:
        return []
    prefix = incomplete.casefold()
    nicks = [sanitize(c["nick"]) for c in clients]  # the shell lists them on the terminal
    return [CompletionItem(nick) for nick in nicks if nick.casefold().startswith(prefix)]


def _complete_bans(ctx: click.Context, param: click.Parameter, incomplete: str) -> list[Any]:
    try:
        with AdminClient.at(ctx.find_root().params.get("socket_path"), timeout=1.0) as client:
            bans = client.request("bans")["bans"]
    except Exception:
        return []
    addresses = [sanitize(b["address"]) for b in bans]
    return [CompletionItem(address) for address in addresses if address.startswith(incomplete)]


_json_answer = click.option(
    "--json", "as_json", is_flag=True, help="Print the daemon's answer as JSON, for scripts."
)


# Commands -----------------------------------------------------------------------------------


@click.group(context_settings=_CONTEXT, epilog=_EPILOG)
@click.option(
    "--socket",
    "socket_path",
    envvar=ADMIN_SOCKET_ENV,
    metavar="PATH",
    # No readability check: connecting tells permission problems apart (exit 4, not 2).
    type=click.Path(dir_okay=False, readable=False),
    help=(
        f"The daemon's admin socket (or set {ADMIN_SOCKET_ENV}). Default: the system "
        "daemon's (/run/lanchatd-admin.sock, /run/lanchatd/admin.sock), else your own "
        "daemon's."
    ),
)
@click.version_option(__version__, "-V", "--version", prog_name="lanchatctl")
def cli(socket_path: str | None) -> None:
    """Manage a running lanchatd: who is online, kick, ban, notices, stats, live events.

    Root, the daemon's own user and members of its admin group (default: lanchat) may use it.
    """


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="JSON for scripts: a list of clients.")
@click.option("--nl", is_flag=True, help="With --json: one JSON object per line, no list.")
@click.pass_context
def who(ctx: click.Context, as_json: bool, nl: bool) -> None:
    """List the connected clients, in join order.

    The table shows nick, address, port, mode (line or classic), when each connected, how long
    each has been idle, and how many messages each sent. --json prints, per client: nick,
    host, port, mode, connected_at (ISO 8601 UTC), idle_s and messages.
    """
    with _daemon(ctx) as daemon:
        clients = daemon.request("who")["clients"]
    if as_json or nl:
        _echo_json(clients, lines=nl)
        return
    if not clients:
        click.echo("No clients connected.")
        return
    rows: list[tuple[str, ...]] = [
        (
            c["nick"],
            c["host"],
            str(c["port"]),
            c["mode"],
            _local_time(c["connected_at"]),
            _duration(c["idle_s"]),
            str(c["messages"]),
        )
        if c["host"] is not None
        else (c["nick"], *"------")  # served by another node: only it knows the details
        for c in clients
    ]
    header: tuple[str, ...] = (
        "NICK",
        "ADDRESS",
        "PORT",
        "MODE",
        "CONNECTED SINCE",
        "IDLE",
        "MESSAGES",
    )
    if any("node" in c for c in clients):
        rows = [(*row, c.get("node", "-")) for row, c in zip(rows, clients, strict=True)]
        header = (*header, "NODE")
    _table(header, rows, right={2, 5, 6})


@cli.command()
@click.argument("nick", shell_complete=_complete_nicks)
@click.option("--reason", metavar="TEXT", help="Told to the user and to everyone else.")
@_json_answer
@click.pass_context
def kick(ctx: click.Context, nick: str, reason: str | None, as_json: bool) -> None:
    """Disconnect NICK, telling them (and everyone else) why.

    Quote a nickname with spaces: lanchatctl kick "user1 pc".
    """
    if not nick.strip():
        raise click.BadParameter("the nickname is empty", ctx, param_hint="NICK")
    with _daemon(ctx) as daemon:
        result = daemon.request("kick", nick=nick, reason=reason)
    if as_json:
        _echo_json(result)
        return
    if result.get("node") is not None and result["host"] is None:
        _echo(f"Kicked {result['nick']} (on node {result['node']}): {result['reason']}")
        return
    _echo(f"Kicked {result['nick']} ({result['host']}:{result['port']}): {result['reason']}")


@cli.command()
@click.argument("text", nargs=-1, required=True)
@_json_answer
@click.pass_context
def broadcast(ctx: click.Context, text: tuple[str, ...], as_json: bool) -> None:
    """Send TEXT to every client as a notice from the server."""
    message = " ".join(text).strip()
    if not message:
        raise click.BadParameter("the notice text is empty", ctx, param_hint="TEXT")
    with _daemon(ctx) as daemon:
        result = daemon.request("broadcast", text=message)
    if as_json:
        _echo_json(result)
        return
    count = result["recipients"]
    _echo(f"Notice sent to {count} client{'' if count == 1 else 's'}.")


@cli.command(short_help="Uptime, clients, traffic, drops, kicks, history, version.")
@click.option("--json", "as_json", is_flag=True, help="JSON for scripts.")
@click.pass_context
def stats(ctx: click.Context, as_json: bool) -> None:
    """Uptime, clients (now and peak), traffic, slow-consumer drops, kicks, version.

    "log events lost" counts events the daemon could not write to its log (a broken pipe, a
    full disk); chat goes on regardless. "history" counts events saved to history.db, failed
    writes, events held in memory only, and events lost while writes failed.
    """
    with _daemon(ctx) as daemon:
        result = daemon.request("stats")
    if as_json:
        _echo_json(result)
        return
    rows = [
        ("version", result["version"]),
        ("uptime", f"{_duration(result['uptime_s'])} (since {_local_time(result['started_at'])})"),
        ("clients", f"{result['clients']} now, {result['peak_clients']} at most"),
        ("on the web page", str(result.get("web_clients", "?"))),
        ("messages in", str(result["messages_in"])),
        ("messages out", str(result["messages_out"])),
        ("bytes in", _size(result["bytes_in"])),
        ("bytes out", _size(result["bytes_out"])),
        ("slow consumers dropped", str(result["slow_consumer_drops"])),
        ("kicks", str(result["kicks"])),
        ("bans", str(result["bans"])),
        ("log events lost", str(result.get("log_events_lost", "?"))),
        ("history", _history_counters(result)),
    ]
    if result.get("cluster"):
        rows.append(("cluster", _cluster_summary(result["cluster"])))
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        _echo(f"{name.ljust(width)}  {value}")


def _cluster_summary(cluster: dict[str, Any]) -> str:
    """``node n1 ok; n1 3 clients, n2 2 clients; 5 in all`` (docs/cluster.md)."""
    nodes = ", ".join(f"{n['node']} {n['clients']} clients" for n in cluster["nodes"])
    return (
        f"node {cluster['node']} {cluster['state']}; {nodes or 'no node seen yet'}; "
        f"{cluster['total_clients']} in all"
    )


def _history_counters(result: dict[str, Any]) -> str:
    if result.get("history_committed") is None:
        return "off"
    return (
        f"{result['history_committed']} saved, {result['history_failed_writes']} failed writes, "
        f"{result['history_unsaved']} unsaved, {result['history_lost']} lost"
    )


@cli.command(short_help="Ban an IP address, or the address of NICK.")
@click.argument("target", metavar="NICK|ADDRESS", shell_complete=_complete_nicks)
@click.option(
    "--duration",
    type=Duration(),
    metavar="DURATION",
    help="How long: 30m, 1h, 2d, 1w, 1h30m... [default: until unbanned]",
)
@click.option("--reason", metavar="TEXT", help="Told to the banned clients and kept with the ban.")
@_json_answer
@click.pass_context
def ban(
    ctx: click.Context, target: str, duration: float | None, reason: str | None, as_json: bool
) -> None:
    """Ban an IP address (or the address of NICK): its clients are disconnected and new
    connections from it are refused. Bans are saved and survive restarts."""
    if not target.strip():
        raise click.BadParameter("empty", ctx, param_hint="NICK|ADDRESS")
    with _daemon(ctx) as daemon:
        result = daemon.request("ban", target=target, duration_s=duration, reason=reason)
    if as_json:
        _echo_json(result)
        return
    details = result["ban"]
    if details["expires_at"]:
        line = f"Banned {details['address']} until {_local_time(details['expires_at'])}"
    else:
        line = f"Banned {details['address']} until unbanned"
    if result["disconnected"]:
        line += f"; disconnected {', '.join(map(str, result['disconnected']))}"
    _echo(line + ".")


@cli.command()
@click.argument("address", shell_complete=_complete_bans)
@_json_answer
@click.pass_context
def unban(ctx: click.Context, address: str, as_json: bool) -> None:
    """Lift the ban on ADDRESS."""
    with _daemon(ctx) as daemon:
        result = daemon.request("unban", address=address)
    if as_json:
        _echo_json(result)
        return
    _echo(f"Unbanned {result['ban']['address']}.")


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="JSON for scripts: a list of bans.")
@click.pass_context
def bans(ctx: click.Context, as_json: bool) -> None:
    """List the bans in force."""
    with _daemon(ctx) as daemon:
        result = daemon.request("bans")["bans"]
    if as_json:
        _echo_json(result)
        return
    if not result:
        click.echo("No bans.")
        return
    rows = [
        (
            b["address"],
            _local_time(b["expires_at"]) if b["expires_at"] else "never",
            _local_time(b["created_at"]),
            "-" if b.get("by_uid") is None else str(b["by_uid"]),
            b["reason"] or "-",
        )
        for b in result
    ]
    _table(("ADDRESS", "EXPIRES", "SINCE", "BY UID", "REASON"), rows, right=set())


@cli.command(short_help="The room's recent events, as kept in history.")
@click.option(
    "-n", "count", type=click.IntRange(1, 500), default=20, show_default=True, help="How many."
)
@click.option("--since", type=Since(), metavar="TIME", help="Only from TIME: 30m, 2d, 14:30...")
@click.option("--nick", metavar="NICK", help="Only NICK's (joins, leaves and what they said).")
@click.option("--json", "as_json", is_flag=True, help="JSON for scripts: a list of entries.")
@click.pass_context
def history(
    ctx: click.Context, count: int, since: float | None, nick: str | None, as_json: bool
) -> None:
    """The room's last events, oldest first: messages, actions, joins, leaves, kicks, bans and
    notices (never private messages), with the time each happened and its id.

    --json prints, per entry: id, time (ISO 8601 UTC), kind, nick, text and reason.
    """
    with _daemon(ctx) as daemon:
        entries = daemon.request("history", count=count, since=since, nick=nick)["entries"]
    if as_json:
        _echo_json(entries)
        return
    if not entries:
        click.echo("No history.")
        return
    rows = [
        (
            _local_time(e["time"]),
            e["kind"],
            e["nick"] or "-",
            e["text"] or e["reason"] or "",
            e["id"],
        )
        for e in entries
    ]
    _table(("TIME", "KIND", "NICK", "TEXT", "ID"), rows, right=set())


@cli.command(short_help="Delete what NICK said from history.")
@click.argument("nick", shell_complete=_complete_nicks)
@click.option("--since", type=Since(), metavar="TIME", help="Only from TIME: 30m, 2d, 14:30...")
@_json_answer
@click.pass_context
def purge(ctx: click.Context, nick: str, since: float | None, as_json: bool) -> None:
    """Delete NICK's messages and actions from history (all, or those since TIME).

    Their joins and leaves stay, and so does the daemon's own event log. The purge is logged
    with your uid.
    """
    if not nick.strip():
        raise click.BadParameter("the nickname is empty", ctx, param_hint="NICK")
    with _daemon(ctx) as daemon:
        result = daemon.request("purge", nick=nick, since=since)
    if as_json:
        _echo_json(result)
        return
    removed = result["removed"]
    _echo(
        f"Purged {removed} entr{'y' if removed == 1 else 'ies'} by {result['nick']} from history."
    )


@cli.command(short_help="The web page's address on each LAN address, or as QR codes.")
@click.option("--qr", is_flag=True, help="Draw each address as a QR code for phones to scan.")
@click.option("--json", "as_json", is_flag=True, help="JSON for scripts.")
@click.pass_context
def url(ctx: click.Context, qr: bool, as_json: bool) -> None:
    """Print the web page's URL for each address of this machine that others can reach.

    The daemon answers with the addresses its web port listens on (loopback and link-local
    left out) and whether it speaks HTTPS. --qr draws each URL as a QR code in the
    terminal, to scan with a phone's camera (or to show on a projector).
    """
    with _daemon(ctx) as daemon:
        result = daemon.request("url")
    if as_json:
        _echo_json(result)
        return
    if not result["urls"]:
        listening = ", ".join(result["listening"])
        _echo(
            f"lanchatctl: error: the web page listens only on {listening}, which other machines "
            "cannot reach; set [web] host",
            err=True,
        )
        raise click.exceptions.Exit(REFUSED)
    for address in result["urls"]:
        _echo(address)
        if qr:
            _draw_qr(address)


def _draw_qr(text: str) -> None:
    """``text`` as a QR code on the terminal, two modules a character (Unicode half blocks)."""
    import segno  # noqa: PLC0415 -- only --qr needs segno; every other command runs without it

    segno.make(text).terminal(out=sys.stdout, compact=True)


def _describe(event: dict[str, Any]) -> str:
    kind = event.get("type", "?")
    when = _local_time(event.get("time"), "%H:%M:%S")
    nick = event.get("nick", "")
    match kind:
        case "join":
            text = f"{nick} from {event.get('host')}:{event.get('port')} ({event.get('mode')})"
        case "leave":
            text = f"{nick} ({event.get('reason')})"
        case "message":
            text = f"{nick}: {event['text']}" if "text" in event else f"{nick} (text not logged)"
        case "action":
            text = f"* {nick} {event.get('text', '')}"
        case "kick":
            text = f"{nick} by uid {event.get('admin_uid')}: {event.get('reason', '')}"
        case "notice":
            text = f"by uid {event.get('admin_uid')}: {event.get('text', '')}"
        case "ban":
            until = _local_time(event["expires_at"]) if event.get("expires_at") else "unbanned"
            text = f"{event.get('address')} by uid {event.get('by_uid')} until {until}"
            if event.get("reason"):
                text += f": {event['reason']}"
            if event.get("disconnected"):
                text += f" (disconnected {', '.join(map(str, event['disconnected']))})"
        case "unban":
            text = f"{event.get('address')} by uid {event.get('admin_uid')}"
        case _:
            rest = {k: v for k, v in event.items() if k not in ("type", "time")}
            text = json.dumps(rest)
    return f"{when} {kind:<7} {text}"


@cli.command(short_help="Show live events until Ctrl-C.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per event, per line.")
@click.pass_context
def watch(ctx: click.Context, as_json: bool) -> None:
    """Show live events (joins, leaves, messages, kicks, notices, bans) until Ctrl-C."""
    try:
        with _daemon(ctx) as daemon:
            click.echo(f"watching lanchatd at {daemon.path}; Ctrl-C to stop", err=True)
            for event in daemon.events():
                if as_json:
                    click.echo(json.dumps(event))
                else:
                    _echo(_describe(event))
    except KeyboardInterrupt:
        pass


@cli.command()
@_json_answer
@click.pass_context
def reload(ctx: click.Context, as_json: bool) -> None:
    """Re-read the daemon's configuration, as SIGHUP does."""
    with _daemon(ctx) as daemon:
        result = daemon.request("reload")
    if as_json:
        _echo_json(result)
        return
    changed = result.get("changed") or {}
    if changed:
        click.echo("Configuration reloaded:")
        for name, (old, new) in changed.items():
            _echo(f"  {name}: {old!r} -> {new!r}")
    else:
        click.echo("Configuration reloaded; nothing changed.")
    for name in result.get("needs_restart") or []:
        _echo(f"  {name}: changed, but takes effect only after a restart", err=True)


def main() -> None:
    """The ``lanchatctl`` console script."""
    try:
        cli.main(prog_name="lanchatctl")
    except Exception as error:  # a bug: still one line, no traceback
        _echo(f"lanchatctl: internal error: {error!r}", err=True)
        sys.exit(1)
