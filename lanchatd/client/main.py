"""``lanchat`` command line: pick the front end, run it, and keep tracebacks from users."""

from __future__ import annotations

import asyncio
import json
import os
import ssl
import sys

import click

from lanchatd import __version__
from lanchatd.client import discover, interactive, pipe
from lanchatd.client.link import (
    DEFAULT_PORT,
    Endpoint,
    describe_address,
    nick_problem,
    parse_address,
    tls_context,
)
from lanchatd.client.render import Renderer, color_wanted
from lanchatd.client.words import say
from lanchatd.core import columns
from lanchatd.core.announce import Found


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("host", required=False, envvar="LANCHAT_HOST")
@click.option(
    "-p",
    "--port",
    type=click.IntRange(1, 65535),
    default=DEFAULT_PORT,
    show_default=True,
    envvar="LANCHAT_PORT",
    help="Chat port of the server (or LANCHAT_PORT).",
)
@click.option(
    "-n",
    "--nick",
    metavar="NAME",
    envvar="LANCHAT_NICK",
    help="Nickname (or LANCHAT_NICK); asked for on a terminal when omitted.",
)
@click.option(
    "--tls",
    is_flag=True,
    envvar="LANCHAT_TLS",
    help="Connect with TLS, checking the server's certificate against the system's "
    "certificate authorities and HOST (or LANCHAT_TLS=1).",
)
@click.option(
    "--cafile",
    metavar="FILE",
    type=click.Path(exists=True, dir_okay=False),
    help="With --tls: trust only the certificates in this PEM file (the server's own "
    "self-signed certificate, or a private CA) instead of the system's.",
)
@click.option(
    "--insecure",
    is_flag=True,
    help="With --tls: do not check the server's certificate at all (encrypted, but anyone "
    "on the way could pose as the server).",
)
@click.option(
    "--list",
    "list_servers",
    is_flag=True,
    help="List the lanchat servers on the local network (name, addresses, port, TLS, web "
    "page) and exit.",
)
@click.option("--json", "as_json", is_flag=True, help="With --list: print a JSON array.")
@click.version_option(__version__, "-V", "--version", prog_name="lanchat")
def main(
    host: str | None,
    port: int,
    nick: str | None,
    tls: bool,
    cafile: str | None,
    insecure: bool,
    list_servers: bool,
    as_json: bool,
) -> None:
    """Chat in the lanchat room served at HOST (or LANCHAT_HOST).

    HOST is a name or an address, and may carry the port: 192.168.1.2:5001, ::1, [::1]:5001.
    Several nodes of one room, separated by commas (HOST1,HOST2), are tried in order: when
    the one in use dies, lanchat moves to another and misses nothing.
    Without HOST, lanchat looks for servers on the local network for about 1.5 s (mDNS):
    it connects to the one it finds, or on a terminal lets you choose among several.

    On a terminal it asks for a nickname (unless --nick is given) and shows a >> prompt;
    messages appear above what you are typing. /help lists the server's commands; /quit,
    Ctrl-D or Ctrl-C leaves. A lost connection is retried, under the same nickname.

    Otherwise (pipes, scripts) every line of standard input is sent, every line received
    goes to standard output, and lanchat exits 0 once input has ended and the server has
    taken all of it:

    \b
        echo "build finished" | lanchat --nick ci 192.168.1.2

    With --tls the connection is encrypted and the server's certificate must be valid
    for HOST (a name or an IP address). For a server with its own certificate authority
    or a self-signed certificate, pass that certificate with --cafile:

    \b
        lanchat --tls --cafile lanchat.crt chat.example.lan

    NO_COLOR (set and not empty) turns colours off.
    """
    if as_json and not list_servers:
        raise click.UsageError(say("needs_list"))
    if list_servers:
        sys.exit(_list(as_json))
    tty = sys.stdin.isatty() and sys.stdout.isatty()
    if nick is not None and (problem := nick_problem(nick)):
        if not tty:
            raise click.BadParameter(problem, param_hint="'--nick'")
        click.echo(say("note", text=problem), err=True)
        nick = None
    if nick is not None:
        nick = nick.strip()  # as the server trims it: our echoes are matched on this name
    if not tty and nick is None:
        raise click.UsageError(say("nick_required"))
    if host is None:
        server = _discovered(tty)
        host, port, tls = server.address or "", server.port, tls or server.tls
    context = _tls_settings(tls, cafile, insecure)
    first, *others = [Endpoint(*_host_and_port(part, port), context) for part in host.split(",")]
    endpoint = Endpoint(first.host, first.port, context, tuple(others))
    try:
        if tty:
            renderer = Renderer(color=color_wanted())
            status = asyncio.run(interactive.run(endpoint, nick, renderer))
        else:
            assert nick is not None
            status = asyncio.run(pipe.run(endpoint, nick))
    except KeyboardInterrupt:
        status = 0 if tty else 130
    except Exception as error:  # the promise: no traceback ever reaches the user
        if os.environ.get("LANCHAT_DEBUG"):
            raise
        failed = say("internal_error", error=repr(error))
        click.echo(say("error", text=f"{failed} {say('debug_hint')}"), err=True)
        status = 1
    sys.exit(status)


def _browse() -> list[Found]:
    """The servers on the LAN; a network that cannot browse is a one-line error (exit 1)."""
    try:
        return discover.browse()
    except discover.Unavailable as error:
        click.echo(say("error", text=str(error)), err=True)
        sys.exit(1)


def _list(as_json: bool) -> int:
    """``--list``: what answered, as a table or JSON; finding nothing is no failure."""
    servers = _browse()
    if as_json:
        click.echo(json.dumps([server.as_json() for server in servers], ensure_ascii=False))
    elif not servers:
        click.echo(say("list_none"))
    else:
        for line in columns.table(say("list_head").split("\t"), map(_row, servers)):
            click.echo(line)
    return 0


def _row(server: Found) -> list[str]:
    return [
        server.name,
        " ".join(server.addresses),
        str(server.port),
        say("yes" if server.tls else "no"),
        server.web_url or "-",
    ]


def _discovered(tty: bool) -> Found:
    """The server to connect to when no HOST was given: the one found, or the one chosen."""
    servers = [server for server in _browse() if server.address and server.port]
    if not servers:
        click.echo(say("error", text=say("found_none")), err=True)
        sys.exit(1)
    if len(servers) > 1:
        numbered = [f"{n:>3}) {_where(s)}  {s.name}" for n, s in enumerate(servers, 1)]
        if not tty:
            click.echo(say("error", text=say("give_one")), err=True)
            click.echo("\n".join(numbered), err=True)
            sys.exit(2)
        click.echo(say("found_several", count=len(servers)))
        click.echo("\n".join(numbered))
        choice = click.prompt(
            say("choose", count=len(servers)), type=click.IntRange(1, len(servers))
        )
        return servers[choice - 1]
    found_one = say("found_one", name=servers[0].name, where=_where(servers[0]))
    click.echo(say("note", text=found_one), err=True)
    return servers[0]


def _where(server: Found) -> str:
    return describe_address(server.address or "?", server.port)


def _host_and_port(address: str, port: int) -> tuple[str, int]:
    """HOST may carry the port (``HOST:PORT``, ``[::1]:5001``); then --port must agree."""
    try:
        host, given = parse_address(address)
    except ValueError as error:
        raise click.BadParameter(str(error), param_hint="'HOST'") from None
    if given is None:
        return host, port
    source = click.get_current_context().get_parameter_source("port")
    if source is not click.core.ParameterSource.DEFAULT and port != given:
        raise click.UsageError(say("two_ports", given=given, port=port))
    return host, given


def _tls_settings(tls: bool, cafile: str | None, insecure: bool) -> ssl.SSLContext | None:
    """The TLS context the options ask for (None: plain TCP); usage errors exit 2."""
    if not tls:
        for given, name in ((cafile is not None, "--cafile"), (insecure, "--insecure")):
            if given:
                raise click.UsageError(say("needs_tls", option=name))
        return None
    if cafile is not None and insecure:
        raise click.UsageError(say("cafile_or_insecure"))
    try:
        context = tls_context(cafile, verify=not insecure)
    except ValueError as error:
        raise click.BadParameter(str(error), param_hint="'--cafile'") from None
    if insecure:
        click.echo(say("warning", text=say("insecure")), err=True)
    return context
