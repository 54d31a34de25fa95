"""The process exit codes of every wsmon command and mode (documented in docs/cli.md).

Plain integers in a module with no imports, so the engine (``--headless --once``) and the click
subcommands share them without the engine depending on the command layer.
"""

EXIT_OK = 0
EXIT_REFUSED = 1  # an operation refused or failed (illegal transition, changed meanwhile)
EXIT_USAGE = 2  # usage or configuration error
EXIT_NOT_FOUND = 3  # workset or alert not found
EXIT_STORE = 4  # the store cannot be opened or reached (or is not initialised)
EXIT_SOURCE = 5  # an S3 discovery source could not be listed
