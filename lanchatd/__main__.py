"""``python -m lanchatd`` runs the daemon, as the ``lanchatd`` command does."""

from lanchatd.daemon.main import main

main()
