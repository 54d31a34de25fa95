"""The guides stay true to the code: every link and image resolves, every command is documented,
every Daylily monitor key has a row in the migration guide."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from wsmon.cli.main import LAZY_COMMANDS
from wsmon.config.daylily_yaml import DAYLILY_KEYS

DOCS = Path(__file__).resolve().parents[1] / "docs"
GUIDES = ["quickstart.md", "operator-guide.md", "cli.md", "migration.md", "troubleshooting.md", "deployment.md",
          "architecture.md"]
LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")


@pytest.mark.parametrize("name", GUIDES)
def test_guide_exists_and_its_links_resolve(name: str) -> None:
    path = DOCS / name
    text = path.read_text(encoding="utf-8")
    for target in LINK.findall(text):
        if target.startswith(("http://", "https://", "mailto:")):
            continue
        assert (path.parent / target).exists(), f"{name} links to missing {target}"


def test_cli_reference_covers_every_command() -> None:
    text = (DOCS / "cli.md").read_text(encoding="utf-8")
    for name in LAZY_COMMANDS:
        assert f"wsmon {name}" in text, f"docs/cli.md does not document `wsmon {name}`"


def test_cli_reference_lists_the_exit_codes_the_commands_use() -> None:
    from wsmon.core import exit_codes

    text = (DOCS / "cli.md").read_text(encoding="utf-8")
    codes = [value for name, value in vars(exit_codes).items() if name.startswith("EXIT_")
             and isinstance(value, int)]
    assert len(codes) >= 6
    for code in codes:
        assert re.search(rf"^\| {code} \|", text, re.MULTILINE), f"exit code {code} undocumented"


def test_migration_guide_maps_every_daylily_key() -> None:
    text = (DOCS / "migration.md").read_text(encoding="utf-8")
    for key in DAYLILY_KEYS:
        assert f"`{key.key}`" in text, f"docs/migration.md has no row for {key.key}"
        if key.target is not None:
            assert f"`{key.target_dotted}`" in text, f"{key.key} should map to {key.target_dotted}"


SNAPSHOTS = DOCS.parent / "tests" / "__snapshots__" / "test_app_snapshots"
# docs image -> the snapshot test's SVG it is a copy of
SCREENSHOTS = {
    "queue.svg": "test_screen[queue-160x48].svg",
    "detail.svg": "test_detail_of_running_workset_with_log_tail.svg",
    "clusters.svg": "test_screen[clusters-160x48].svg",
    "alerts.svg": "test_screen[alerts-160x48].svg",
    "release-dialog.svg": "test_screen[release-80x24].svg",
    "store-banner.svg": "test_store_failure_banner.svg",
}


@pytest.mark.parametrize("image", sorted(SCREENSHOTS))
def test_screenshots_are_the_current_snapshots(image: str) -> None:
    """The guide shows what the dashboard renders today: each image is its snapshot test's SVG."""
    snapshot = SNAPSHOTS / SCREENSHOTS[image]
    if not snapshot.exists():
        pytest.skip(f"snapshot {snapshot.name} not generated in this checkout")
    assert (DOCS / "images" / image).read_bytes() == snapshot.read_bytes(), (
        f"docs/images/{image} is out of date: cp '{snapshot.relative_to(DOCS.parent)}' docs/images/{image}")


# ------------------------------------------------------------------------------------------------
# The operator guide names every key binding id (the ids `[ui.keymap]` rebinds).
# ------------------------------------------------------------------------------------------------


def dashboard_binding_ids() -> set[str]:
    """Every binding id WsmonApp and the screens in wsmon.screens define themselves."""
    import importlib
    import pkgutil

    from textual.binding import Binding
    from textual.screen import Screen

    import wsmon.app
    import wsmon.screens

    for module in pkgutil.iter_modules(wsmon.screens.__path__):
        importlib.import_module(f"wsmon.screens.{module.name}")

    def subclasses(cls: type) -> list[type]:
        found = []
        for sub in cls.__subclasses__():
            found += [sub, *subclasses(sub)]
        return found

    owners = [wsmon.app.WsmonApp] + [c for c in subclasses(Screen) if c.__module__.startswith("wsmon.screens")]
    # own BINDINGS only: Textual's inherited ones (tab, copy) have no id and are not ours to document
    return {b.id for c in owners for b in c.__dict__.get("BINDINGS", []) if isinstance(b, Binding) and b.id}


def test_binding_walk_finds_the_dashboard_bindings() -> None:
    ids = dashboard_binding_ids()
    assert {"quit", "help", "release", "retry", "ack"} <= ids, sorted(ids)


def test_operator_guide_names_every_binding_id() -> None:
    """`?` shows binding ids and `[ui.keymap]` takes them: the guide must list every one."""
    text = (DOCS / "operator-guide.md").read_text(encoding="utf-8")
    missing = sorted(i for i in dashboard_binding_ids() if f"`{i}`" not in text)
    assert not missing, (
        "docs/operator-guide.md does not name these binding ids (write each as `id`, e.g. in a "
        f"'binding id' column of the key tables): {', '.join(missing)}")


# ------------------------------------------------------------------------------------------------
# The architecture document stays true: paths, layout, states, jobs.
# ------------------------------------------------------------------------------------------------

ROOT = DOCS.parent
REPO_DIRS = ("wsmon/", "tests/", "bench/", "docs/", "themes/")
INLINE_CODE = re.compile(r"`([^`\n]+)`")


def _fenced_blocks(text: str) -> list[tuple[int, str]]:
    """(line number, body) of each ``` block."""
    blocks, start, body = [], None, []
    for number, line in enumerate(text.splitlines(), 1):
        if line.lstrip().startswith("```"):
            if start is None:
                start, body = number, []
            else:
                blocks.append((start, "\n".join(body)))
                start = None
        elif start is not None:
            body.append(line)
    return blocks


def _prose(text: str) -> str:
    """The text outside fenced blocks (inline code spans in it are what the checks read)."""
    out, inside = [], False
    for line in text.splitlines():
        if line.lstrip().startswith("```"):
            inside = not inside
        elif not inside:
            out.append(line)
    return "\n".join(out)


def _repo_path_exists(path: str) -> bool:
    candidate = path.rstrip("/")
    if any(ch in candidate for ch in "*?["):
        return any(ROOT.glob(candidate))
    return (ROOT / candidate).exists()


def test_architecture_names_only_paths_that_exist() -> None:
    text = (DOCS / "architecture.md").read_text(encoding="utf-8")
    named = set()
    for span in INLINE_CODE.findall(text):
        span = span.strip()
        if span.startswith(REPO_DIRS):
            named.add(span)
        elif span.startswith("engine/"):  # the doc's shorthand inside the package
            named.add("wsmon/" + span)
    assert named, "no repository paths found in docs/architecture.md: has the format changed?"
    missing = sorted(p for p in named if not _repo_path_exists(p))
    assert not missing, f"docs/architecture.md names paths that do not exist: {', '.join(missing)}"


def _layout_entries(text: str) -> list[tuple[str, str]]:
    """(path, description) for each entry of the tree under '## Layout'."""
    section = text.split("## Layout", 1)[1]
    block = _fenced_blocks(section)[0][1]
    entries: list[tuple[str, str]] = []
    stack: list[str] = []  # directory at each depth
    entry_name = re.compile(r"[\w.-]+/?(?:, [\w.-]+/?)*")
    for line in block.splitlines():
        if not line.strip():
            continue
        indent = len(line) - len(line.lstrip(" "))
        depth, odd = divmod(indent, 2)
        match = entry_name.match(line.lstrip(" "))
        if odd or depth > len(stack) or match is None:
            if entries:  # a continuation of the previous entry's description
                path, desc = entries[-1]
                entries[-1] = (path, desc + " " + line.strip())
            continue
        stack = stack[:depth]
        description = line.lstrip(" ")[match.end():].strip()
        for name in match.group(0).split(", "):
            path = "/".join([*stack, name.rstrip("/")])
            entries.append((path + ("/" if name.endswith("/") else ""), description))
        if match.group(0).endswith("/"):
            stack.append(match.group(0).rstrip("/"))
    return entries


def test_architecture_layout_matches_the_repository() -> None:
    entries = _layout_entries((DOCS / "architecture.md").read_text(encoding="utf-8"))
    assert {"wsmon/cli/main.py", "wsmon/engine/store/", "themes/"} <= {p for p, _ in entries}, entries
    problems = []
    for path, description in entries:
        if not (ROOT / path).exists():
            problems.append(f"{path} does not exist")
        # modules a directory's description names (e.g. 'base.py, sqlite.py') live in it
        folder = ROOT / (path if path.endswith("/") else str(Path(path).parent))
        for module in re.findall(r"(?<![\w/.-])([A-Za-z_]\w*\.py)\b", description):
            if not (folder / module).exists() and not (ROOT / module).exists():
                problems.append(f"{path}: names {module}, which is not in {folder.relative_to(ROOT)}/")
    assert not problems, "docs/architecture.md layout is out of date:\n  " + "\n  ".join(problems)


def test_architecture_lists_every_state_transition() -> None:
    from wsmon.engine.store.base import TRANSITIONS
    from wsmon.core.models import WorksetState

    text = (DOCS / "architecture.md").read_text(encoding="utf-8")
    documented = set(re.findall(r"^\| `(\w+)` \| `(\w+)` \|", text, re.MULTILINE))
    actual = {(src.value, dst.value) for src, targets in TRANSITIONS.items() for dst in targets}
    assert documented == actual, (
        f"docs/architecture.md transitions differ from TRANSITIONS: undocumented "
        f"{sorted(actual - documented)}, not allowed {sorted(documented - actual)}")
    states = {s for pair in documented for s in pair}
    assert states == {s.value for s in WorksetState}


def _engine_job_names() -> list[str]:
    """The job ids Engine.start schedules, read from the source (starting an engine is not needed)."""
    import ast

    from wsmon.engine import service

    tree = ast.parse(Path(service.__file__).read_text(encoding="utf-8"))
    for node in ast.walk(tree):
        if isinstance(node, ast.FunctionDef) and node.name == "start":
            for stmt in ast.walk(node):
                if (isinstance(stmt, ast.Assign) and any(isinstance(t, ast.Name) and t.id == "jobs"
                                                         for t in stmt.targets)
                        and isinstance(stmt.value, ast.List)):
                    return [elt.elts[0].value for elt in stmt.value.elts
                            if isinstance(elt, ast.Tuple) and isinstance(elt.elts[0], ast.Constant)]
    raise AssertionError("Engine.start has no `jobs = [...]` list any more: update this test")


def test_architecture_job_table_matches_the_engine() -> None:
    text = (DOCS / "architecture.md").read_text(encoding="utf-8")
    table = text.split("| job | every | does |", 1)[1].split("\n\n", 1)[0]
    documented = set(re.findall(r"^\| (\w+) \|", table, re.MULTILINE))
    assert documented == set(_engine_job_names()), (
        f"docs/architecture.md job table {sorted(documented)} != engine jobs {sorted(_engine_job_names())}")


# ------------------------------------------------------------------------------------------------
# Settings, commands and notification details the deployment guides name exist.
# ------------------------------------------------------------------------------------------------

DOTTED = re.compile(r"^([a-z_]+(?:\.[A-Za-z0-9_*]+)+)(?:\s*=.*)?$")
NOT_SETTINGS_SUFFIXES = {"log", "toml", "yaml", "yml", "tsv", "md", "py", "json", "db", "env", "service",
                         "fifo", "txt", "svg", "tcss", "sh", "pem"}


def _setting_exists(dotted: str) -> bool:
    """Does ``a.b.c`` name a setting or section of Settings (``*`` as a wildcard in a part)?"""
    import fnmatch
    import typing

    from pydantic import BaseModel

    from wsmon.config.settings import Settings

    def models_in(annotation: object) -> list[type[BaseModel]]:
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            return [annotation]
        return [m for arg in typing.get_args(annotation) for m in models_in(arg)]

    def is_mapping(annotation: object) -> bool:
        return typing.get_origin(annotation) is dict or any(is_mapping(a) for a in typing.get_args(annotation))

    def walk(model: type[BaseModel], parts: list[str]) -> bool:
        if not parts:
            return True
        names = fnmatch.filter(model.model_fields, parts[0])
        for name in names:
            annotation = model.model_fields[name].annotation
            if len(parts) == 1 or is_mapping(annotation):
                return True
            if any(walk(sub, parts[1:]) for sub in models_in(annotation)):
                return True
        return False

    return walk(Settings, dotted.split("."))


def _named_settings(text: str) -> set[str]:
    named = set()
    for span in INLINE_CODE.findall(text):
        match = DOTTED.match(span.strip())
        if not match:
            continue
        dotted = match.group(1)
        parts = dotted.split(".")
        if parts[-1] in NOT_SETTINGS_SUFFIXES or parts[0] in ("daylily", "wsmon"):
            continue  # a file name (`wsmon.log`, `config.toml`) or a sentinel (`daylily.error`)
        named.add(dotted)
    return named


def test_setting_lookup_tells_real_from_made_up() -> None:
    assert _setting_exists("notify.sns_topic_arn")
    assert _setting_exists("notify.slack_filter.priorities")
    assert _setting_exists("alerts.stale_lease.for_seconds")
    assert _setting_exists("clusters.static.max_vcpus")
    assert _setting_exists("discovery.estimate_*")
    assert not _setting_exists("notify.sns_topic")
    assert not _setting_exists("notfy.sns_topic_arn")
    assert _named_settings("`wsmon.log`, `daylily.error`, `scheduler.az_preference = \"hard\"`") == {
        "scheduler.az_preference"}


@pytest.mark.parametrize("name", ["deployment.md", "troubleshooting.md"])
def test_guides_name_only_settings_that_exist(name: str) -> None:
    named = _named_settings((DOCS / name).read_text(encoding="utf-8"))
    assert named, f"no settings found in docs/{name}: has the format changed?"
    unknown = sorted(s for s in named if not _setting_exists(s))
    assert not unknown, f"docs/{name} names settings that do not exist: {', '.join(unknown)}"


def _wsmon_command_lines(text: str) -> list[str]:
    """Every wsmon invocation in code blocks, and inline code spans that start with `wsmon `."""
    lines = []
    for _, block in _fenced_blocks(text):
        for line in block.replace("\\\n", " ").splitlines():
            lines.append(line)
    lines += [s for s in INLINE_CODE.findall(_prose(text)) if re.match(r"wsmon (-|[a-z])", s)]
    return lines


def _wsmon_argv(line: str) -> list[str] | None:
    import shlex

    try:
        tokens = shlex.split(line, comments=True)
    except ValueError:
        return None
    for index, token in enumerate(tokens):
        if (index == 0 and token == "wsmon") or token.endswith("/bin/wsmon"):
            argv = []
            for arg in tokens[index + 1:]:
                if arg in ("|", "||", "&&", ";", ">", ">>", "2>&1", "<"):
                    break
                if arg not in ("…", "..."):
                    argv.append(arg)
            return argv
    return None


def _check_argv(argv: list[str]) -> str | None:
    """Parse argv as click would (without running anything); None when it is a valid command line."""
    import click

    from wsmon.cli.main import cli

    command: click.Command = cli
    ctx = None
    args = list(argv)
    name = "wsmon"
    while True:
        try:
            ctx = command.make_context(name, args, parent=ctx)
        except click.MissingParameter:
            return None  # a placeholder left out on purpose (`wsmon silence …`)
        except click.exceptions.Exit:
            return None  # --version or --help: accepted, and it ends the parse
        except click.UsageError as exc:
            return f"{' '.join(argv)}: {exc.format_message()}"
        if not isinstance(command, click.Group):
            return None
        rest = [*getattr(ctx, "_protected_args", []), *ctx.args]
        if not rest:
            return None
        name, args = rest[0], rest[1:]
        sub = command.get_command(ctx, name)
        if sub is None:
            return f"{' '.join(argv)}: no command {name!r}"
        command = sub


@pytest.mark.parametrize("name", ["deployment.md", "troubleshooting.md", "quickstart.md"])
def test_guides_show_only_valid_command_lines(name: str) -> None:
    argvs = [a for a in map(_wsmon_argv, _wsmon_command_lines((DOCS / name).read_text(encoding="utf-8")))
             if a is not None]
    assert argvs, f"no wsmon commands found in docs/{name}"
    problems = [p for p in map(_check_argv, argvs) if p]
    assert not problems, f"docs/{name} shows command lines wsmon would refuse:\n  " + "\n  ".join(problems)


def test_command_line_check_rejects_what_wsmon_rejects() -> None:
    assert _check_argv(["--config", "c.toml", "notify", "test", "--channel", "slack"]) is None
    assert _check_argv(["--version"]) is None and _check_argv(["list", "--help"]) is None
    assert _check_argv(["list", "--state", "error", "--state", "failed"]) is None
    assert _check_argv(["notify", "tset"]) is not None
    assert _check_argv(["list", "--state", "broken"]) is not None
    assert _check_argv(["release", "ID", "--force"]) is not None


def test_deployment_guide_names_every_notification_event_type() -> None:
    from wsmon.engine.notify import EVENT_TYPES

    text = (DOCS / "deployment.md").read_text(encoding="utf-8")
    missing = [e for e in EVENT_TYPES if f"| `{e}` |" not in text]
    assert not missing, f"docs/deployment.md has no row for event type(s) {', '.join(missing)}"


def _all_sns_attribute_names() -> set[str]:
    from wsmon.engine.notify import Message, SnsChannel

    full = Message(event_type="failed", title="t", text="x", severity="warning", at="2026-01-01T00:00:00Z",
                   priority="urgent", state="error", workset_id="w", alert_id="a", rule="stale_lease")
    return set(SnsChannel.attributes(full))


def test_deployment_guide_lists_the_sns_message_attributes() -> None:
    text = (DOCS / "deployment.md").read_text(encoding="utf-8")
    missing = sorted(a for a in _all_sns_attribute_names() if f"| `{a}` |" not in text)
    assert not missing, f"docs/deployment.md does not list SNS message attribute(s) {', '.join(missing)}"


def test_sns_filter_policy_examples_use_what_wsmon_sends() -> None:
    """A filter policy that names an attribute or a value wsmon never sends silently drops everything."""
    import json

    from wsmon.engine.notify import EVENT_TYPES
    from wsmon.core.models import Priority, Severity, WorksetState

    allowed_values = {"event_type": {*EVENT_TYPES, "test"}, "severity": {s.value for s in Severity},
                      "priority": {p.value for p in Priority}, "state": {s.value for s in WorksetState}}
    attributes = _all_sns_attribute_names()
    text = (DOCS / "deployment.md").read_text(encoding="utf-8")
    policies = []
    for _, block in _fenced_blocks(text):
        try:
            value = json.loads(block)
        except ValueError:
            continue
        if isinstance(value, dict):
            policies.append(value)
    assert policies, "docs/deployment.md shows no SNS filter policy"

    def check(policy: dict) -> list[str]:
        problems = []
        for key, condition in policy.items():
            if key in ("$or", "$and"):
                for branch in condition:
                    problems += check(branch)
                continue
            if key not in attributes:
                problems.append(f"attribute {key!r} is never sent (sent: {sorted(attributes)})")
                continue
            for value in condition:
                if isinstance(value, str) and key in allowed_values and value not in allowed_values[key]:
                    problems.append(f"{key} is never {value!r}")
        return problems

    problems = [p for policy in policies for p in check(policy)]
    assert not problems, "docs/deployment.md filter policy: " + "; ".join(problems)
