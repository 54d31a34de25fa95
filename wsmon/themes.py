"""Dashboard themes: definitions, where they are found, and remembering the operator's choice.

The canonical definitions are the TOML files in the repository's ``themes/`` folder (one
``textual.theme.Theme`` per file). A wheel does not carry that folder, so the same definitions are
also built in here (``BUILTIN_THEMES``; tests/test_app_themes.py fails if the two drift apart).
Lookup order, later wins: built-in, the repository's ``themes/`` (an editable install or a source
checkout), then ``$XDG_CONFIG_HOME/wsmon/themes/*.toml`` for an operator's own themes.

Which theme is used: one named explicitly (``--theme``, ``ui.theme`` in config or the environment)
wins; otherwise the theme last chosen in the dashboard (remembered in ``STATE_DIR/ui.json``);
otherwise ``wsmon-dark``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import structlog

from wsmon.config.settings import xdg_dir
from wsmon.core.textsafe import strip_control

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

log = structlog.get_logger(__name__)

DEFAULT_THEME = "wsmon-dark"
THEME_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*")
REPO_THEMES_DIR = Path(__file__).resolve().parent.parent / "themes"

_ANSI_VARIABLES = {
    "ansi-background": "ansi_black",
    "ansi-foreground": "ansi_white",
    "border-blurred": "ansi_black",
    "block-cursor-foreground": "ansi_black",
    "block-cursor-background": "ansi_white",
    "input-cursor-background": "ansi_black",
    "input-cursor-foreground": "ansi_bright_white",
    "input-selection-background": "ansi_bright_blue",
    "input-selection-foreground": "ansi_black",
    "screen-selection-background": "ansi_bright_blue",
    "screen-selection-foreground": "ansi_black",
}

BUILTIN_THEMES: dict[str, dict[str, Any]] = {
    "wsmon-dark": {
        "name": "wsmon-dark", "dark": True, "primary": "#4EA1FF", "secondary": "#A98BFF",
        "accent": "#FFB454", "warning": "#E6B450", "error": "#F26D78", "success": "#7FD962",
        "foreground": "#D8DEE9", "background": "#0F1419", "surface": "#151B23", "panel": "#1F2630",
        "variables": {"footer-key-foreground": "#FFB454"},
    },
    "wsmon-light": {
        "name": "wsmon-light", "dark": False, "primary": "#0B5CAD", "secondary": "#6B3FA0",
        "accent": "#B35C00", "warning": "#9A6700", "error": "#C62828", "success": "#2E7D32",
        "foreground": "#1B1F24", "background": "#FAFAF7", "surface": "#EFEFEA", "panel": "#E2E4E8",
    },
    "wsmon-high-contrast": {
        "name": "wsmon-high-contrast", "dark": True, "primary": "#00FFFF", "secondary": "#FF00FF",
        "accent": "#FFFF00", "warning": "#FFFF00", "error": "#FF3030", "success": "#00FF00",
        "foreground": "#FFFFFF", "background": "#000000", "surface": "#000000", "panel": "#202020",
        "luminosity_spread": 0.0,
        "variables": {"border": "#FFFFFF", "footer-key-foreground": "#FFFF00",
                      "block-cursor-background": "#FFFF00", "block-cursor-foreground": "#000000"},
    },
    "wsmon-ansi": {
        "name": "wsmon-ansi", "dark": True, "ansi": True, "primary": "ansi_blue",
        "secondary": "ansi_cyan", "accent": "ansi_yellow", "warning": "ansi_yellow",
        "error": "ansi_red", "success": "ansi_green", "foreground": "ansi_default",
        "background": "ansi_default", "surface": "ansi_default", "panel": "ansi_default",
        "boost": "ansi_default", "variables": dict(_ANSI_VARIABLES),
    },
}


def user_themes_dir() -> Path:
    return xdg_dir("XDG_CONFIG_HOME", ".config") / "wsmon" / "themes"


def read_theme_file(path: Path) -> dict[str, Any]:
    data = tomllib.loads(path.read_text(encoding="utf-8"))
    data.setdefault("name", path.stem)
    return data


def theme_definitions(extra_dirs: list[Path] | None = None) -> dict[str, dict[str, Any]]:
    """Every known theme definition by name (built-in, then files; a file overrides by name)."""
    found = {name: dict(spec) for name, spec in BUILTIN_THEMES.items()}
    for folder in [REPO_THEMES_DIR, user_themes_dir(), *(extra_dirs or [])]:
        if not folder.is_dir():
            continue
        for path in sorted(folder.glob("*.toml")):
            try:
                spec = read_theme_file(path)
            except (OSError, tomllib.TOMLDecodeError) as exc:
                log.warning("theme_file_unreadable", path=str(path), error=str(exc))
                continue
            found[str(spec["name"])] = spec
    return found


def build_themes(extra_dirs: list[Path] | None = None) -> list[Any]:
    """``textual.theme.Theme`` objects for every definition that Textual accepts."""
    from textual.theme import Theme

    themes = []
    for name, spec in theme_definitions(extra_dirs).items():
        if not THEME_NAME.fullmatch(name):
            # names are shown in the palette, the help and toasts: plain words only
            log.warning("theme_name_refused", theme=strip_control(name))
            continue
        try:
            themes.append(Theme(**spec))
        except (TypeError, ValueError) as exc:
            log.warning("theme_invalid", theme=name, error=str(exc))
    return themes


def _ui_state_path(state_dir: Path) -> Path:
    return Path(state_dir) / "ui.json"


def remembered_theme(state_dir: Path) -> str | None:
    try:
        data = json.loads(_ui_state_path(state_dir).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    theme = data.get("theme") if isinstance(data, dict) else None
    return theme if isinstance(theme, str) else None


def remember_theme(state_dir: Path, theme: str) -> None:
    """Best effort: a read-only state directory must not break the dashboard."""
    path = _ui_state_path(state_dir)
    try:
        data: dict[str, Any] = {}
        if path.exists():
            loaded = json.loads(path.read_text(encoding="utf-8"))
            if isinstance(loaded, dict):
                data = loaded
        data["theme"] = theme
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(data, indent=2), encoding="utf-8")
        tmp.replace(path)
    except (OSError, ValueError) as exc:
        log.warning("theme_not_remembered", path=str(path), error=str(exc))


def choose_theme(explicit: str | None, state_dir: Path, available: set[str]) -> str:
    for candidate in (explicit, remembered_theme(state_dir)):
        if candidate and candidate in available:
            return candidate
    return DEFAULT_THEME
