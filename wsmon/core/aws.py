"""The one place boto3 sessions and clients are made.

Profile, region and endpoint come from config; every client runs botocore's *standard* retry mode
so SDK retries and engine retries do not multiply. boto3 is imported lazily: ``wsmon --help`` and
SQLite-only paths never pay for it.
"""

from __future__ import annotations

import threading
from typing import Any

_lock = threading.Lock()
_sessions: dict[tuple[str | None, str | None], Any] = {}

DEFAULT_MAX_ATTEMPTS = 5


def session(profile: str | None = None, region: str | None = None):
    import boto3

    key = (profile or None, region or None)
    with _lock:
        found = _sessions.get(key)
        if found is None:
            found = boto3.session.Session(profile_name=profile or None, region_name=region or None)
            _sessions[key] = found
        return found


def client(service: str, *, profile: str | None = None, region: str | None = None,
           endpoint_url: str | None = None, max_attempts: int = DEFAULT_MAX_ATTEMPTS,
           connect_timeout: float = 5.0, read_timeout: float = 30.0, max_pool_connections: int = 32,
           **kwargs: Any):
    """A boto3 client with standard retries and sane timeouts. Clients are thread-safe."""
    from botocore.config import Config

    cfg = Config(
        retries={"mode": "standard", "max_attempts": max_attempts},
        connect_timeout=connect_timeout,
        read_timeout=read_timeout,
        max_pool_connections=max_pool_connections,
    )
    sess = session(profile, region)
    return sess.client(service, region_name=region or sess.region_name or "us-east-1",
                       endpoint_url=endpoint_url or None, config=cfg, **kwargs)


def error_code(exc: BaseException) -> str | None:
    """The AWS error code of a botocore ClientError (``AccessDenied``...), else None."""
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        return (response.get("Error") or {}).get("Code")
    return None


def describe_client_error(exc: BaseException) -> str:
    """One operator-readable line: code, operation and message, nothing else."""
    code = error_code(exc)
    op = getattr(exc, "operation_name", None)
    response = getattr(exc, "response", None) or {}
    msg = (response.get("Error") or {}).get("Message") if isinstance(response, dict) else None
    parts = [p for p in (code, f"in {op}" if op else None, msg) if p]
    return ": ".join(parts[:1] + [" ".join(parts[1:])]) if len(parts) > 1 else (parts[0] if parts else str(exc))
