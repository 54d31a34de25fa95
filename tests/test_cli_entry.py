"""The command line as a newcomer types it: global options anywhere, the Daylily YAML passed to the
wrong option, ``python -m wsmon``, one version, and a broken command module reported as such."""

from __future__ import annotations

import json
import subprocess
import sys
from importlib.metadata import version
from pathlib import Path

import pytest
from click.testing import CliRunner

import wsmon
from wsmon.cli import main as cli_main
from wsmon.cli.main import cli

ROOT = Path(__file__).resolve().parent.parent
DAYLILY_YAML = ROOT / "tests" / "fixtures" / "daylily-worksets" / "test_snv" / "daylily_info.yaml"


@pytest.fixture
def sqlite_url(tmp_path: Path, no_user_config: None) -> str:
    return f"sqlite:///{tmp_path / 'state.db'}"


def run(*args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, list(args))
    return result.exit_code, result.output


# ---- global options after the subcommand -------------------------------------------------------


def test_store_option_after_a_nested_subcommand_and_after_a_command(sqlite_url: str) -> None:
    code, out = run("store", "init", "--store", sqlite_url)
    assert code == 0 and "store ready: sqlite:" in out and sqlite_url.split("///", 1)[1] in out, out
    code, out = run("list", "--store", sqlite_url, "--json")
    assert (code, json.loads(out)) == (0, []), out
    code, out = run("store", "--store", sqlite_url, "info", "--json")
    assert code == 0 and json.loads(out)["total"] == 0, out


def test_the_option_given_after_the_subcommand_wins(sqlite_url: str, tmp_path: Path) -> None:
    assert run("store", "init", "--store", sqlite_url)[0] == 0
    missing = f"sqlite:///{tmp_path / 'missing.db'}"
    assert run("--store", missing, "list", "--store", sqlite_url)[0] == 0
    code, out = run("--store", sqlite_url, "list", "--store", missing)
    assert code == 4 and "missing.db" in out, out


def test_config_option_after_the_subcommand(tmp_path: Path, no_user_config: None) -> None:
    config = tmp_path / "wsmon.toml"
    config.write_text(f'[store]\nurl = "sqlite:///{tmp_path / "from-config.db"}"\n')
    code, out = run("config", "show", "--json", "--config", str(config))
    assert code == 0, out
    assert json.loads(out)["store_url"].endswith("from-config.db")


def test_subcommand_help_lists_the_global_options(no_user_config: None) -> None:
    code, out = run("store", "init", "--help")
    assert code == 0 and "--store URL" in out and "--config" in out and "--daylily-yaml" in out, out


# ---- a Daylily monitor YAML given as --config --------------------------------------------------


@pytest.mark.parametrize("where", ["before", "after"])
def test_daylily_yaml_given_as_config_says_to_use_daylily_yaml(where: str, no_user_config: None) -> None:
    args = ["--config", str(DAYLILY_YAML), "list"] if where == "before" else ["list", "--config", str(DAYLILY_YAML)]
    code, out = run(*args)
    assert code == 2, out
    assert "this looks like a Daylily monitor YAML" in out and f"use --daylily-yaml {DAYLILY_YAML}" in out


def test_a_broken_toml_file_is_still_reported_as_toml(tmp_path: Path, no_user_config: None) -> None:
    config = tmp_path / "wsmon.toml"
    config.write_text("[store\nurl = 1\n")
    code, out = run("--config", str(config), "list")
    assert code == 2 and "not valid TOML" in out and "Daylily" not in out, out


# ---- entry points and version ------------------------------------------------------------------


def test_python_dash_m_wsmon_runs_the_command() -> None:
    done = subprocess.run([sys.executable, "-m", "wsmon", "--version"], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == f"wsmon, version {wsmon.__version__}"


def test_the_version_is_defined_once() -> None:
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib  # type: ignore[no-redef]

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert "version" not in project["project"], "pyproject.toml repeats the version: read it from wsmon.__version__"
    assert project["project"]["dynamic"] == ["version"]
    assert project["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "wsmon.__version__"}
    assert version("wsmon") == wsmon.__version__


def test_a_command_module_that_fails_to_import_is_an_error_not_a_missing_command(
        monkeypatch: pytest.MonkeyPatch, no_user_config: None) -> None:
    monkeypatch.setitem(cli_main.LAZY_COMMANDS, "broken", ("wsmon.cli.no_such_module:cmd", "A broken command."))
    result = CliRunner().invoke(cli, ["broken"])
    assert isinstance(result.exception, ModuleNotFoundError), result.output
    assert "No such command" not in result.output
