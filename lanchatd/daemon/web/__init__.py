"""The web port: the chat page over HTTP and the room over WebSocket, on the reader threads.

A connection to the web port runs the same reader thread as a chat connection (reader.py);
:func:`lanchatd.daemon.web.http.exchange` runs first, after TLS if any: it answers HTTP
requests (h11) from the static files in ``static/`` and hands a ``/ws`` upgrade to wsproto.
From then on the connection is a room member in the WEB framing: its inbound frames become
lines (websocket.py) for the usual ServerConnection, and delivery sends it frames from the
WEB journal. See docs/web.md.
"""
