"""Generates docs/configuration.md from the settings models, so the reference cannot drift.

Regenerate after adding or changing a setting:

    python -m wsmon.config.docs > docs/configuration.md

tests/test_config_docs.py fails when the file differs from this output.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

from pydantic import BaseModel
from pydantic_core import PydanticUndefined

from wsmon.config import schema
from wsmon.config.daylily_yaml import DAYLILY_KEYS

REGENERATE = "python -m wsmon.config.docs > docs/configuration.md"

INTRO = f"""\
# Configuration reference

<!-- Generated from wsmon/config/settings.py by `{REGENERATE}`. Do not edit by hand:
     tests/test_config_docs.py fails when this file is out of date. -->

## Where settings come from

wsmon merges these sources; a value from a higher one wins:

1. **Command-line flags**: `--store URL`, `--theme NAME`, `--read-only`.
2. **Environment variables**: `WSMON_<SECTION>__<NAME>` (a double underscore between parts), e.g.
   `WSMON_STORE__URL`, `WSMON_UI__REFRESH_INTERVAL`, `WSMON_ALERTS__QUEUE_DEPTH__THRESHOLD`.
   Lists and tables are written as JSON: `WSMON_DISCOVERY__ALLOWED_BUCKETS='["a", "b"]'`. An
   empty variable counts as unset. A `WSMON_` variable that is not a setting is an error, so a typo
   cannot go unnoticed.
3. **The TOML file** given with `--config PATH`, else `$XDG_CONFIG_HOME/wsmon/config.toml`
   (`~/.config/wsmon/config.toml`). A missing default file is fine; a missing `--config` file is an error.
4. **The Daylily monitor YAML** named by `daylily_yaml` (or `WSMON_DAYLILY_YAML`), see
   [below](#daylily-monitor-yaml).
5. **Defaults**, listed in the tables below.

An unknown key or a bad value stops wsmon with a list of every problem, each naming the key, the
file and line (or the environment variable) and what is allowed.

- `wsmon config show` prints the effective settings and where each value came from
  (`--json` for scripts); secrets appear as `****` (set) or `unset`.
- `wsmon config check` validates everything, including that secret files can be read and the store
  URL scheme is known; it exits 1 with the list of problems, or prints `configuration OK`.

A small config file:

```toml
[store]
url = "dynamodb://wsmon-worksets?region=us-west-2"

[[discovery.sources]]
bucket = "my-omics-bucket"
prefix = "daylily_monitoring/active_worksets/"

[runner]
kind = "ssh"

[notify]
linear_api_key_file = "/etc/wsmon/linear_api_key"
```

## Secrets

The Linear API key and the Slack webhook URL come from the environment (`WSMON_LINEAR_API_KEY`,
`WSMON_SLACK_WEBHOOK_URL`) or from a file named in the config (`notify.linear_api_key_file`,
`notify.slack_webhook_url_file`; the first non-blank line is the secret, read when the engine
builds its notification channels at start, so restart the service after rotating it). Writing them inline in the TOML file is an error unless
`notify.allow_inline_secrets = true`. AWS credentials are never configuration: wsmon uses the
standard credential chain (`aws.profile`, instance role, environment). Secrets never appear in logs,
notifications or `config show`.
"""


def _cell(text: str) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def _default(field: Any) -> str:
    extra = field.json_schema_extra if isinstance(field.json_schema_extra, dict) else {}
    if "doc_default" in extra:
        return f"`{extra['doc_default']}`"
    if field.default_factory is not None:
        value = field.default_factory()
    elif field.default is PydanticUndefined:
        return "required"
    else:
        value = field.default
    if value is None:
        return "unset"
    text = schema.toml_literal(value)
    home = str(Path.home())
    if home not in ("/", ""):
        text = text.replace(home, "~")
    return f"`{text}`"


def _env(info: schema.SettingInfo) -> str:
    names = [f"`{info.env_var}`"]
    if info.alias_env_var:
        names.insert(0, f"`{info.alias_env_var}`")
    return " or ".join(names)


def _table(rows: list[tuple[str, str, str, str, str]], headers: tuple[str, ...]) -> list[str]:
    out = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    for row in rows:
        out.append("| " + " | ".join(_cell(c) for c in row) + " |")
    return out


def _item_rows(info: schema.SettingInfo, item: type[BaseModel]) -> list[tuple[str, str, str, str, str]]:
    rows = []
    for name, field in item.model_fields.items():
        rows.append((f"`{info.dotted}[].{name}`", schema.describe_type(field.annotation)
                     + (f" {schema.bounds(field)}" if schema.bounds(field) else ""),
                     _default(field), "(part of the list)", field.description or ""))
    return rows


def render_configuration_markdown() -> str:
    lines = [INTRO, "## Settings", ""]
    headers = ("Setting", "Type", "Default", "Environment variable", "Description")
    by_section: dict[str, list[schema.SettingInfo]] = {}
    for info in schema.iter_settings():
        by_section.setdefault(info.section, []).append(info)
    descriptions = {s.dotted: s.description for s in schema.iter_sections()}
    for section, infos in by_section.items():
        lines.append(f"### {'[' + section + ']' if section else 'Top level'}")
        lines.append("")
        if descriptions.get(section):
            lines += [_cell(descriptions[section]), ""]
        rows = []
        items: list[tuple[schema.SettingInfo, type[BaseModel]]] = []
        for info in infos:
            limit = schema.bounds(info.field)
            kind = schema.describe_type(info.annotation) + (f" {limit}" if limit else "")
            rows.append((f"`{info.dotted}`", kind, _default(info.field), _env(info), info.description))
            item = schema.list_item_model(info.annotation)
            if item is not None:
                items.append((info, item))
        lines += _table(rows, headers)
        lines.append("")
        for info, item in items:
            lines.append(f"Each entry of `{info.dotted}` (`[[{info.dotted}]]` in TOML) has:")
            lines.append("")
            lines += _table(_item_rows(info, item), headers)
            lines.append("")
    lines += _daylily_section()
    return "\n".join(lines).rstrip() + "\n"


def _daylily_section() -> list[str]:
    lines = [
        "## Daylily monitor YAML",
        "",
        "Point `daylily_yaml` (or `WSMON_DAYLILY_YAML`) at the earlier Daylily monitor's YAML config and",
        "wsmon takes each key below as the wsmon setting that does the same job. Its values rank below the",
        "TOML file and the environment, so you can override any of them. A key wsmon has no use for gives",
        "one warning line (shown by `wsmon config check` and logged at start-up), never an error. Malformed",
        "YAML is an error naming the file, line and column.",
        "",
        "| Daylily key | wsmon setting | Notes |",
        "|---|---|---|",
    ]
    for key in DAYLILY_KEYS:
        target = f"`{key.target_dotted}`" if key.target else "not used (warning)"
        lines.append(f"| `{key.key}` | {_cell(target)} | {_cell(key.note)} |")
    lines.append("")
    return lines


def main() -> None:
    sys.stdout.write(render_configuration_markdown())


if __name__ == "__main__":
    main()
