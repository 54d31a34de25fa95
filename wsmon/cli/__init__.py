"""The ``wsmon`` command: the click root (main.py), how a mode is launched, and one module per command group."""
