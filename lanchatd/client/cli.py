"""``lanchat`` command line: pick the front end, run it, and keep tracebacks from users."""

from __future__ import annotations

import asyncio
import os
import sys
from typing import Final

import click

from lanchatd import __version__
from lanchatd.client import interactive, pipe
from lanchatd.client.connection import DEFAULT_PORT, nick_problem
from lanchatd.client.render import Renderer, color_wanted

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
@click.version_option(__version__, prog_name="lanchat")
def main(host: str, port: int, nick: str | None) -> None:
    """Chat in the lanchat room served at HOST (default 127.0.0.1, or LANCHAT_HOST).

    On a terminal it asks for a nickname (unless --nick is given) and shows a >> prompt;
    messages appear above what you are typing. /help lists the server's commands; /quit,
    Ctrl-D or Ctrl-C leaves. A lost connection is retried, under the same nickname.

    Otherwise (pipes, scripts) every line of standard input is sent, every line received
    goes to standard output, and lanchat exits 0 once input has ended and the server has
    taken all of it:

    \b
        echo "build finished" | lanchat --nick ci 192.168.1.2

    NO_COLOR (set and not empty) turns colours off.
    """
    tty = sys.stdin.isatty() and sys.stdout.isatty()
    if nick is not None and (problem := nick_problem(nick)):
        if not tty:
            raise click.BadParameter(problem, param_hint="'--nick'")
        click.echo(f"lanchat: {problem}", err=True)
        nick = None
    if nick is not None:
        nick = nick.strip()  # as the server trims it: our echoes are matched on this name
    if not tty and nick is None:
        raise click.UsageError("--nick is required when input or output is not a terminal")
    try:
        if tty:
            renderer = Renderer(color=color_wanted())
            status = asyncio.run(interactive.run(host, port, nick, renderer))
        else:
            assert nick is not None
            status = asyncio.run(pipe.run(host, port, nick))
    except KeyboardInterrupt:
        status = 0 if tty else 130
    except Exception as error:  # the promise: no traceback ever reaches the user
        if os.environ.get("LANCHAT_DEBUG"):
            raise
        click.echo(f"lanchat: internal error: {error!r} (LANCHAT_DEBUG=1 shows details)", err=True)
        status = 1
    sys.exit(status)
