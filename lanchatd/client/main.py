"""``lanchat`` command line: pick the front end, run it, and keep tracebacks from users."""

from __future__ import annotations

import asyncio
import os
import ssl
import sys
from typing import Final

import click

from lanchatd import __version__
from lanchatd.client import interactive, pipe
from lanchatd.client.link import (
    DEFAULT_PORT,
    Endpoint,
    nick_problem,
    parse_address,
    tls_context,
)
from lanchatd.client.render import Renderer, color_wanted
from lanchatd.client.words import say

#: The daemon's own machine; on a LAN, pass the server's address (or set LANCHAT_HOST).
DEFAULT_HOST: Final = "127.0.0.1"


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("host", required=False, default=DEFAULT_HOST, envvar="LANCHAT_HOST")
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
    help="With --tls: trust only the certificates in this PEM file (a private CA, or the "
    "server's self-signed certificate) instead of the system's.",
)
@click.option(
    "--insecure",
    is_flag=True,
    help="With --tls: do not check the server's certificate at all (encrypted, but anyone "
    "on the way could pose as the server).",
)
@click.version_option(__version__, "-V", "--version", prog_name="lanchat")
def main(
    host: str, port: int, nick: str | None, tls: bool, cafile: str | None, insecure: bool
) -> None:
    """Chat in the lanchat room served at HOST (default 127.0.0.1, or LANCHAT_HOST).

    HOST is a name or an address, and may carry the port: 192.168.1.2:5001, ::1, [::1]:5001.
    Several nodes of one room, separated by commas (HOST1,HOST2), are tried in order: when
    the one in use dies, lanchat moves to another and misses nothing.

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
