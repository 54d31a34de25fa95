"""Reading the Settings model itself: dotted names, environment variables, types and bounds.

The loader (error messages, environment parsing), ``wsmon config show`` and the configuration
reference (wsmon/config/docs.py) all describe settings the same way, from here.
"""

from __future__ import annotations

import json
import types
import typing
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Union

from pydantic import BaseModel, SecretStr
from pydantic.fields import FieldInfo

from wsmon.core.redaction import MASK

ENV_PREFIX = "WSMON_"
ENV_DELIMITER = "__"

Loc = tuple[str | int, ...]


@dataclass(frozen=True)
class SettingInfo:
    """One setting: a leaf of the model (a section's field, or a top-level field that is not a section)."""

    path: tuple[str, ...]
    field: FieldInfo
    model: type[BaseModel]

    @property
    def dotted(self) -> str:
        return ".".join(self.path)

    @property
    def name(self) -> str:
        return self.path[-1]

    @property
    def section(self) -> str:
        """The TOML table the setting is written in: "" (top level), "store", "alerts.queue_depth"."""
        return ".".join(self.path[:-1])

    @property
    def annotation(self) -> Any:
        return self.field.annotation

    @property
    def env_var(self) -> str:
        return env_var_for(self.path)

    @property
    def extra(self) -> dict[str, Any]:
        extra = self.field.json_schema_extra
        return extra if isinstance(extra, dict) else {}

    @property
    def alias_env_var(self) -> str | None:
        """A shorter variable that also sets this setting (the secrets: WSMON_LINEAR_API_KEY)."""
        value = self.extra.get("env")
        return value if isinstance(value, str) else None

    @property
    def is_secret(self) -> bool:
        return bool(self.extra.get("secret")) or _contains(self.annotation, SecretStr)

    @property
    def description(self) -> str:
        return self.field.description or ""


def env_var_for(path: typing.Sequence[str | int]) -> str:
    return ENV_PREFIX + ENV_DELIMITER.join(str(p).upper() for p in path)


def settings_model() -> type[BaseModel]:
    from wsmon.config.settings import Settings

    return Settings


def section_model(annotation: Any) -> type[BaseModel] | None:
    """The model class if ``annotation`` is a nested model (a section or a list item)."""
    inner = unwrap_optional(annotation)
    if isinstance(inner, type) and issubclass(inner, BaseModel):
        return inner
    return None


def list_item_model(annotation: Any) -> type[BaseModel] | None:
    """``list[SourceSettings]`` -> SourceSettings."""
    inner = unwrap_optional(annotation)
    if typing.get_origin(inner) is list:
        args = typing.get_args(inner)
        if args:
            return section_model(args[0])
    return None


def iter_settings(model: type[BaseModel] | None = None, prefix: tuple[str, ...] = ()) -> Iterator[SettingInfo]:
    """Every leaf setting; a table's own settings before its sub-tables (the order TOML needs).

    Sections are walked; lists of tables (discovery.sources, clusters.static) are leaves.
    """
    model = model or settings_model()
    subsections = []
    for name, field in model.model_fields.items():
        nested = section_model(field.annotation)
        if nested is not None:
            subsections.append((name, nested))
        else:
            yield SettingInfo(prefix + (name,), field, model)
    for name, nested in subsections:
        yield from iter_settings(nested, prefix + (name,))


@dataclass(frozen=True)
class SectionInfo:
    path: tuple[str, ...]
    model: type[BaseModel]
    description: str

    @property
    def dotted(self) -> str:
        return ".".join(self.path)


def iter_sections(model: type[BaseModel] | None = None, prefix: tuple[str, ...] = ()) -> Iterator[SectionInfo]:
    """Every table (section and sub-section), parents before children, in iter_settings order."""
    model = model or settings_model()
    for name, field in model.model_fields.items():
        nested = section_model(field.annotation)
        if nested is not None:
            yield SectionInfo(prefix + (name,), nested, field.description or "")
            yield from iter_sections(nested, prefix + (name,))


def find_setting(path: typing.Sequence[str]) -> SettingInfo | None:
    for info in iter_settings():
        if info.path == tuple(path):
            return info
    return None


# ---- walking an error location back to the setting it concerns ---------------------------------


@dataclass(frozen=True)
class Located:
    """Where a validation error points: the real path (union member tags dropped)."""

    path: Loc                      # e.g. ("discovery", "sources", 0, "bucket")
    model: type[BaseModel] | None  # model owning the last named field (for suggestions)
    field: FieldInfo | None        # that field, when the path ends at one
    known_names: tuple[str, ...]   # fields valid at the point where the path ends (for unknown keys)


def locate(loc: Loc) -> Located:
    model: type[BaseModel] | None = settings_model()
    annotation: Any = None
    field: FieldInfo | None = None
    path: list[str | int] = []
    known: tuple[str, ...] = tuple(model.model_fields) if model else ()
    for part in loc:
        if model is not None and annotation is None:
            known = tuple(model.model_fields)
            path.append(part)
            if isinstance(part, str) and part in model.model_fields:
                field = model.model_fields[part]
                annotation = field.annotation
                nested = section_model(annotation)
                if nested is not None:
                    model, annotation, field = nested, None, None
                continue
            return Located(tuple(path), model, None, known)  # unknown key (extra_forbidden)
        inner = unwrap_optional(annotation)
        origin = typing.get_origin(inner)
        if isinstance(part, int) and origin is list:
            path.append(part)
            item = typing.get_args(inner)[0] if typing.get_args(inner) else Any
            nested = section_model(item)
            if nested is not None:
                model, annotation, field = nested, None, None
            else:
                annotation = item
            continue
        if origin is dict:
            path.append(part)
            args = typing.get_args(inner)
            annotation = args[1] if len(args) == 2 else Any
            continue
        # a union member tag such as 'list[str]' or 'str': not part of the user's key
    return Located(tuple(path), model, field, known)


def dotted(path: typing.Sequence[str | int]) -> str:
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


# ---- describing types and what is allowed -------------------------------------------------------


def unwrap_optional(annotation: Any) -> Any:
    if _is_union(annotation):
        members = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(members) == 1:
            return members[0]
    return annotation


def is_optional(annotation: Any) -> bool:
    return _is_union(annotation) and type(None) in typing.get_args(annotation)


def _is_union(annotation: Any) -> bool:
    return typing.get_origin(annotation) in (Union, types.UnionType)


def _contains(annotation: Any, target: type) -> bool:
    if annotation is target:
        return True
    return any(_contains(a, target) for a in typing.get_args(annotation))


def union_members(annotation: Any) -> list[Any]:
    if _is_union(annotation):
        return [a for a in typing.get_args(annotation) if a is not type(None)]
    return [annotation]


def is_structured(annotation: Any) -> bool:
    """Whether a value needs JSON in an environment variable (lists, tables)."""
    return any(typing.get_origin(m) in (list, dict) or section_model(m) is not None
               for m in union_members(annotation))


def accepts_plain_string(annotation: Any) -> bool:
    return any(m in (str, Path, SecretStr) or typing.get_origin(m) is Literal for m in union_members(annotation))


_SCALAR_NAMES = {str: "string", int: "integer", float: "number", bool: "boolean", Path: "path",
                 SecretStr: "secret string"}
_PLURALS = {"string": "strings", "integer": "integers", "number": "numbers", "boolean": "booleans",
            "path": "paths", "secret string": "secret strings"}


def describe_type(annotation: Any) -> str:
    """A reader's name for a type: 'list of strings or string (optional)'."""
    optional = is_optional(annotation)
    members = union_members(annotation)
    text = " or ".join(_describe_one(m) for m in members)
    return f"{text} (optional)" if optional else text


def _describe_one(annotation: Any) -> str:
    if annotation in _SCALAR_NAMES:
        return _SCALAR_NAMES[annotation]
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is Literal:
        return "one of " + ", ".join(json.dumps(a) for a in args)
    if origin is list:
        item = args[0] if args else Any
        model = section_model(item)
        if model is not None:
            return f"list of tables ({', '.join(model.model_fields)})"
        name = _describe_one(item)
        return f"list of {_PLURALS.get(name, name)}"
    if origin is dict:
        key = _describe_one(args[0]) if args else "string"
        value = _describe_one(args[1]) if len(args) == 2 else "value"
        return f"table of {key} → {value}"
    model = section_model(annotation)
    if model is not None:
        return f"table ({', '.join(model.model_fields)})"
    if _is_union(annotation):
        return describe_type(annotation)
    return getattr(annotation, "__name__", str(annotation))


def bounds(field: FieldInfo) -> str:
    """'> 0', '≥ 1 and ≤ 20', or '' when the field has no numeric bounds."""
    parts = []
    for meta in field.metadata:
        for attr, sign in (("gt", ">"), ("ge", "≥"), ("lt", "<"), ("le", "≤")):
            value = getattr(meta, attr, None)
            if value is not None:
                parts.append(f"{sign} {_number(value)}")
    return " and ".join(parts)


def _number(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def allowed(field: FieldInfo | None) -> str:
    """What the operator may write, e.g. 'one of "soft", "hard"' or 'a number > 0'."""
    if field is None:
        return ""
    annotation = field.annotation
    literal = literal_values(annotation)
    if literal:
        return "one of " + ", ".join(json.dumps(v) for v in literal)
    if unwrap_optional(annotation) is bool:
        return "true or false"
    kind = describe_type(annotation).removesuffix(" (optional)")
    limit = bounds(field)
    article = "an" if kind[:1] in "aeiou" else "a"
    return f"{article} {kind}" + (f" {limit}" if limit else "")


def literal_values(annotation: Any) -> tuple[Any, ...]:
    for member in union_members(annotation):
        if typing.get_origin(member) is Literal:
            return typing.get_args(member)
    return ()


# ---- rendering values the way a TOML file spells them -------------------------------------------

# A secret shows as MASK (wsmon.core.redaction), as in the logs.


def toml_literal(value: Any) -> str:
    if isinstance(value, SecretStr):
        return json.dumps(MASK)
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, (str, Path)):
        return json.dumps(str(value), ensure_ascii=False)
    if isinstance(value, BaseModel):
        return toml_literal(dict(value))
    if isinstance(value, dict):
        if not value:
            return "{}"
        inner = ", ".join(f"{toml_key(str(k))} = {toml_literal(v)}" for k, v in value.items() if v is not None)
        return "{ " + inner + " }"
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(toml_literal(v) for v in value) + "]"
    return json.dumps(str(value))


def toml_key(key: str) -> str:
    if key and all(c.isalnum() or c in "-_" for c in key) and key.isascii():
        return key
    return json.dumps(key, ensure_ascii=False)
