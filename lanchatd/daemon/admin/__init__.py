"""The admin socket: a Unix socket that ``lanchatctl`` uses to manage the running daemon.

The wire format is newline-delimited JSON (docs/admin-protocol.md), encoded and decoded by
lanchatd.core.adminwire, which ``lanchatctl`` shares. Here:

- listener.py: the socket file, and who may connect (SO_PEERCRED, the admin group);
- sessions.py: accepts connections and serves each in its own thread;
- commands.py: the command table (name, handler, arguments), with the handlers grouped per
  family in room_commands.py, ban_commands.py and daemon_commands.py;
- api.py: :class:`Operations`, all the handlers see of the daemon (operations.py provides it).
"""

from lanchatd.daemon.admin.listener import AdminListener, AdminSocketError, open_admin_socket
from lanchatd.daemon.admin.operations import DaemonOperations
from lanchatd.daemon.admin.sessions import MAX_CONNECTIONS, AdminServer

__all__ = [
    "MAX_CONNECTIONS",
    "AdminListener",
    "AdminServer",
    "AdminSocketError",
    "DaemonOperations",
    "open_admin_socket",
]
