"""``python -m lanchatd.client``: the same as the ``lanchat`` command."""

from lanchatd.client.main import main

main(prog_name="lanchat")
