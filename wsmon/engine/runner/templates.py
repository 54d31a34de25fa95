"""Command templates from ``settings.runner``, in one of two modes (``template_mode``):

* **argv**: a list, or a string without shell syntax. Split into words once; placeholders are
  filled per word, so a value read from S3 is always exactly one argument and never meets a shell.
* **shell**: a string that uses shell syntax (``&&``, ``||``, ``;``, ``|``, redirections,
  subshells, ``$``, backticks, ``source``/``.``), as the earlier Daylily monitor's templates do
  (``echo cloning && day-clone {clone_args}``). The operator's template is trusted and runs through
  ``bash -lc`` as it did there; every substituted value is ``shlex.quote``'d (a list value word by
  word), so a value from S3 still stays data. ``${VAR}`` is shell, not a placeholder.

An empty value never becomes an empty argument: a placeholder that is a word of its own and has no
value is left out, and so is the option right before it (``--profile {profile}`` with no AWS
profile gives neither ``--profile`` nor ``''``), so the called program uses its own default.
``wsmon config check`` names each command's mode and warns about placeholders that are empty.

The pipeline's shell text is ``run_prefix`` (shell, trusted) with every run suffix token
``shlex.quote``'d."""

from __future__ import annotations

import os
import re
import shlex
from pathlib import Path
from typing import TYPE_CHECKING, Any

from wsmon.config.aws_region import aws_region_name
from wsmon.core.models import Workset
from wsmon.engine.runner.base import StepFailed, sanitise

if TYPE_CHECKING:
    from wsmon.config.settings import Settings


UNSAFE_TOKEN = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


# -- command templates ----------------------------------------------------------------------

class TemplateError(ValueError):
    """A runner template is invalid (the text says so, classified WS-CFG-014)."""


def _template_tokens(template: list[str] | str) -> list[str]:
    if isinstance(template, str):
        try:
            tokens = shlex.split(template)
        except ValueError as exc:
            raise TemplateError(f"invalid command template {template!r}: {exc}") from None
    else:
        tokens = [str(t) for t in template]
    if not tokens:
        raise TemplateError("invalid command template: empty")
    return tokens


def check_token(token: str, what: str) -> str:
    if UNSAFE_TOKEN.search(token):
        raise StepFailed("validate", f"WS-CFG-010 control characters in {what}: {token!r}",
                         retryable=False)
    return token


_PLACEHOLDER = re.compile(r"(?<!\$)\{(\w+)\}")
# what a shell would interpret in the template text itself (placeholders removed first)
_SHELL_SYNTAX = re.compile(r"&&|\|\||[;|&<>()`$\n]|(?:^|\s)(?:\.|source)\s")
# an option and the placeholder that is its value: "--profile {profile}", "-p {x}", "--pem={x}"
_OPTION_THEN_PLACEHOLDER = re.compile(r"(?:(?<=\s)|^)-{1,2}[A-Za-z0-9][\w.-]*(?:\s+|=)(?<!\$)\{(\w+)\}(?=\s|$|[;&|)])")
_LONE_PLACEHOLDER = re.compile(r"(?:(?<=\s)|^)(?<!\$)\{(\w+)\}(?=\s|$|[;&|)])")


def template_mode(template: list[str] | str | None) -> str:
    """``"shell"`` for a string template that uses shell syntax, ``"argv"`` otherwise."""
    if not isinstance(template, str):
        return "argv"
    return "shell" if _SHELL_SYNTAX.search(_PLACEHOLDER.sub("x", template)) else "argv"


def is_empty(value: Any) -> bool:
    return value is None or value == "" or value == []


def expand(template: list[str] | str, values: dict[str, Any]) -> list[str]:
    """Fill an argv template token by token. A token that is exactly ``{name}`` with a list value
    becomes that many arguments; with no value it is left out, with the template's option right
    before it; otherwise values are substituted as text into one argument. ``~/`` at the start of
    a template token (config, trusted) is expanded."""
    out: list[str] = []
    option_at: int | None = None  # index in ``out`` of a literal "-x"/"--x" from the template
    for token in _template_tokens(template):
        whole = re.fullmatch(r"\{(\w+)\}", token)
        if whole and whole.group(1) in values and is_empty(values[whole.group(1)]):
            if option_at is not None and option_at == len(out) - 1:
                out.pop()
            option_at = None
            continue
        if whole and isinstance(values.get(whole.group(1)), list):
            out.extend(check_token(str(v), whole.group(1)) for v in values[whole.group(1)])
            option_at = None
            continue
        if token.startswith("~/"):
            token = os.path.expanduser(token)

        def fill(match: re.Match[str]) -> str:
            key = match.group(1)
            if key not in values:
                raise TemplateError(f"unknown placeholder {{{key}}} in command template {template!r}")
            value = values[key]
            if isinstance(value, list):
                value = " ".join(str(v) for v in value)
            return check_token("" if value is None else str(value), key)

        literal_option = token.startswith("-") and len(token) > 1 and not _PLACEHOLDER.search(token)
        out.append(re.sub(r"\{(\w+)\}", fill, token))
        option_at = len(out) - 1 if literal_option else None
    return out


def render_shell(template: str, values: dict[str, Any]) -> str:
    """A shell-mode template as shell text: each value ``shlex.quote``'d (a list word by word),
    an empty value left out with the option before it."""
    for match in _PLACEHOLDER.finditer(template):
        if match.group(1) not in values:
            raise TemplateError(f"unknown placeholder {{{match.group(1)}}} in command template "
                                f"{template!r}")

    def drop_if_empty(match: re.Match[str]) -> str:
        return "" if is_empty(values[match.group(1)]) else match.group(0)

    text = _OPTION_THEN_PLACEHOLDER.sub(drop_if_empty, template)
    text = _LONE_PLACEHOLDER.sub(drop_if_empty, text)

    def fill(match: re.Match[str]) -> str:
        key = match.group(1)
        value = values[key]
        if isinstance(value, list):
            return " ".join(shlex.quote(check_token(str(v), key)) for v in value)
        return shlex.quote(check_token("" if value is None else str(value), key))

    return _PLACEHOLDER.sub(fill, text)


def step_command(template: list[str] | str, values: dict[str, Any]) -> list[str]:
    """The argv a step runs: the template's words, or ``bash -lc TEXT`` in shell mode."""
    if template_mode(template) == "shell":
        assert isinstance(template, str)
        return ["bash", "-lc", render_shell(template, values)]
    return expand(template, values)


def run_suffix_tokens(workset: Workset) -> list[str]:
    work = (workset.metadata or {}).get("work") or {}
    suffix = work.get("run_suffix") if isinstance(work, dict) else None
    if isinstance(suffix, str):
        suffix = shlex.split(suffix)
    if not suffix:
        raise StepFailed("run", "WS-CFG-003 no run suffix in daylily_work.yaml (dy-r)",
                         retryable=False)
    return [check_token(str(t), "run suffix") for t in suffix]


def pipeline_command(settings: Settings, workset: Workset, values: dict[str, Any]) -> str:
    """The shell text the tmux session runs. Daylily compatibility: ``run_prefix`` followed by
    the run suffix tokens, each quoted, exactly as the earlier monitor built it."""
    cfg = settings.runner
    # login_shell_init is operator config (trusted), e.g. conda or module setup
    init = f"{cfg.login_shell_init.strip()}\n" if getattr(cfg, "login_shell_init", None) else ""
    if cfg.run_command:
        return init + shlex.join(expand(cfg.run_command, values))
    if cfg.run_prefix is None:
        raise TemplateError("invalid command template: set runner.run_prefix or runner.run_command")
    prefix = cfg.run_prefix
    if prefix and not prefix.endswith(" "):
        prefix += " "
    return init + prefix + " ".join(shlex.quote(t) for t in run_suffix_tokens(workset))


def template_values(settings: Settings, workset: Workset, pipeline_dir: str | None,
                    local_dir: Path) -> dict[str, Any]:
    work = (workset.metadata or {}).get("work") or {}
    work = work if isinstance(work, dict) else {}
    clone_args = work.get("clone_args") or []
    if isinstance(clone_args, str):
        clone_args = shlex.split(clone_args)
    cluster = workset.cluster_name or work.get("cluster_name") or ""
    s3_uri = (workset.metadata or {}).get("s3_uri") or f"s3://{workset.bucket}/{workset.prefix}"
    export_uri = work.get("export_uri") or ""
    cfg = settings.runner
    values: dict[str, Any] = {
        "workset": workset.workset_id,
        "workset_id": workset.workset_id,
        "workset_safe": sanitise(workset.workset_id),
        "workdir": cfg.workdir,
        "workdir_name": work.get("workdir_name") or sanitise(workset.workset_id),
        "bucket": workset.bucket,
        "prefix": workset.prefix,
        "s3_uri": s3_uri,
        "clone_args": [str(a) for a in clone_args],
        "cluster": cluster,
        "export_uri": export_uri,
        "target_uri": export_uri,
        "pipeline_dir": pipeline_dir or "",
        "analysis_samples": str(local_dir / "stage_samples.tsv"),
        "stage_samples": str(local_dir / "stage_samples.tsv"),
        "local_dir": str(local_dir),
        "profile": settings.aws.profile or "",
        "region": aws_region_name(settings) or "",  # AWS_REGION and the profile count too
        "local_stage_root": getattr(cfg, "local_stage_root", None) or "",
        "reference_bucket": getattr(cfg, "reference_bucket", None) or "",
    }
    for key in ("workset", "workdir_name", "cluster", "export_uri"):
        check_token(str(values[key]), key)
    return values


# placeholders whose value comes from config alone, and the setting that gives it
CONFIG_PLACEHOLDERS = {"profile": "aws.profile", "region": "aws.region", "workdir": "runner.workdir",
                       "local_stage_root": "runner.local_stage_root",
                       "reference_bucket": "runner.reference_bucket"}
_QUOTED_PLACEHOLDER = re.compile(r"""(["'])[^"']*(?<!\$)\{\w+\}[^"']*\1""")


def describe_commands(settings: Settings) -> tuple[list[str], list[str]]:
    """For ``wsmon config check``: one line per step saying how its command runs, and warnings
    (a config placeholder with no value, a quoted placeholder in a shell template)."""
    cfg = settings.runner
    config_values = {"profile": settings.aws.profile, "region": aws_region_name(settings),
                     "workdir": cfg.workdir, "local_stage_root": cfg.local_stage_root,
                     "reference_bucket": cfg.reference_bucket}
    lines: list[str] = []
    warnings: list[str] = []
    for step in ("stage", "clone", "run", "export"):
        key = f"runner.{step}_command"
        template: Any = getattr(cfg, f"{step}_command", None)
        if step == "run" and not template:
            if cfg.run_prefix is None:
                lines.append("run: not configured (set runner.run_prefix or runner.run_command)")
                continue
            key, template = "runner.run_prefix", cfg.run_prefix
            lines.append("run: shell (bash in tmux): runner.run_prefix followed by the workset's "
                         "run suffix, each word shell-quoted")
        elif not template:
            lines.append(f"{step}: not configured ("
                         + ("the pipeline runs in the work directory" if step == "clone"
                            else "step skipped") + ")")
            continue
        else:
            mode = template_mode(template)
            how = ("through bash -lc, every value shell-quoted" if mode == "shell"
                   else "as argv, each value exactly one argument, no shell")
            lines.append(f"{step}: {mode} mode, runs {how}")
        text = template if isinstance(template, str) else " ".join(str(t) for t in template)
        for name in dict.fromkeys(_PLACEHOLDER.findall(text)):
            if name in config_values and is_empty(config_values[name]):
                warnings.append(f"{key}: {{{name}}} is empty ({CONFIG_PLACEHOLDERS[name]} is not "
                                "set): it is left out, with the option right before it")
        if isinstance(template, str) and template_mode(template) == "shell" \
                and _QUOTED_PLACEHOLDER.search(template):
            warnings.append(f"{key}: a placeholder inside quotes: wsmon quotes every value "
                            "itself, so the quotes become part of the argument; write it bare")
    return lines, warnings
