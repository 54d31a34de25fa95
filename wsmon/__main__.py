"""``python -m wsmon``: the same command as the ``wsmon`` script."""

from wsmon.cli.main import main

main()
