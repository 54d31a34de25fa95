"""The layering is checked, not hoped for: import-linter's contracts (pyproject.toml
[tool.importlinter]) hold, and no module of wsmon/ is imported in a cycle.

Both read every import statement, including those inside functions; imports under
``if TYPE_CHECKING:`` are left out because they never run (screens and widgets name ``WsmonApp``
in annotations only).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path

import grimp
import pytest

ROOT = Path(__file__).resolve().parents[1]
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")
# What pyproject.toml promises (docs/architecture.md describes them); removing one fails here.
CONTRACT_IDS = {"engine-no-ui", "engine-no-faces", "api-no-other-faces", "operations-front-end-neutral",
                "ui-no-cli-app", "ui-no-aws", "core-alone", "config-only-core"}


def _lint_imports(cwd: Path, env: Mapping[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    assert LINT_IMPORTS.exists(), (
        f"{LINT_IMPORTS} is missing: install the dev extra (pip install -e '.[dev]', import-linter)")
    return subprocess.run([str(LINT_IMPORTS), "--no-cache"], cwd=cwd, capture_output=True, text=True,
                          timeout=120, env=None if env is None else dict(env))


def test_pyproject_declares_the_architecture_contracts() -> None:
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib  # type: ignore[no-redef]

    config = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["tool"]["importlinter"]
    assert config["exclude_type_checking_imports"] is True
    assert {c["id"] for c in config["contracts"]} >= CONTRACT_IDS


def test_import_contracts_hold() -> None:
    result = _lint_imports(ROOT)
    assert result.returncode == 0, f"import-linter contracts broken:\n{result.stdout}\n{result.stderr}"
    assert "0 broken" in result.stdout, result.stdout


@pytest.mark.parametrize(("module", "planted", "contract"), [
    ("wsmon/engine/retry.py", "import click", "The engine never imports Textual or click"),
    ("wsmon/core/textsafe.py", "from wsmon.config.settings import Settings",
     "wsmon.core imports nothing else of wsmon"),
    ("wsmon/widgets/format.py", "from wsmon.app import WsmonApp",
     "Screens and widgets never import the CLI or the app module"),
])
def test_a_function_level_import_that_breaks_a_contract_is_caught(
        tmp_path: Path, module: str, planted: str, contract: str) -> None:
    """The contracts bite, also on an import hidden inside a function (a planted one in a copy)."""
    shutil.copytree(ROOT / "wsmon", tmp_path / "wsmon", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    target = tmp_path / module
    target.write_text(target.read_text(encoding="utf-8")
                      + f"\n\ndef _planted() -> None:\n    {planted}  # noqa\n", encoding="utf-8")
    result = _lint_imports(tmp_path, env={"PATH": "", "PYTHONPATH": str(tmp_path), "HOME": str(tmp_path)})
    assert result.returncode != 0, result.stdout + result.stderr
    assert f"{contract} BROKEN" in result.stdout, result.stdout


# ------------------------------------------------------------------------------------------------
# cycles
# ------------------------------------------------------------------------------------------------


def import_cycles(edges: Mapping[str, Iterable[str]]) -> list[list[str]]:
    """The strongly connected groups of more than one module (each is at least one cycle), sorted."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    groups: list[list[str]] = []
    counter = 0
    for start in sorted(edges):
        if start in index:
            continue
        # iterative Tarjan: (node, iterator over its successors)
        work = [(start, iter(sorted(edges.get(start, ()))))]
        index[start] = low[start] = counter
        counter += 1
        stack.append(start)
        on_stack.add(start)
        while work:
            node, successors = work[-1]
            advanced = False
            for nxt in successors:
                if nxt not in index:
                    index[nxt] = low[nxt] = counter
                    counter += 1
                    stack.append(nxt)
                    on_stack.add(nxt)
                    work.append((nxt, iter(sorted(edges.get(nxt, ())))))
                    advanced = True
                    break
                if nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
            if advanced:
                continue
            work.pop()
            if work:
                low[work[-1][0]] = min(low[work[-1][0]], low[node])
            if low[node] == index[node]:
                group = []
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    group.append(member)
                    if member == node:
                        break
                if len(group) > 1:
                    groups.append(sorted(group))
    return sorted(groups)


def test_cycle_finder_finds_cycles_and_only_cycles() -> None:
    assert import_cycles({"a": ["b"], "b": ["c"], "c": []}) == []
    assert import_cycles({"a": ["b"], "b": ["c"], "c": ["a"], "d": ["a"]}) == [["a", "b", "c"]]
    assert import_cycles({"a": ["b"], "b": ["a"], "c": ["d"], "d": ["c"]}) == [["a", "b"], ["c", "d"]]


def test_no_module_of_wsmon_is_imported_in_a_cycle() -> None:
    graph = grimp.build_graph("wsmon", exclude_type_checking_imports=True, cache_dir=None)
    edges = {m: graph.find_modules_directly_imported_by(m) for m in graph.modules}
    assert len(edges) > 50, "the import graph looks empty: did grimp find the package?"
    cycles = import_cycles(edges)
    lines = []
    for group in cycles:
        lines.append("cycle among: " + ", ".join(group))
        for importer in group:
            for imported in sorted(edges[importer] & set(group)):
                where = [d["line_number"] for d in graph.get_import_details(importer=importer, imported=imported)]
                lines.append(f"    {importer} -> {imported} (line {', '.join(map(str, where))})")
    assert not cycles, "modules imported in a cycle (function-level imports count):\n" + "\n".join(lines)
