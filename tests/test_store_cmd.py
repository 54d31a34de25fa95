"""`wsmon store init` / `wsmon store info` against each backend, as an operator runs them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from wsmon.cli.main import cli


@pytest.fixture
def runner(no_user_config: None) -> CliRunner:
    return CliRunner()


@pytest.fixture(params=["sqlite", "dynamodb"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path, unique_name: str) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'state.db'}"
    endpoint = request.getfixturevalue("moto_endpoint")
    return f"dynamodb://{unique_name}?region=us-west-2&endpoint_url={endpoint}"


def test_store_init_is_idempotent_and_info_counts(runner: CliRunner, store_url: str) -> None:
    first = runner.invoke(cli, ["--store", store_url, "store", "init"])
    assert first.exit_code == 0, first.output
    assert "store ready" in first.output
    second = runner.invoke(cli, ["--store", store_url, "store", "init"])
    assert second.exit_code == 0, second.output
    info = runner.invoke(cli, ["--store", store_url, "store", "info", "--json"])
    assert info.exit_code == 0, info.output
    data = json.loads(info.output)
    assert data["total"] == 0 and data["states"]["ready"] == 0
    text = runner.invoke(cli, ["--store", store_url, "store", "info"])
    assert text.exit_code == 0 and "worksets: 0" in text.output
