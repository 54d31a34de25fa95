"""The monitoring engine. Never imports Textual (tests/test_import_hygiene.py enforces it)."""
