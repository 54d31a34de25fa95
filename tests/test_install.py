"""Installing on a head node as docs/quickstart.md says: build the wheel, install it with the demo
extra into a fresh virtual environment (from the package registry, nothing borrowed from this
one), and run it from there, package data included."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import venv
from pathlib import Path

import pytest

import wsmon

ROOT = Path(__file__).resolve().parent.parent
BIN = "Scripts" if os.name == "nt" else "bin"


def _run(argv: list[str], *, env: dict[str, str] | None = None, timeout: float,
         cwd: Path | None = None) -> subprocess.CompletedProcess:
    done = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=timeout, cwd=cwd)
    assert done.returncode == 0, (f"{' '.join(argv)} exited {done.returncode}\n"
                                  f"stdout:\n{done.stdout[-3000:]}\nstderr:\n{done.stderr[-3000:]}")
    return done


@pytest.mark.slow
@pytest.mark.timeout(1200)  # the dependency download dominates; the registry is the only network
def test_the_built_wheel_installs_into_a_fresh_environment_and_runs_the_demo(tmp_path: Path) -> None:
    source = tmp_path / "source"  # build from a copy: the shared checkout gets no build/ or egg-info
    source.mkdir()
    for name in ("pyproject.toml", "README.md"):
        shutil.copy(ROOT / name, source / name)
    shutil.copytree(ROOT / "wsmon", source / "wsmon", ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    dist = tmp_path / "dist"
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(dist), str(source)], timeout=600)
    wheels = list(dist.glob("wsmon-*.whl"))
    assert [w.name for w in wheels] == [f"wsmon-{wsmon.__version__}-py3-none-any.whl"]

    env_dir = tmp_path / "env"
    venv.EnvBuilder(with_pip=True, system_site_packages=False).create(env_dir)
    python = env_dir / BIN / "python"
    _run([str(python), "-m", "pip", "install", "--quiet", f"{wheels[0]}[demo]"], timeout=1000)

    home = tmp_path / "home"
    home.mkdir()
    clean = {"PATH": f"{env_dir / BIN}{os.pathsep}{os.environ.get('PATH', '')}", "HOME": str(home),
             "XDG_CONFIG_HOME": str(home / ".config"), "XDG_STATE_HOME": str(home / ".state"),
             "TMPDIR": str(tmp_path), "LANG": "C.UTF-8"}
    # run from an empty directory: from the checkout, `python -c` would import ./wsmon instead
    found = _run([str(python), "-c", "import wsmon; print(wsmon.__file__)"], env=clean, timeout=60, cwd=home)
    assert Path(found.stdout.strip()).is_relative_to(env_dir), "wsmon was imported from outside the new environment"
    wsmon_exe = str(env_dir / BIN / "wsmon")

    assert _run([wsmon_exe, "--version"], env=clean, timeout=60, cwd=home).stdout.strip() == f"wsmon, version {wsmon.__version__}"
    assert "Usage: wsmon" in _run([wsmon_exe, "--help"], env=clean, timeout=60, cwd=home).stdout
    assert _run([str(python), "-m", "wsmon", "--version"], env=clean, timeout=60, cwd=home).stdout.strip().endswith(wsmon.__version__)

    demo = _run([wsmon_exe, "--demo", "--headless", "--timeout", "20"], env=clean, timeout=600, cwd=home)
    # the seeded folders come from the package data (wsmon/demo/data): without it nothing is seeded
    summary = re.search(r"^wsmon demo summary: (\{.*\})$", demo.stdout, re.M)
    assert summary, demo.stdout[-3000:]
    assert sum(json.loads(summary.group(1)).values()) >= 3, summary.group(0)
