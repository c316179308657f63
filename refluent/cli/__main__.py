"""``python -m refluent.cli``."""

from refluent.cli.app import main

main()
