"""The earlier Daylily monitor's YAML config, read as a source of wsmon settings.

Existing users point wsmon at the file they already have (``daylily_yaml`` /
``WSMON_DAYLILY_YAML``). Each key maps to the wsmon setting that does the same job; a key wsmon
has no use for produces one warning line, never an error, because the file was written for
another program. Values from this file rank below the wsmon TOML file and the environment.
"""

from __future__ import annotations

import shlex
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from wsmon.config.schema import Loc


class DaylilyYamlError(Exception):
    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


def _argv(value: Any) -> Any:
    # The old monitor passed ssh_extra_args through a shell; wsmon keeps argv lists.
    return shlex.split(value) if isinstance(value, str) else value


@dataclass(frozen=True)
class DaylilyKey:
    key: str                       # "monitor.poll_interval_seconds"
    target: Loc | None             # ("discovery", "poll_interval_seconds"); None: wsmon has no use for it
    note: str = ""                 # why it is unused, or how the mapping differs
    convert: Callable[[Any], Any] | None = None

    @property
    def target_dotted(self) -> str:
        from wsmon.config.schema import dotted

        return dotted(self.target) if self.target else ""


DAYLILY_KEYS: tuple[DaylilyKey, ...] = (
    DaylilyKey("aws.profile", ("aws", "profile")),
    DaylilyKey("aws.region", ("aws", "region")),
    DaylilyKey("aws.session_duration_seconds", ("aws", "session_duration_seconds")),
    DaylilyKey("monitor.bucket", ("discovery", "sources", 0, "bucket"),
               "with monitor.prefix, becomes the one entry of discovery.sources"),
    DaylilyKey("monitor.prefix", ("discovery", "sources", 0, "prefix"),
               "with monitor.bucket, becomes the one entry of discovery.sources"),
    DaylilyKey("monitor.archive_prefix", ("discovery", "archive_prefix")),
    DaylilyKey("monitor.poll_interval_seconds", ("discovery", "poll_interval_seconds")),
    DaylilyKey("monitor.ready_lock_backoff_seconds", ("discovery", "ready_lock_backoff_seconds")),
    DaylilyKey("monitor.continuous", ("continuous",),
               "false: `wsmon --headless` runs one full cycle and exits"),
    DaylilyKey("monitor.sentinel_index_prefix", ("discovery", "sentinel_index_prefix")),
    DaylilyKey("cluster.template_path", None,
               "wsmon creates clusters with clusters.create_cluster_command, not from a template file"),
    DaylilyKey("cluster.preferred_availability_zone", ("clusters", "preferred_availability_zone")),
    DaylilyKey("cluster.auto_teardown", None, "wsmon never tears clusters down"),
    DaylilyKey("cluster.idle_teardown_minutes", None, "wsmon never tears clusters down"),
    DaylilyKey("cluster.reuse_cluster_name", ("clusters", "reuse_cluster_name")),
    DaylilyKey("cluster.contact_email", ("notify", "contact_email")),
    DaylilyKey("pipeline.workdir", ("runner", "workdir")),
    DaylilyKey("pipeline.stage_command", ("runner", "stage_command")),
    DaylilyKey("pipeline.clone_command", ("runner", "clone_command")),
    DaylilyKey("pipeline.run_prefix", ("runner", "run_prefix")),
    DaylilyKey("pipeline.export_command", ("runner", "export_command")),
    DaylilyKey("pipeline.pipeline_timeout_minutes", ("runner", "pipeline_timeout_minutes")),
    DaylilyKey("pipeline.local_stage_root", ("runner", "local_stage_root")),
    DaylilyKey("pipeline.reference_bucket", ("runner", "reference_bucket")),
    DaylilyKey("pipeline.ssh_identity_file", ("runner", "ssh_identity_file")),
    DaylilyKey("pipeline.ssh_user", ("runner", "ssh_user")),
    DaylilyKey("pipeline.ssh_extra_args", ("runner", "ssh_extra_args"),
               "a string is split into arguments the way a shell would", _argv),
    DaylilyKey("pipeline.login_shell_init", ("runner", "login_shell_init")),
    DaylilyKey("pipeline.tmux_session_prefix", ("runner", "tmux_session_prefix")),
    DaylilyKey("pipeline.tmux_keepalive_shell", None,
               "wsmon watches the pipeline's tmux session itself; no keep-alive shell is needed"),
)

_BY_KEY = {k.key: k for k in DAYLILY_KEYS}
SECTIONS = tuple(dict.fromkeys(k.key.split(".")[0] for k in DAYLILY_KEYS))


@dataclass
class DaylilyValues:
    """Settings read from one Daylily monitor file, shaped like wsmon's settings."""

    path: Path
    data: dict[str, Any] = field(default_factory=dict)
    # target path -> (daylily key, line number) so errors and `config show` can name both
    origins: dict[Loc, tuple[str, int | None]] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


def looks_like_daylily_yaml(text: str) -> bool:
    """Whether ``text`` is a Daylily monitor YAML (a mapping with its ``monitor:`` section), so an
    operator who passed it as ``--config`` can be told to use ``--daylily-yaml``."""
    import yaml

    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError:
        return False
    return isinstance(raw, dict) and isinstance(raw.get("monitor"), dict)


def read_daylily_yaml(path: Path) -> DaylilyValues:
    """Map the file's keys onto wsmon settings. Raises DaylilyYamlError for a file that cannot be read."""
    import yaml

    where = f"Daylily monitor config {path}"
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise DaylilyYamlError([f"{where}: the file does not exist (set by daylily_yaml)."]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise DaylilyYamlError([f"{where}: cannot be read: {exc.strerror if isinstance(exc, OSError) else exc}."]) from None
    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        raw = yaml.safe_load(text)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        at = f" line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = exc.problem or exc.context or "not valid YAML"
        opened = exc.context_mark if exc.problem_mark and exc.context_mark else None
        if opened is not None and exc.context:  # where the unclosed thing began helps more than EOF
            problem += f" ({exc.context} at line {opened.line + 1}, column {opened.column + 1})"
        raise DaylilyYamlError([f"{where}{at}: not valid YAML: {problem}."]) from None
    except yaml.YAMLError as exc:
        raise DaylilyYamlError([f"{where}: not valid YAML: {exc}."]) from None

    result = DaylilyValues(path=path)
    if raw is None:
        return result
    if not isinstance(raw, dict):
        raise DaylilyYamlError([f"{where}: expected sections aws, monitor, cluster and pipeline at the top level, "
                                f"found a {type(raw).__name__}."])
    lines = _key_lines(root)
    problems = []
    for section, body in raw.items():
        line = lines.get((str(section),))
        at = f"{where} line {line}" if line else where
        if section not in SECTIONS:
            result.warnings.append(f"{at}: section {section!r} is not part of the Daylily monitor config; ignored.")
            continue
        if body is None:
            continue
        if not isinstance(body, dict):
            problems.append(f"{at}: section {section!r} must be a mapping of keys to values, "
                            f"found a {type(body).__name__}.")
            continue
        for key, value in body.items():
            dotted_key = f"{section}.{key}"
            key_line = lines.get((str(section), str(key)))
            at = f"{where} line {key_line}" if key_line else where
            spec = _BY_KEY.get(dotted_key)
            if spec is None:
                result.warnings.append(f"{at}: {dotted_key} is not a Daylily monitor setting wsmon knows; ignored.")
                continue
            if spec.target is None:
                result.warnings.append(f"{at}: {dotted_key} is not used by wsmon ({spec.note}); ignored.")
                continue
            if value is None or value == "":
                continue  # the old monitor treated empty as "not set"
            if spec.convert is not None:
                value = spec.convert(value)
            _set(result.data, spec.target, value)
            result.origins[spec.target] = (dotted_key, key_line)
    if problems:
        raise DaylilyYamlError(problems)
    sources = result.data.get("discovery", {}).get("sources")
    if sources and "bucket" not in sources[0]:
        del result.data["discovery"]["sources"]
        result.origins.pop(("discovery", "sources", 0, "prefix"), None)
        result.warnings.append(f"{where}: monitor.prefix is set but monitor.bucket is not; "
                               "no discovery source taken from this file.")
    return result


def _set(data: dict[str, Any], target: Loc, value: Any) -> None:
    node: Any = data
    for part, nxt in zip(target, target[1:]):
        if isinstance(part, int):
            while len(node) <= part:
                node.append({})
            node = node[part]
        else:
            node = node.setdefault(part, [] if isinstance(nxt, int) else {})
    node[target[-1]] = value


def _key_lines(root: Any) -> dict[tuple[str, ...], int]:
    """Line number of each key in the first two levels of the document."""
    import yaml

    out: dict[tuple[str, ...], int] = {}
    if not isinstance(root, yaml.MappingNode):
        return out
    for key_node, value_node in root.value:
        section = str(key_node.value)
        out[(section,)] = key_node.start_mark.line + 1
        if isinstance(value_node, yaml.MappingNode):
            for sub_key, _ in value_node.value:
                out[(section, str(sub_key.value))] = sub_key.start_mark.line + 1
    return out
