"""Make untrusted text safe to show: no terminal control sequences, no Rich markup.

S3 keys, YAML values and error messages are written by people and programs we do not control.
A folder named ``[@click=app.quit]x`` or holding ``\\x1b]52;...`` must render as those characters
and do nothing. The engine uses ``strip_control`` for logs and notifications; screens use
``safe_markup`` / ``safe_text`` for anything they render.
"""

from __future__ import annotations

import re

# C0 and C1 control characters except tab/newline, plus DEL, plus a whole ANSI escape sequence
# (CSI, OSC, and two-character escapes) so no fragment of one survives.
_ANSI_SEQUENCE = re.compile(
    r"""
    \x1b\[[0-?]*[ -/]*[@-~]            # CSI ... final byte
  | \x1b\][^\x07\x1b]*(?:\x07|\x1b\\)? # OSC ... BEL or ST
  | \x1b[PX^_][^\x1b]*(?:\x1b\\)?      # DCS / SOS / PM / APC ... ST
  | \x1b[@-Z\\-_]                      # two-character escapes
  | \x9b[0-?]*[ -/]*[@-~]              # 8-bit CSI
    """,
    re.VERBOSE,
)
_CONTROL_CHARS = re.compile(r"[\x00-\x08\x0b-\x1f\x7f-\x9f]")
_BIDI_OVERRIDES = re.compile("[\u202a-\u202e\u2066-\u2069]")


def strip_control(text: object, *, keep_newlines: bool = False) -> str:
    """Remove terminal escape sequences and control characters from ``text``.

    Tabs become spaces; newlines survive only with ``keep_newlines`` (log tails), otherwise they
    become a visible ``⏎`` so a one-line cell stays one line.
    """
    value = str(text)
    value = _ANSI_SEQUENCE.sub("", value)
    value = _BIDI_OVERRIDES.sub("", value)
    value = value.replace("\r\n", "\n").replace("\t", " ")
    if not keep_newlines:
        value = value.replace("\n", "⏎")
    return _CONTROL_CHARS.sub("", value)


def safe_markup(text: object, *, keep_newlines: bool = False) -> str:
    """Untrusted text for a place that interprets Rich/Textual markup: control removed, markup escaped."""
    from rich.markup import escape  # rich ships with textual; the engine never calls this

    return escape(strip_control(text, keep_newlines=keep_newlines))


def safe_text(text: object, *, keep_newlines: bool = False, style: str = ""):
    """Untrusted text as a ``rich.text.Text`` (never parsed as markup)."""
    from rich.text import Text

    return Text(strip_control(text, keep_newlines=keep_newlines), style=style)


def truncate(text: str, limit: int, marker: str = "…") -> str:
    if limit <= 0:
        return ""
    if len(text) <= limit:
        return text
    return text[: max(0, limit - len(marker))] + marker


def middle_cut(length: int, limit: int) -> tuple[int, int]:
    """(head, tail) characters to keep of ``length`` so head + "…" + tail fits ``limit``: the
    end keeps a little more, since names differ most at their ends (``flaky-ne…ork-05``)."""
    keep = max(0, limit - 1)
    tail = (keep + 1) // 2
    return keep - tail, tail


def truncate_middle(text: str, limit: int, marker: str = "…") -> str:
    """``text`` cut in the middle to ``limit`` characters, so both ends stay readable."""
    if limit <= 0:
        return ""
    if len(text) <= limit:
        return text
    head, tail = middle_cut(len(text), limit)
    return text[:head] + marker + (text[-tail:] if tail else "")
