"""Rich styles for theme colour roles, so colours follow the active theme (ANSI themes included)."""

from __future__ import annotations

from functools import lru_cache

from rich.style import Style
from textual.color import Color, ColorParseError


@lru_cache(maxsize=256)
def _style(value: str | None, bold: bool, dim: bool, reverse: bool) -> Style:
    color = None
    if value:
        try:
            color = Color.parse(value).rich_color
        except ColorParseError:
            color = None
    return Style(color=color, bold=bold or None, dim=dim or None, reverse=reverse or None)


def role_style(app, role: str, *, bold: bool = False, reverse: bool = False) -> Style:
    """``role`` is a Theme field (primary, error, success, warning, secondary, accent,
    foreground) or "muted" (the foreground, dimmed)."""
    theme = app.current_theme
    if role == "muted":
        return _style(theme.foreground, bold, True, reverse)
    return _style(getattr(theme, role, None) or theme.foreground, bold, False, reverse)


_markup_cache: dict[tuple[str, str, bool, bool], str] = {}


def role_markup(app, role: str, text: str, *, bold: bool = False, reverse: bool = False) -> str:
    """``text`` (already markup-safe) wrapped in the role's colour as Rich markup; cached per
    theme, because the queue renders thousands of cells and resolving a theme is not free."""
    key = (app.theme, role, bold, reverse)
    style = _markup_cache.get(key)
    if style is None:
        style = str(role_style(app, role, bold=bold, reverse=reverse))
        if style == "none":
            style = ""
        _markup_cache[key] = style
    return f"[{style}]{text}[/]" if style else text
