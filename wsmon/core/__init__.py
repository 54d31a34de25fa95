"""What every part of wsmon shares and nothing else of wsmon feeds: models, clock, safe text, AWS clients, exit codes."""
