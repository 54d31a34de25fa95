"""Reading settings from every source, in precedence order, and explaining what went wrong.

Sources, highest first: command-line flags (``overrides``), ``WSMON_*`` environment variables,
the TOML file, the Daylily monitor YAML (``daylily_yaml``), defaults. pydantic-settings merges
them through ``Settings.settings_customise_sources``; this module reads each source once, keeps
where every value came from (``wsmon config show``) and turns validation errors into sentences that
name the key, the place it was set and what is allowed.
"""

from __future__ import annotations

import copy
import difflib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
import typing
from typing import Any

from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo
from pydantic_settings import PydanticBaseSettingsSource, TomlConfigSettingsSource

from wsmon.config import schema
from wsmon.config.aws_region import region_problem
from wsmon.config.settings import LOADING_SOURCES, SECRET_SETTINGS, ConfigError, Settings, default_config_path
from wsmon.config.schema import Loc
from wsmon.config.daylily_yaml import DaylilyValues, DaylilyYamlError, looks_like_daylily_yaml, read_daylily_yaml
from wsmon.core.store_url import store_url_problem

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

# ---- where values came from ---------------------------------------------------------------------


@dataclass(frozen=True)
class Origin:
    label: str  # for `config show`: "file PATH", "env VAR", "flag", "daylily yaml PATH (key)"
    where: str  # for problems: "PATH line 7", "environment variable WSMON_X", ...
    kind: str   # "flag" | "env" | "file" | "daylily"
    file_lines: dict[Loc, int] | None = field(default=None, compare=False, repr=False)

    def where_for(self, path: Loc) -> str:
        """``where``, with the line of ``path`` itself when the value is deeper than what was recorded."""
        if self.file_lines is None:
            return self.where
        line = _line_for(self.file_lines, path)
        base = self.where.split(" line ", 1)[0]
        return base + (f" line {line}" if line else "")


@dataclass
class Layer:
    """What one source supplied: nested values plus the origin of each value it set."""

    kind: str
    origins: dict[Loc, Origin] = field(default_factory=dict)

    def touching(self, path: Loc) -> Origin | None:
        """The origin of the value at ``path`` if this layer set it, set a parent of it, or set part of it."""
        for cut in range(len(path), 0, -1):
            origin = self.origins.get(tuple(path[:cut]))
            if origin is not None:
                return origin
        for recorded, origin in self.origins.items():
            if recorded[: len(path)] == tuple(path):
                return origin
        return None


class Provenance:
    """The layers of one load, highest precedence first."""

    def __init__(self, layers: list[Layer]) -> None:
        self.layers = layers

    def origin(self, path: Loc) -> Origin | None:
        for layer in self.layers:
            found = layer.touching(path)
            if found is not None:
                return found
        return None

    def label(self, path: Loc) -> str:
        found = self.origin(path)
        return found.label if found else "default"


def _record_leaves(data: Any, path: Loc, make: Any, out: dict[Loc, Origin]) -> None:
    if isinstance(data, dict) and data:
        for key, value in data.items():
            _record_leaves(value, path + (key,), make, out)
    elif path:
        out[path] = make(path)


# ---- the sources --------------------------------------------------------------------------------


class _LayerSource(PydanticBaseSettingsSource):
    """A source whose values were read before validation started."""

    data: dict[str, Any]
    layer: Layer

    def get_field_value(self, field: FieldInfo, field_name: str) -> tuple[Any, str, bool]:
        return None, field_name, False  # __call__ hands over the whole mapping at once

    def __call__(self) -> dict[str, Any]:
        return copy.deepcopy(self.data)


class EnvironmentSource(_LayerSource):
    """``WSMON_<SECTION>__<NAME>`` variables; lists and tables as JSON. Unknown names are problems."""

    def __init__(self, settings_cls: type[Settings], environ: dict[str, str]) -> None:
        super().__init__(settings_cls)
        self.data = {}
        self.layer = Layer("env")
        self.problems: list[str] = []
        aliases = {info.alias_env_var: info.path for info in schema.iter_settings() if info.alias_env_var}
        for name in sorted(environ):
            upper = name.upper()
            value = environ[name]
            if not upper.startswith(schema.ENV_PREFIX) or value == "":
                continue
            where = f"environment variable {name}"
            if upper in aliases:
                path: Loc | None = aliases[upper]
                leaf = schema.find_setting(aliases[upper])
            else:
                path, leaf = self._resolve(name)
            if path is None:
                self.problems.append(self._unknown(name, aliases))
                continue
            parsed = self._parse(name, value, leaf)
            if parsed is _INVALID:
                continue
            _set_path(self.data, path, parsed)
            self.layer.origins[path] = Origin(f"env {name}", where, "env")

    @staticmethod
    def _resolve(name: str) -> tuple[Loc | None, schema.SettingInfo | None]:
        segments = name[len(schema.ENV_PREFIX):].split(schema.ENV_DELIMITER)
        model: type[BaseModel] = Settings
        path: list[str | int] = []
        for index, segment in enumerate(segments):
            key = segment.lower()
            if key not in model.model_fields:
                return None, None
            path.append(key)
            annotation = model.model_fields[key].annotation
            nested = schema.section_model(annotation)
            if nested is not None:
                model = nested
                continue
            rest = segments[index + 1:]
            leaf = schema.find_setting(tuple(str(p) for p in path))
            if not rest:
                return tuple(path), leaf
            if len(rest) == 1 and _is_table(annotation):
                return tuple(path) + (rest[0],), None  # one entry of a table, key case kept
            return None, None
        return tuple(path), None  # a whole section as JSON

    def _parse(self, name: str, value: str, leaf: schema.SettingInfo | None) -> Any:
        annotation = leaf.annotation if leaf else dict
        if not schema.is_structured(annotation):
            return value
        try:
            return json.loads(value)
        except json.JSONDecodeError as exc:
            if leaf is not None and schema.accepts_plain_string(annotation):
                return value
            what = f"{leaf.dotted} ({schema.describe_type(annotation)})" if leaf else "a whole section"
            self.problems.append(
                f"environment variable {name}: {what} must be written as JSON, e.g. "
                f"'[\"a\", \"b\"]' for a list or '{{\"key\": \"value\"}}' for a table "
                f"(the value is not JSON: {exc.msg} at character {exc.pos}).")
            return _INVALID

    @staticmethod
    def _unknown(name: str, aliases: dict[str, Loc]) -> str:
        known = [info.env_var for info in schema.iter_settings()] + list(aliases)
        guess = difflib.get_close_matches(name.upper(), known, n=1, cutoff=0.75)
        hint = (f"did you mean {guess[0]}?" if guess else
                "settings are spelled WSMON_<SECTION>__<NAME> with a double underscore, "
                "e.g. WSMON_STORE__URL (see docs/configuration.md).")
        return f"environment variable {name} is not a wsmon setting; {hint}"


_INVALID = object()


def _is_table(annotation: Any) -> bool:
    return typing.get_origin(schema.unwrap_optional(annotation)) is dict


class ConfigFileSource(TomlConfigSettingsSource):
    """The TOML file; read through pydantic-settings, with line numbers kept for messages."""

    def __init__(self, settings_cls: type[Settings], path: Path) -> None:
        self.path = path
        self.key_lines: dict[Loc, int] = {}
        super().__init__(settings_cls, toml_file=path)
        self.layer = Layer("file")
        _record_leaves(self.toml_data, (), self._origin, self.layer.origins)

    def _read_file(self, file_path: Path) -> dict[str, Any]:  # type: ignore[override]
        try:
            text = Path(file_path).read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
            raise ConfigError([f"config file {file_path}: cannot be read: {reason}."]) from None
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            if looks_like_daylily_yaml(text):
                raise ConfigError([
                    f"config file {file_path}: this looks like a Daylily monitor YAML, not a wsmon TOML "
                    f"config: use --daylily-yaml {file_path} (or daylily_yaml = \"{file_path}\" in a TOML "
                    "config)."]) from None
            raise ConfigError([f"config file {file_path}: not valid TOML: {exc}."]) from None
        self.key_lines = _toml_key_lines(text)
        return data

    def _origin(self, path: Loc) -> Origin:
        line = _line_for(self.key_lines, path)
        return Origin(f"file {self.path}", f"{self.path}" + (f" line {line}" if line else ""), "file",
                      self.key_lines)


class DaylilyYamlSource(_LayerSource):
    def __init__(self, settings_cls: type[Settings], values: DaylilyValues) -> None:
        super().__init__(settings_cls)
        self.data = values.data
        self.layer = Layer("daylily")
        for path, (key, line) in values.origins.items():
            where = f"Daylily monitor config {values.path}" + (f" line {line}" if line else "") + f" ({key})"
            self.layer.origins[path] = Origin(f"daylily yaml {values.path} ({key})", where, "daylily")


def _set_path(data: dict[str, Any], path: Loc, value: Any) -> None:
    node = data
    for part in path[:-1]:
        node = node.setdefault(part, {})
    node[path[-1]] = value


# ---- TOML line numbers (best effort: tables, array-of-tables and key = value lines) -------------


def _split_dotted(text: str) -> list[str]:
    parts, current, quote = [], "", ""
    for char in text:
        if quote:
            if char == quote:
                quote = ""
            else:
                current += char
        elif char in "\"'":
            quote = char
        elif char == ".":
            parts.append(current.strip())
            current = ""
        else:
            current += char
    parts.append(current.strip())
    return parts


def _toml_key_lines(text: str) -> dict[Loc, int]:
    import re

    lines: dict[Loc, int] = {}
    table: Loc = ()
    array_counts: dict[Loc, int] = {}
    header = re.compile(r"^\[(\[?)\s*([^\]]+?)\s*\]\]?\s*(#.*)?$")
    assignment = re.compile(r"^((?:[A-Za-z0-9_-]+|\"[^\"]*\"|'[^']*')(?:\s*\.\s*(?:[A-Za-z0-9_-]+|\"[^\"]*\"|'[^']*'))*)\s*=")
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        match = header.match(line)
        if match:
            path = tuple(_split_dotted(match.group(2)))
            if match.group(1):  # [[array.of.tables]]
                index = array_counts.get(path, 0)
                array_counts[path] = index + 1
                lines.setdefault(path, number)
                table = path + (index,)
            else:
                table = path
            lines.setdefault(table, number)
            continue
        match = assignment.match(line)
        if match:
            lines.setdefault(table + tuple(_split_dotted(match.group(1))), number)
    return lines


def _line_for(lines: dict[Loc, int], path: Loc) -> int | None:
    for cut in range(len(path), 0, -1):
        if tuple(path[:cut]) in lines:
            return lines[tuple(path[:cut])]
    return None


# ---- loading ------------------------------------------------------------------------------------


@dataclass
class LoadInfo:
    """Attached to the Settings a load produced: provenance, warnings, the files that were read."""

    provenance: Provenance
    warnings: list[str]
    config_file: Path | None
    config_file_searched: Path
    daylily_yaml: Path | None


def load_settings(config_path: Path | str | None = None, overrides: dict[str, Any] | None = None,
                  *, env: dict[str, str] | None = None) -> Settings:
    """Load settings from all sources. Raises ``ConfigError`` listing every problem."""
    overrides = overrides or {}
    environ = dict(os.environ) if env is None else dict(env)
    problems: list[str] = []
    warnings: list[str] = []

    flags = Layer("flag")
    _record_leaves(overrides, (), lambda p: Origin("flag", f"command-line flag ({schema.dotted(p)})", "flag"),
                   flags.origins)

    env_source = EnvironmentSource(Settings, environ)
    problems += env_source.problems

    searched = Path(config_path).expanduser() if config_path else default_config_path(environ)
    file_source: ConfigFileSource | None = None
    if searched.is_file():
        try:
            file_source = ConfigFileSource(Settings, searched)
        except ConfigError as exc:
            problems += exc.problems
    elif config_path:
        what = "is a directory" if searched.is_dir() else "does not exist"
        problems.append(f"config file {searched} (given with --config) {what}.")

    daylily_source: DaylilyYamlSource | None = None
    daylily_path = _first_value(("daylily_yaml",), overrides, env_source, file_source)
    if daylily_path:
        resolved = Path(str(daylily_path)).expanduser()
        try:
            values = read_daylily_yaml(resolved)
        except DaylilyYamlError as exc:
            problems += exc.problems
        else:
            daylily_source = DaylilyYamlSource(Settings, values)
            warnings += values.warnings

    layered = [s for s in (env_source, file_source, daylily_source) if s is not None]
    provenance = Provenance([flags] + [s.layer for s in layered])

    settings: Settings | None = None
    token = LOADING_SOURCES.set(tuple(layered))
    try:
        settings = Settings(**copy.deepcopy(overrides))
    except ValidationError as exc:
        problems += describe_validation_error(exc, provenance)
    finally:
        LOADING_SOURCES.reset(token)

    problems += _inline_secret_problems(provenance, overrides, env_source, file_source)
    if problems:
        raise ConfigError(list(dict.fromkeys(problems)))
    assert settings is not None
    warnings += _secret_warnings(settings, provenance)
    settings._load_info = LoadInfo(
        provenance=provenance, warnings=warnings,
        config_file=searched if file_source is not None else None, config_file_searched=searched,
        daylily_yaml=daylily_source and Path(str(daylily_path)).expanduser())
    return settings


def _first_value(path: tuple[str, ...], overrides: dict[str, Any], *sources: Any) -> Any:
    for data in (overrides, *(getattr(s, "data", None) or getattr(s, "toml_data", None) for s in sources if s)):
        node: Any = data
        for part in path:
            node = node.get(part) if isinstance(node, dict) else None
        if node not in (None, ""):
            return node
    return None


# ---- explaining problems ------------------------------------------------------------------------

_TOO_SMALL = {"greater_than", "greater_than_equal"}
_TOO_LARGE = {"less_than", "less_than_equal"}


def describe_validation_error(exc: ValidationError, provenance: Provenance) -> list[str]:
    return list(dict.fromkeys(_describe(error, provenance) for error in exc.errors()))


def _describe(error: Any, provenance: Provenance) -> str:
    located = schema.locate(tuple(error["loc"]))
    path = located.path
    key = schema.dotted(path)
    origin = provenance.origin(path)
    where = origin.where_for(path) if origin else "built-in default"
    kind = error["type"]

    if kind == "extra_forbidden":
        name = str(path[-1])
        parent = path[:-1]
        guess = difflib.get_close_matches(name, located.known_names, n=1, cutoff=0.6)
        if origin is not None and origin.kind == "env":
            return f"{where} is not a wsmon setting."  # normally caught earlier, with a suggestion
        scope = f"Settings allowed in [{schema.dotted(parent)}]" if parent else "Top-level settings and sections"
        hint = f" Did you mean {schema.dotted(parent + (guess[0],))!r}?" if guess else ""
        return f"{where}: unknown setting {key!r}.{hint} {scope}: {', '.join(located.known_names)}."

    secret = located.field is not None and _is_secret_field(located.field)
    shown = _show(error.get("input"), secret, raw=bool(origin and origin.kind == "env"))
    allowed = schema.allowed(located.field) if located.field is not None else ""
    if kind == "missing":
        return f"{where}: {key} is required" + (f"; it must be {allowed}." if allowed else ".")
    if kind == "literal_error":
        values = ", ".join(json.dumps(v) for v in schema.literal_values(located.field.annotation)) \
            if located.field is not None else str(error.get("ctx", {}).get("expected", ""))
        return f"{where}: {key} = {shown} is not allowed; allowed values: {values}."
    if kind in _TOO_SMALL or kind in _TOO_LARGE:
        size = "too small" if kind in _TOO_SMALL else "too large"
        return f"{where}: {key} = {shown} is {size}; it must be {allowed}."
    if kind.endswith("_parsing") or kind.endswith("_type") or kind in ("int_from_float", "url_parsing"):
        return f"{where}: {key} = {shown} has the wrong type; it must be {allowed}."
    detail = error.get("msg", "is not valid")
    return f"{where}: {key} = {shown}: {detail}" + (f"; it must be {allowed}." if allowed else ".")


def _is_secret_field(field_info: FieldInfo) -> bool:
    extra = field_info.json_schema_extra
    return (isinstance(extra, dict) and bool(extra.get("secret"))) or "SecretStr" in str(field_info.annotation)


def _show(value: Any, secret: bool, *, raw: bool) -> str:
    if secret:
        return schema.MASK
    if raw and isinstance(value, str):
        text = value
    else:
        try:
            text = schema.toml_literal(value)
        except Exception:
            text = repr(value)
    from wsmon.core.redaction import redact

    text = redact(text)
    return text if len(text) <= 80 else text[:77] + "..."


def _inline_secret_problems(provenance: Provenance, overrides: dict[str, Any],
                            env_source: EnvironmentSource, file_source: ConfigFileSource | None) -> list[str]:
    if file_source is None:
        return []
    allow = _first_value(("notify", "allow_inline_secrets"), overrides, env_source, file_source)
    if str(allow).lower() in ("true", "1", "yes", "on"):
        return []
    problems = []
    for spec in SECRET_SETTINGS:
        origin = file_source.layer.origins.get(spec.path)
        if origin is None:
            continue
        problems.append(
            f"{origin.where}: {schema.dotted(spec.path)} is written inline in the config file, where it is "
            f"easily copied or committed. Put it in the environment ({spec.env_var}) or in a file named by "
            f"{schema.dotted(spec.file_path)}; or set notify.allow_inline_secrets = true to accept it.")
    return problems


def _secret_warnings(settings: Settings, provenance: Provenance) -> list[str]:
    out = []
    for spec in SECRET_SETTINGS:
        value_origin = provenance.origin(spec.path)
        file_origin = provenance.origin(spec.file_path)
        if value_origin is not None and file_origin is not None:
            out.append(f"{schema.dotted(spec.path)} is set ({value_origin.label}) and so is "
                       f"{schema.dotted(spec.file_path)} ({file_origin.label}); the file is not read.")
    return out


# ---- checks beyond validation (wsmon config check) ----------------------------------------------


def audit(settings: Settings) -> tuple[list[str], list[str]]:
    """Problems and warnings a valid configuration can still have: unreadable secret files,
    an unknown store scheme, a missing SSH key, nothing to watch."""
    from wsmon.config.settings import resolve_secret

    problems: list[str] = []
    warnings: list[str] = list(settings.config_warnings)
    for spec in SECRET_SETTINGS:
        try:
            resolve_secret(spec.name, settings)
        except ConfigError as exc:
            problems += exc.problems

    region = region_problem(settings)
    if region:
        problems.append(region)
    url_problem = store_url_problem(settings.store_url)
    if url_problem:
        problems.append(f"store.url ({settings.source_of('store.url')}): {url_problem}")

    identity = settings.runner.ssh_identity_file
    if identity is not None and not Path(identity).expanduser().is_file():
        problems.append(f"runner.ssh_identity_file ({settings.source_of('runner.ssh_identity_file')}): "
                        f"{identity} does not exist or is not a file.")
    state_dir = Path(settings.state_dir).expanduser()
    existing = next((p for p in (state_dir, *state_dir.parents) if p.exists()), None)
    if existing is not None and not (existing.is_dir() and os.access(existing, os.W_OK | os.X_OK)):
        if existing == state_dir:
            what = "exists but is not a writable directory"
        elif not existing.is_dir():
            what = f"cannot be created: {existing} is a file"
        else:
            what = f"cannot be created: {existing} is not writable by this user"
        problems.append(f"state_dir ({settings.source_of('state_dir')}): {state_dir} {what}; "
                        "wsmon keeps its SQLite store, logs and step logs there.")
    if not settings.discovery.sources:
        warnings.append("discovery.sources is empty: the engine will find no worksets. Add a [[discovery.sources]] "
                        "table with bucket and prefix, or point daylily_yaml at your Daylily monitor config.")
    return problems, warnings
