"""``lanchatd`` command line: parse flags, load the configuration, run the server."""

from __future__ import annotations

import faulthandler
import socket
import sys
from pathlib import Path
from typing import NoReturn

import click

from lanchatd import __version__
from lanchatd.core import paths
from lanchatd.core.catalog import LANGUAGES
from lanchatd.daemon import config, logs, systemd
from lanchatd.daemon.admin import AdminListener, AdminSocketError, open_admin_socket
from lanchatd.daemon.server import ListenError, Server, open_listener
from lanchatd.daemon.statelock import StateInUse, lock_state_dir
from lanchatd.daemon.tls import TlsError, server_context


def _fail(message: str, status: int) -> NoReturn:
    logs.flush()
    click.echo(f"lanchatd: error: {message}", err=True)
    sys.exit(status)


def _warn_if_not_configured(settings: config.Settings, listeners: list[socket.socket]) -> None:
    """Passed sockets win over host/port (systemd owns them); say so if they disagree."""
    ports = sorted({listener.getsockname()[1] for listener in listeners})
    if settings.port not in ports:
        logs.get_logger().warning(
            "configured_port_ignored",
            configured=settings.port,
            listening=ports,
            hint="the port comes from lanchatd.socket: systemctl edit lanchatd.socket",
        )


def _web_listeners(
    settings: config.Settings, inherited: dict[str, list[socket.socket]]
) -> tuple[socket.socket, ...]:
    """The web port: passed by systemd (lanchatd-web.socket), else opened here if enabled.

    Under socket activation the units own every port, so none is opened here; one passed
    while ``[web] enabled`` is false is closed.
    """
    passed = inherited.get("web", [])
    if not settings.web:
        for listener in passed:
            listener.close()
        return ()
    if inherited:
        return tuple(passed)
    return (open_listener(settings.web_host, settings.web_port),)


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--config",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help=f"TOML configuration file. [{paths.SYSTEM_CONFIG} if it exists]",
)
@click.option(
    "-t",
    "--check-config",
    is_flag=True,
    help="Check the configuration (file and flags) as a start would, print one line saying "
    "OK or what is wrong, and exit 0 or 2; opens no socket and touches no state.",
)
@click.option(
    "--host",
    help="Address to listen on; '::' is IPv6 and IPv4, '0.0.0.0' IPv4 only. [::]",
)
@click.option("--port", type=click.IntRange(0, 65535), help="Chat port; 0 picks a free one. [5001]")
@click.option("--admin-socket", help="Path of the Unix admin socket.")
@click.option(
    "--log-format",
    type=click.Choice(config.LOG_FORMATS),
    help="Log rendering; auto is console on a terminal, JSON otherwise. [auto]",
)
@click.option("--lang", type=click.Choice(LANGUAGES), help="Language of server messages. [id]")
@click.option("--tls-cert", help="PEM certificate (chain): the chat port then speaks TLS.")
@click.option("--tls-key", help="PEM private key for --tls-cert.")
@click.option("--web-host", help="Address the web port listens on. [::]")
@click.option(
    "--web-port",
    type=click.IntRange(0, 65535),
    help="Web page and WebSocket port; 0 picks a free one. [8080]",
)
@click.option("--no-web", is_flag=True, default=None, help="Serve no web page ([web] enabled).")
@click.option(
    "--history-on-join",
    type=click.IntRange(0, 500),
    help="Events a line-mode client is shown when it joins; 0 none. [20]",
)
@click.option(
    "--discovery/--no-discovery",
    default=None,
    help="Announce the room on the LAN (mDNS/DNS-SD, UDP port 5353). [on]",
)
@click.version_option(__version__, "-V", "--version", prog_name="lanchatd")
def main(
    config_path: Path | None,
    check_config: bool,
    host: str | None,
    port: int | None,
    admin_socket: str | None,
    log_format: str | None,
    lang: str | None,
    tls_cert: str | None,
    tls_key: str | None,
    history_on_join: int | None,
    discovery: bool | None,
    web_host: str | None,
    web_port: int | None,
    no_web: bool | None,
) -> None:
    """Run the lanchat daemon in the foreground.

    Settings come from built-in defaults, then the configuration file, then these flags.
    SIGHUP re-reads the configuration; SIGTERM or SIGINT stops the daemon cleanly.
    """
    logs.standard_streams()
    overrides = {
        "host": host,
        "port": port,
        "admin_socket": admin_socket,
        "log_format": log_format,
        "lang": lang,
        "tls_cert": tls_cert,
        "tls_key": tls_key,
        "history_on_join": history_on_join,
        "discovery": discovery,
        "web_host": web_host,
        "web_port": web_port,
        "web": False if no_web else None,
    }
    if config_path is None and paths.SYSTEM_CONFIG.exists():
        config_path = paths.SYSTEM_CONFIG
    try:
        settings = config.load(config_path, overrides)
        tls = (
            server_context(settings.tls_cert, settings.tls_key)
            if settings.tls_cert and settings.tls_key is not None  # config.load: both or neither
            else None
        )
    except (config.ConfigError, TlsError) as error:
        _fail(str(error), 2)
    if check_config:
        click.echo(f"lanchatd: configuration OK ({config_path or 'no file: defaults and flags'})")
        sys.exit(0)
    logs.configure(settings.log_format, settings.log_level)
    try:
        # Held until the process exits; the kernel releases it however that happens.
        state_lock = lock_state_dir(paths.state_dir())
    except StateInUse as error:
        _fail(str(error), 2)
    if state_lock is None:
        logs.get_logger().warning("state_dir_unlocked", path=str(paths.state_dir()))
    # A wedged daemon is killed by the watchdog with SIGABRT: leave every thread's stack behind.
    faulthandler.enable()
    try:
        inherited = systemd.listen_fds()
        listeners = inherited.get("chat") or [open_listener(settings.host, settings.port)]
        web = _web_listeners(settings, inherited)
        passed_admin = inherited.get("admin")
        admin = (
            AdminListener.adopt(passed_admin[0])
            if passed_admin
            else open_admin_socket(settings.admin_socket, settings.admin_group, logs.get_logger())
        )
    except (ListenError, ValueError, AdminSocketError) as error:
        _fail(str(error), 1)
    if inherited.get("chat"):
        _warn_if_not_configured(settings, listeners)
    try:
        server = Server(
            settings, config_path, overrides, listeners, systemd.Notifier(), admin, tls, web
        )
        status = server.run()
    except KeyboardInterrupt:
        status = 130
    logs.flush()
    sys.exit(status)
