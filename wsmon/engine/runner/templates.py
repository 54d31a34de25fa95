"""Argv templates from ``settings.runner``: placeholders filled per token, so a value read from S3 is
always exactly one argument and never meets a shell; the pipeline's shell text with every run
suffix token ``shlex.quote``'d."""

from __future__ import annotations

import os
import re
import shlex
from pathlib import Path
from typing import TYPE_CHECKING, Any

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


def expand(template: list[str] | str, values: dict[str, Any]) -> list[str]:
    """Fill a template token by token. A token that is exactly ``{name}`` with a list value
    becomes that many arguments; otherwise values are substituted as text into one argument.
    ``~/`` at the start of a template token (config, trusted) is expanded."""
    out: list[str] = []
    for token in _template_tokens(template):
        whole = re.fullmatch(r"\{(\w+)\}", token)
        if whole and isinstance(values.get(whole.group(1)), list):
            out.extend(check_token(str(v), whole.group(1)) for v in values[whole.group(1)])
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

        out.append(re.sub(r"\{(\w+)\}", fill, token))
    return out


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
        "region": settings.aws.region or "",
        "local_stage_root": getattr(cfg, "local_stage_root", None) or "",
        "reference_bucket": getattr(cfg, "reference_bucket", None) or "",
    }
    for key in ("workset", "workdir_name", "cluster", "export_uri"):
        check_token(str(values[key]), key)
    return values
