"""The engine never imports Textual; screens never import boto3; --help stays light.

Each check runs in a fresh interpreter so modules imported by other tests do not hide a leak.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def _modules_after(code: str) -> set[str]:
    probe = code + "\nimport sys\nprint('\\n'.join(sorted(sys.modules)))\n"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True,
                         cwd=ROOT)
    return set(out.stdout.split())


def _engine_modules() -> list[str]:
    mods = []
    for path in sorted((ROOT / "wsmon" / "engine").rglob("*.py")):
        rel = path.relative_to(ROOT).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        mods.append(".".join(parts))
    return mods


@pytest.mark.parametrize("module", _engine_modules())
def test_engine_module_never_imports_textual(module: str) -> None:
    loaded = _modules_after(f"import {module}")
    assert not {m for m in loaded if m == "textual" or m.startswith("textual.")}, module


def test_help_imports_neither_textual_nor_boto3() -> None:
    loaded = _modules_after(
        "import sys\nfrom wsmon.cli.main import cli\n"
        "try:\n    cli.main(args=['--help'], prog_name='wsmon', standalone_mode=False)\n"
        "except SystemExit:\n    pass"
    )
    assert "textual" not in loaded
    assert "boto3" not in loaded


def test_screens_and_widgets_never_import_boto3() -> None:
    for folder in ("screens", "widgets"):
        for path in sorted((ROOT / "wsmon" / folder).rglob("*.py")):
            text = path.read_text(encoding="utf-8")
            assert "boto3" not in text and "botocore" not in text, path
    app = ROOT / "wsmon" / "app.py"
    if app.exists():
        loaded = _modules_after("import wsmon.app\nimport wsmon.screens")
        assert "boto3" not in loaded, "the dashboard must reach AWS only through the store"


API_STACK = ("fastapi", "starlette", "uvicorn", "prometheus_client", "textual_serve")


def _api_stack(loaded: set[str]) -> set[str]:
    return {m for m in loaded if m.split(".")[0] in API_STACK}


def _run_cli(args: list[str]) -> str:
    return (
        "import sys\nfrom wsmon.cli.main import cli\n"
        f"try:\n    cli.main(args={args!r}, prog_name='wsmon', standalone_mode=False)\n"
        "except SystemExit:\n    pass\n"
    )


@pytest.mark.parametrize("args", [["--help"], ["serve", "--help"], ["web", "--help"],
                                  ["list", "--help"]])
def test_help_never_imports_the_api_stack(args: list[str]) -> None:
    assert not _api_stack(_modules_after(_run_cli(args))), args


def test_cli_command_and_headless_without_api_never_import_the_api_stack(tmp_path, no_user_config) -> None:
    """A real command and a real --headless --once cycle, each against a SQLite store: neither
    loads FastAPI, Starlette, uvicorn or prometheus-client when [api] is not enabled."""
    store = f"sqlite:///{tmp_path / 'state.db'}"
    env_setup = f"import os\nos.environ['WSMON_STORE__URL'] = {store!r}\n"
    listed = _modules_after(env_setup + _run_cli(["store", "init"]) + _run_cli(["list", "--json"]))
    assert "wsmon.cli.ops_cmd" in listed  # the command really ran
    assert not _api_stack(listed)
    headless = _modules_after(env_setup + _run_cli(["--headless", "--once", "--timeout", "5"]))
    assert "wsmon.engine.process" in headless
    assert not _api_stack(headless)
