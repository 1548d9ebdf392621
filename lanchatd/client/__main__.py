"""``python -m lanchatd.client``: the same as the ``lanchat`` command."""

from lanchatd.client.cli import main

main(prog_name="lanchat")
