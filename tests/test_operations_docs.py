"""The operator-actions table in docs/operator-guide.md and docs/cli.md is the rule set of
wsmon/operations (issue 12): a rule that changes without its docs, or docs edited by hand, fail."""

from __future__ import annotations

from pathlib import Path

import pytest

from wsmon.operations.rules import ACTIONS, TABLE_END, TABLE_START, markdown_table

DOCS = Path(__file__).resolve().parents[1] / "docs"


def table_in(name: str) -> str:
    text = (DOCS / name).read_text(encoding="utf-8")
    assert text.count(TABLE_START) == 1, f"docs/{name} must hold the operator-actions table once"
    start = text.index(TABLE_START)
    return text[start:text.index(TABLE_END, start) + len(TABLE_END)]


@pytest.mark.parametrize("name", ["operator-guide.md", "cli.md"])
def test_docs_table_is_the_rule_set(name: str) -> None:
    assert table_in(name) == markdown_table(), (
        f"docs/{name}: regenerate the table with "
        "`python -c 'from wsmon.operations.rules import markdown_table; print(markdown_table())'`")


def test_table_has_one_row_per_action_with_its_allowed_states() -> None:
    rows = [line for line in markdown_table().splitlines() if line.startswith("| **")]
    assert len(rows) == len(ACTIONS)
    for rule, row in zip(ACTIONS.values(), rows):
        assert f"(`{rule.name}`)" in row
        for state in (rule.states if rule.states_text != "any state" else ()) or ():
            assert state.value in rule.states_text, (rule.name, state)
