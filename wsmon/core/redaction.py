"""One redactor for every text that leaves the process: log lines, notifications, error details.

``redact`` / ``redact_value`` mask secrets by pattern: values under keys that look like secrets,
and AWS keys, Linear keys, Slack webhook URLs and tokens, private key blocks, URL passwords,
bearer tokens and ``password=...`` assignments wherever they appear (nested values, longer
strings, exception text). ``scrub`` is for text that leaves the host (notifications, stored error
details): it also replaces the configured secrets themselves, home-directory paths and key file
names.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

MASK = "****"

# Key names whose values are secrets. A bare "key" is left alone: S3 object keys are logged
# everywhere and are what an operator needs to find a workset.
_SECRET_KEY_NAME = re.compile(
    r"secret|token|passw(?:or)?d|passwd|passphrase|webhook|authori[sz]ation|credential|cookie|"
    r"api[_-]?key|apikey|access[_-]?key|private[_-]?key|signing[_-]?key|session[_-]?key|"
    r"encryption[_-]?key|client[_-]?key",
    re.IGNORECASE,
)

_SLACK_WEBHOOK = re.compile(r"https?://hooks\.slack(?:-gov)?\.com/[^\s\"'<>`]*", re.IGNORECASE)
_LINEAR_KEY = re.compile(r"\blin_(?:api|oauth)_[A-Za-z0-9]+")
_AWS_ACCESS_KEY_ID = re.compile(r"(?<![A-Za-z0-9])((?:AKIA|ASIA))[A-Z0-9]{16}(?![A-Za-z0-9])")
# A 40-character secret access key right after something that names it:
# aws_secret_access_key = X, "SecretAccessKey": "X", secret: X
_AWS_SECRET_IN_CONTEXT = re.compile(
    r"((?:aws)?[_-]?secret[A-Za-z0-9_-]*[\"']?\s*[:=]?\s*[\"']?\s*)([A-Za-z0-9/+]{40})(?![A-Za-z0-9/+=])",
    re.IGNORECASE,
)
_AWS_SECRET_ALONE = re.compile(r"^[A-Za-z0-9/+]{40}$")
_SLACK_TOKEN = re.compile(r"\bxox[abposr]-[A-Za-z0-9-]{8,}")
_PRIVATE_KEY_BLOCK = re.compile(
    r"-----BEGIN [A-Z ]*PRIVATE KEY-----.*?(?:-----END [A-Z ]*PRIVATE KEY-----|$)", re.DOTALL)
_BEARER = re.compile(r"\b(bearer|token|basic)(\s+)([A-Za-z0-9._~+/=-]{12,})", re.IGNORECASE)
_URL_PASSWORD = re.compile(r"\b([a-z][a-z0-9+.-]*://[^/\s:@]+:)([^@\s/]+)(@)", re.IGNORECASE)
_SECRET_ASSIGNMENT = re.compile(
    r"\b([A-Za-z0-9_-]*(?:password|passwd|secret|token|api[_-]?key|apikey|access[_-]?key|webhook[_-]?url|"
    r"authorization)[A-Za-z0-9_-]*)([\"']?\s*[:=]\s*[\"']?)(?!(?:bearer|basic|token)\s)(?!\*{4})([^\s\"',;&}\]]+)",
    re.IGNORECASE,
)


# Every pattern above needs one of these words somewhere in the text (or a bare 40-character value).
_MAY_HOLD_SECRET = re.compile(
    r"hooks\.slack|lin_|xox|PRIVATE KEY|AKIA|ASIA|secret|bearer|token|basic|://|passw|api[_-]?key|access[_-]?key|"
    r"webhook|authori",
    re.IGNORECASE,
)


def is_secret_key(name: object) -> bool:
    return isinstance(name, str) and bool(_SECRET_KEY_NAME.search(name))


def redact(text: str) -> str:
    """``text`` with every secret-looking value masked; the rest is left as it was."""
    if not text or (not _MAY_HOLD_SECRET.search(text) and len(text.strip()) != 40):
        return text  # the common case, checked with one search instead of every pattern
    out = _SLACK_WEBHOOK.sub("https://hooks.slack.com/" + MASK, text)
    out = _LINEAR_KEY.sub("lin_api_" + MASK, out)
    out = _SLACK_TOKEN.sub(MASK, out)
    out = _PRIVATE_KEY_BLOCK.sub(MASK, out)
    out = _AWS_ACCESS_KEY_ID.sub(lambda m: m.group(1) + MASK, out)
    out = _AWS_SECRET_IN_CONTEXT.sub(lambda m: m.group(1) + MASK, out)
    out = _BEARER.sub(lambda m: m.group(1) + m.group(2) + MASK, out)
    out = _URL_PASSWORD.sub(lambda m: m.group(1) + MASK + m.group(3), out)
    out = _SECRET_ASSIGNMENT.sub(lambda m: m.group(1) + m.group(2) + MASK, out)
    stripped = out.strip()
    if _AWS_SECRET_ALONE.match(stripped) and _looks_random(stripped):
        return MASK
    return out


def _looks_random(text: str) -> bool:
    # A value that is only a 40-character mix of cases and digits is a secret access key far more
    # often than anything else (git hashes are lower-case hex, paths have dots and dashes).
    return any(c.isupper() for c in text) and any(c.islower() for c in text) and any(c.isdigit() for c in text)


def redact_value(obj: Any, *, _depth: int = 0) -> Any:
    """``obj`` with secrets masked, at any depth: mappings (by key name and by value), sequences, strings."""
    if _depth > 20:
        return MASK  # something self-referential or absurdly deep: safer to drop than to show
    if obj is None or isinstance(obj, (bool, int, float)):
        return obj
    if isinstance(obj, str):
        return redact(obj)
    if isinstance(obj, Mapping):
        return {key: (MASK if is_secret_key(key) and value not in (None, "") else
                      redact_value(value, _depth=_depth + 1))
                for key, value in obj.items()}
    if isinstance(obj, (list, tuple, set, frozenset)):
        items = [redact_value(item, _depth=_depth + 1) for item in obj]
        return tuple(items) if isinstance(obj, tuple) else items
    if type(obj).__name__ == "SecretStr":
        return MASK
    if isinstance(obj, BaseException):
        return redact(f"{type(obj).__name__}: {obj}")
    if isinstance(obj, Path):
        return obj
    text = str(obj)
    cleaned = redact(text)
    return obj if cleaned == text else cleaned


# ---- text that leaves the host ------------------------------------------------------------------

SECRET_MARK = "[secret]"  # a configured secret's own value (docs/deployment.md names this mark)
_HOME_PATH = re.compile(
    r"(?<![\w/.])(?:~[\w.-]*(?=/)|/home/[^/\s'\"]+|/Users/[^/\s'\"]+|/root(?![\w.-]))(?:/[^\s'\"<>|,;]*)?"
)
_KEY_FILE = re.compile(
    r"[^\s'\"<>|,;]*(?:\bid_(?:rsa|dsa|ecdsa|ed25519)(?:\.pub)?\b|\.(?:pem|key|p12|pfx|ppk|jks)\b)",
)


def scrub(text: object, secrets: Iterable[str] = ()) -> str:
    """Remove secrets, home-directory paths and key file names from text that leaves the host.

    ``secrets``: the configured secret values themselves (a webhook URL, an API key), replaced
    wherever they appear even when no pattern would recognise them."""
    value = str(text)
    for secret in sorted(set(secrets), key=len, reverse=True):  # whole URL before its parts
        if secret and len(secret) >= 4:
            value = value.replace(secret, SECRET_MARK)
    value = redact(value)
    value = _KEY_FILE.sub("[key-file]", value)
    return _HOME_PATH.sub("[home-path]", value)
