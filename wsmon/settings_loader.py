"""Minimal loader; the config work replaces this with source tracking and Daylily YAML mapping."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from wsmon.config import ConfigError, Settings, default_config_path

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]


def _deep_merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for k, v in top.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _deep_merge(out[k], v)
        else:
            out[k] = v
    return out


def load(config_path: Path | str | None, overrides: dict[str, Any], *,
         env: dict[str, str] | None = None) -> Settings:
    path = Path(config_path) if config_path else default_config_path()
    data: dict[str, Any] = {}
    if path.exists():
        try:
            data = tomllib.loads(path.read_text(encoding="utf-8"))
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise ConfigError([f"{path}: {exc}"]) from None
    elif config_path:
        raise ConfigError([f"{path}: no such config file"])
    merged = _deep_merge(data, overrides)
    try:
        if env is not None:
            saved = dict(os.environ)
            os.environ.clear()
            os.environ.update(env)
            try:
                return Settings(**merged)
            finally:
                os.environ.clear()
                os.environ.update(saved)
        return Settings(**merged)
    except ValidationError as exc:
        raise ConfigError([f"{path}: {'.'.join(map(str, e['loc']))}: {e['msg']}" for e in exc.errors()]) from None
