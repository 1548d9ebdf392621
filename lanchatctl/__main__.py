"""``python -m lanchatctl``."""

from lanchatctl.cli import main

main()
