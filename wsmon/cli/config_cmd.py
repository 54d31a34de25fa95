"""``wsmon config show`` and ``wsmon config check``: what wsmon will run with, and whether it can.

``show`` prints every effective setting with where its value came from (default, file, env,
flag, Daylily YAML); secrets appear only as ``****`` (set) or ``unset``. ``check`` validates the
config file, the environment and the Daylily YAML, then what validation cannot see (secret files
readable, store URL scheme known) and exits 1 with the list of problems, or 0.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import click

from wsmon.cli.context import CliContext

if TYPE_CHECKING:
    from wsmon.config.settings import Settings

UNSET = "unset"


@click.group("config")
def config() -> None:
    """Show or check the effective configuration."""


def _load(ctx: click.Context) -> Settings:
    obj = ctx.ensure_object(CliContext)
    return obj.settings()


def _shown_value(info: Any, value: Any) -> Any:
    """The value as `config show` may print it: secrets masked, secret-looking text redacted."""
    from wsmon.config.schema import MASK
    from wsmon.core.redaction import redact_value

    if value is None:
        return None
    if info.is_secret:
        return MASK
    if hasattr(value, "model_dump"):
        value = value.model_dump(mode="json")
    elif isinstance(value, list):
        value = [v.model_dump(mode="json") if hasattr(v, "model_dump") else v for v in value]
    elif not isinstance(value, (str, int, float, bool, dict)):
        value = str(value)
    return redact_value(value)


def _effective(settings: Settings) -> list[tuple[Any, Any, str]]:
    from wsmon.config.schema import iter_settings

    rows = []
    for info in iter_settings():
        value: Any = settings
        for part in info.path:
            value = getattr(value, part)
        rows.append((info, _shown_value(info, value), settings.source_of(info.dotted)))
    return rows


@config.command("show")
@click.option("--json", "as_json", is_flag=True, help="Print JSON: settings, their sources and warnings.")
@click.pass_context
def show(ctx: click.Context, as_json: bool) -> None:
    """Print the effective settings and where each value came from (secrets masked)."""
    from wsmon.config.aws_region import aws_region, store_region

    settings = _load(ctx)
    rows = _effective(settings)
    info = settings.load_info
    config_file = info.config_file if info else None
    searched = info.config_file_searched if info else None
    daylily = info.daylily_yaml if info else None
    if as_json:
        nested: dict[str, Any] = {}
        for setting, value, _ in rows:
            node = nested
            for part in setting.path[:-1]:
                node = node.setdefault(part, {})
            node[setting.name] = value
        click.echo(json.dumps({
            "config_file": str(config_file) if config_file else None,
            "config_file_searched": str(searched) if searched else None,
            "daylily_yaml": str(daylily) if daylily else None,
            "store_url": _shown_url(settings.store_url),
            "aws_region": _region_json(aws_region, settings),
            "store_region": _region_json(store_region, settings),
            "monitor_id": settings.effective_monitor_id,
            "settings": nested,
            "sources": {setting.dotted: source for setting, _, source in rows},
            "warnings": settings.config_warnings,
        }, indent=2, ensure_ascii=False))
        return

    from wsmon.config.schema import toml_key, toml_literal

    lines = ["# wsmon effective configuration",
             "# sources, highest first: flags, WSMON_* environment, config file, Daylily YAML, defaults"]
    if config_file:
        lines.append(f"# config file: {config_file}")
    elif searched:
        lines.append(f"# config file: none ({searched} not found)")
    if daylily:
        lines.append(f"# Daylily monitor config: {daylily}")
    lines.append(f"# store URL in use: {_shown_url(settings.store_url)}")
    lines.append(f"# AWS region in use: {_region_text(aws_region, settings)}")
    if settings.store_url.lower().startswith("dynamodb:"):
        lines.append(f"# store region in use: {_region_text(store_region, settings)}")
    lines.append(f"# monitor id in use: {settings.effective_monitor_id}")
    for warning in settings.config_warnings:
        lines.append(f"# warning: {warning}")

    section = None
    block: list[tuple[str, str]] = []

    def flush() -> None:
        if not block:
            return
        width = min(max(len(text) for text, _ in block), 60)
        for text, source in block:
            lines.append(f"{text.ljust(width)}  # {source}")
        block.clear()

    for setting, value, source in rows:
        if setting.section != section:
            flush()
            section = setting.section
            lines.append("")
            if section:
                lines.append(f"[{section}]")
        shown = UNSET if value is None else toml_literal(value)
        block.append((f"{toml_key(setting.name)} = {shown}", source))
    flush()
    click.echo("\n".join(lines))


def _region_json(resolve: Any, settings: Settings) -> dict[str, str] | None:
    from wsmon.core.aws import NoRegion

    try:
        region = resolve(settings)
    except NoRegion:
        return None
    return None if region is None else {"name": region.name, "source": region.source}


def _region_text(resolve: Any, settings: Settings) -> str:
    from wsmon.core.aws import HOW_TO_SET_REGION

    region = _region_json(resolve, settings)
    return f"{region['name']} (from {region['source']})" if region else f"none set; {HOW_TO_SET_REGION}"


def _shown_url(url: str) -> str:
    from wsmon.core.redaction import redact

    return redact(url)


@config.command("check")
@click.pass_context
def check(ctx: click.Context) -> None:
    """Validate the configuration; exit 1 with a list of problems, 0 when it is usable."""
    from wsmon.config import ConfigError, load_settings
    from wsmon.config.loader import audit

    obj = ctx.ensure_object(CliContext)
    try:
        settings = load_settings(obj.config_path, obj.overrides)
    except ConfigError as exc:
        _report_problems(exc.problems)
        ctx.exit(1)
        return
    from wsmon.engine.runner.templates import describe_commands

    problems, warnings = audit(settings)
    modes, command_warnings = describe_commands(settings)
    for warning in warnings + command_warnings:
        click.echo(f"warning: {warning}")
    for line in modes:
        click.echo(f"command {line}")
    if problems:
        _report_problems(problems)
        ctx.exit(1)
        return
    info = settings.load_info
    checked = [f"config file {info.config_file}" if info and info.config_file else "no config file"]
    if info and info.daylily_yaml:
        checked.append(f"Daylily monitor config {info.daylily_yaml}")
    checked.append("WSMON_* environment")
    click.echo(f"configuration OK ({', '.join(checked)})")


def _report_problems(problems: list[str]) -> None:
    count = len(problems)
    click.echo(f"configuration has {count} problem{'s' if count != 1 else ''}:")
    for problem in problems:
        click.echo(f"  - {problem}")
