"""``python -m lanchatd`` runs the daemon, as the ``lanchatd`` command does."""

from lanchatd.cli import main

main()
