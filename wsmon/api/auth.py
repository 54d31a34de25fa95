"""Who may call the API: bearer tokens, where they come from, and which addresses need them.

Tokens come from ``WSMON_API_TOKEN`` / ``WSMON_API_READ_TOKEN`` or the files ``api.token_file`` /
``api.read_token_file`` (``NAME:TOKEN`` or ``TOKEN``, comma- or line-separated), never from the
config file itself. A presented token is compared with every configured one in constant time
(``hmac.compare_digest`` over SHA-256 digests, all of them, whichever matches), so neither the
response time nor an early exit tells a caller how much of a guess was right.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from wsmon.config.settings import Settings

MIN_TOKEN_LENGTH = 16
_NAME = re.compile(r"^[A-Za-z0-9._-]{1,64}$")
DEFAULT_TOKEN_NAME = "token"


class ApiConfigError(Exception):
    """The API cannot start as configured; the message says what to change."""


@dataclass(frozen=True)
class Token:
    name: str
    digest: bytes
    can_write: bool


@dataclass(frozen=True)
class Principal:
    """The caller of one request: the token's name, what it may do, and the audit actor."""

    name: str
    can_write: bool
    client: str

    @property
    def actor(self) -> str:
        return f"api:{self.name}@{self.client}"


def _digest(secret: str) -> bytes:
    return hashlib.sha256(secret.encode("utf-8")).digest()


def parse_tokens(text: str, *, can_write: bool, origin: str) -> list[Token]:
    """``NAME:TOKEN`` or ``TOKEN`` entries separated by commas or newlines; ``#`` comments."""
    tokens: list[Token] = []
    for number, line in enumerate(text.splitlines(), start=1):
        line = line.split("#", 1)[0] if line.lstrip().startswith("#") else line
        for entry in line.split(","):
            entry = entry.strip()
            if not entry:
                continue
            name, sep, secret = entry.partition(":")
            if not sep:
                name, secret = DEFAULT_TOKEN_NAME, entry
            name, secret = name.strip(), secret.strip()
            if not _NAME.match(name):
                raise ApiConfigError(f"{origin}, entry {number}: token name {name[:20]!r} must be "
                                     "letters, digits, '.', '_' or '-' (at most 64)")
            if len(secret) < MIN_TOKEN_LENGTH or any(c.isspace() for c in secret):
                raise ApiConfigError(f"{origin}: the token named {name!r} is shorter than "
                                     f"{MIN_TOKEN_LENGTH} characters or contains spaces; use a long "
                                     "random one (e.g. python3 -c 'import secrets; "
                                     "print(secrets.token_urlsafe(32))')")
            tokens.append(Token(name, _digest(secret), can_write))
    return tokens


def _read_token_file(path: Path, setting: str) -> str:
    path = Path(path).expanduser()
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ApiConfigError(f"{setting}: {path} does not exist") from None
    except PermissionError:
        raise ApiConfigError(f"{setting}: {path} cannot be read by this user") from None
    except (OSError, UnicodeDecodeError):
        raise ApiConfigError(f"{setting}: {path} cannot be read as text") from None


class TokenSet:
    def __init__(self, tokens: list[Token]) -> None:
        self._tokens = tuple(tokens)

    def __len__(self) -> int:
        return len(self._tokens)

    @property
    def names(self) -> list[str]:
        return [t.name for t in self._tokens]

    def match(self, presented: str) -> Token | None:
        """The token ``presented`` is, or None; every configured token is compared."""
        digest = _digest(presented)
        found: Token | None = None
        for token in self._tokens:
            if hmac.compare_digest(token.digest, digest) and found is None:
                found = token
        return found


def load_tokens(settings: Settings) -> TokenSet:
    """Every configured token; ``ApiConfigError`` for a token written in the config file, an
    unreadable token file, or a malformed entry."""
    api = settings.api
    tokens: list[Token] = []
    for field, file_field, can_write, env in (("token", "token_file", True, "WSMON_API_TOKEN"),
                                              ("read_token", "read_token_file", False,
                                               "WSMON_API_READ_TOKEN")):
        value = getattr(api, field)
        if value is not None and value.get_secret_value():
            origin = settings.source_of(f"api.{field}")
            if origin.startswith(("file", "daylily")):
                raise ApiConfigError(f"api.{field} is written in the config file ({origin}), where "
                                     f"it is easily copied or committed: set {env} or "
                                     f"api.{file_field} instead")
            tokens += parse_tokens(value.get_secret_value(), can_write=can_write, origin=env)
        path = getattr(api, file_field)
        if path is not None:
            tokens += parse_tokens(_read_token_file(path, f"api.{file_field}"),
                                   can_write=can_write, origin=f"api.{file_field}")
    return TokenSet(tokens)


def parse_bind(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:8080`` for IPv6) -> (host, port)."""
    value = text.strip()
    if value.startswith("["):
        host, sep, port = value[1:].partition("]:")
    else:
        host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ApiConfigError(f"bind address {text!r} is not HOST:PORT (e.g. 127.0.0.1:8080)")
    return host, int(port)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name: assume it reaches beyond this machine


def check_exposure(host: str, tokens: TokenSet, what: str = "the API") -> None:
    """Beyond loopback only with a token: anyone who can reach the port could act otherwise."""
    if not is_loopback(host) and not any(True for _ in tokens.names):
        raise ApiConfigError(
            f"refusing to serve {what} on {host}, beyond this machine, without a token: set "
            "WSMON_API_TOKEN (or api.token_file), or bind to 127.0.0.1 and put a reverse proxy "
            "with TLS in front (docs/deployment.md)")


def reads_need_token(settings: Settings, host: str) -> bool:
    configured = settings.api.read_token_required
    return (not is_loopback(host)) if configured is None else configured
