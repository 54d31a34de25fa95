#!/usr/bin/env python3
"""Set up a virtual environment and run wsmon's demo or its test suite.

    python3 dev.py demo [wsmon options...]   # the whole system on an embedded AWS stand-in
    python3 dev.py test [pytest options...]  # the whole test suite

Needs only Python 3.10+ and the package registries. The environment lives in .venv/ and is
reinstalled whenever pyproject.toml changes (its hash is kept beside it), so a fresh clone and a
long-lived checkout behave the same.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import venv
from pathlib import Path

ROOT = Path(__file__).resolve().parent
VENV = Path(os.environ.get("WSMON_DEV_VENV", ROOT / ".venv"))
STAMP = VENV / ".wsmon-installed"
BIN = VENV / ("Scripts" if os.name == "nt" else "bin")
PYTHON = BIN / ("python.exe" if os.name == "nt" else "python")

TEST_COMMAND = ["-m", "pytest", "-n", "2", "--dist", "loadgroup", "-q"]


def _requirements_hash() -> str:
    return hashlib.sha256((ROOT / "pyproject.toml").read_bytes()).hexdigest()


def ensure_environment() -> None:
    wanted = _requirements_hash()
    if STAMP.exists() and STAMP.read_text().strip() == wanted and PYTHON.exists():
        return
    if sys.version_info < (3, 10):
        sys.exit(f"wsmon needs Python 3.10 or newer; this is {sys.version.split()[0]}")
    if not PYTHON.exists():
        print(f"dev.py: creating {VENV}", file=sys.stderr)
        venv.EnvBuilder(with_pip=True, clear=False).create(VENV)
    print("dev.py: installing wsmon with its demo and test extras", file=sys.stderr)
    for argv in ([str(PYTHON), "-m", "pip", "install", "--quiet", "--upgrade", "pip"],
                 [str(PYTHON), "-m", "pip", "install", "--quiet", "-e", f"{ROOT}[dev]"]):
        subprocess.run(argv, cwd=ROOT, check=True)
    STAMP.write_text(wanted + "\n")


def main(argv: list[str]) -> int:
    if not argv or argv[0] not in ("demo", "test"):
        print(__doc__.strip(), file=sys.stderr)
        return 2
    command, rest = argv[0], argv[1:]
    try:
        ensure_environment()
    except subprocess.CalledProcessError as exc:
        print(f"dev.py: setting up {VENV} failed: {exc}", file=sys.stderr)
        return 1
    if command == "demo":
        args = [str(BIN / "wsmon"), "--demo", *rest]
    else:
        args = [str(PYTHON), *TEST_COMMAND, *rest]
    return subprocess.call(args, cwd=ROOT)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
