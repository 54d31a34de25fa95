"""Reusable dashboard widgets: diffed tables, charts, the status header."""
