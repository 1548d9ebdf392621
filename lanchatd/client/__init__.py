"""``lanchat``: the terminal chat client.

``link`` joins the room (the protocol core is :mod:`lanchatd.core.protocol`), ``session``
stays joined (reconnects, confirms delivery), ``render`` makes received text safe and readable,
``interactive`` and ``pipe`` are the two front ends (a person at a terminal; a script), and
``cli`` picks between them.
"""
