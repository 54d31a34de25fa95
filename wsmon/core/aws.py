"""The one place boto3 sessions and clients are made, and where their region and retries come from.

Region, highest first (the order the AWS CLI and SDKs document, with wsmon's own settings on top):
a ``dynamodb://`` store URL's ``region=`` (for the store), ``aws.region``, ``AWS_REGION``,
``AWS_DEFAULT_REGION``, the profile's ``region``. With none of them, ``NoRegion``: wsmon never
guesses one (botocore itself reads only ``AWS_DEFAULT_REGION`` and the profile).

Retries: the operator's ``AWS_RETRY_MODE`` / profile ``retry_mode`` and ``AWS_MAX_ATTEMPTS`` /
profile ``max_attempts`` are honoured when set; otherwise standard mode. ``max_attempts`` counts
attempts including the first, as the AWS CLI does (botocore's ``Config(retries={"max_attempts"})``
counts retries only, so it is never used here).

boto3 is imported lazily: ``wsmon --help`` and SQLite-only paths never pay for it.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

_lock = threading.Lock()
_sessions: dict[tuple[str | None, ...], Any] = {}

DEFAULT_MAX_ATTEMPTS = 5
DEFAULT_RETRY_MODE = "standard"

URL_REGION = "the store URL's region="
SETTING_REGION = "aws.region"
HOW_TO_SET_REGION = (
    "set aws.region in the config file (or WSMON_AWS__REGION), export AWS_REGION, "
    "give the AWS profile a region (aws configure set region REGION), "
    "or add ?region=REGION to a dynamodb:// store URL")


@dataclass(frozen=True)
class Region:
    name: str
    source: str  # where it came from, for `wsmon config show`: "AWS_REGION", "profile 'ops'", ...


class NoRegion(ValueError):
    """No region anywhere wsmon looks: a configuration error (exit 2), never a guess."""

    def __init__(self, needed_for: str | None = None) -> None:
        why = f" (needed by {needed_for})" if needed_for else ""
        super().__init__(f"no AWS region is set{why}: {HOW_TO_SET_REGION}")


def profile_config(profile: str | None = None) -> dict[str, Any]:
    """The profile's section of the AWS config file (``AWS_PROFILE`` or ``default`` when None);
    empty when there is no such file or profile (creating the session reports a missing profile)."""
    import botocore.session
    from botocore.exceptions import ProfileNotFound

    try:
        return dict(botocore.session.Session(profile=profile or None).get_scoped_config())
    except ProfileNotFound:
        return {}


def resolve_region(*, url_region: str | None = None, configured: str | None = None,
                   profile: str | None = None, environ: Mapping[str, str] | None = None) -> Region:
    """The region to use and where it came from (see the module docstring for the order)."""
    env = os.environ if environ is None else environ
    for value, source in ((url_region, URL_REGION), (configured, SETTING_REGION),
                          (env.get("AWS_REGION"), "AWS_REGION"),
                          (env.get("AWS_DEFAULT_REGION"), "AWS_DEFAULT_REGION")):
        if value and value.strip():
            return Region(value.strip(), source)
    from_profile = str(profile_config(profile).get("region") or "").strip()
    if from_profile:
        name = profile or env.get("AWS_PROFILE") or "default"
        return Region(from_profile, f"profile {name!r} in the AWS config file")
    raise NoRegion()


def retry_config(*, profile: str | None = None, max_attempts: int | None = None,
                 environ: Mapping[str, str] | None = None) -> dict[str, Any]:
    """botocore ``retries``: only what the operator's environment and profile leave unset.

    ``max_attempts`` (attempts including the first) is wsmon's own setting or a client's
    deliberate cap, so it wins; None defers to ``AWS_MAX_ATTEMPTS`` / the profile, else 5."""
    env = os.environ if environ is None else environ
    scoped: dict[str, Any] | None = None

    def from_profile(key: str) -> Any:
        nonlocal scoped
        if scoped is None:
            scoped = profile_config(profile)
        return scoped.get(key)

    retries: dict[str, Any] = {}
    if not (env.get("AWS_RETRY_MODE") or from_profile("retry_mode")):
        retries["mode"] = DEFAULT_RETRY_MODE
    if max_attempts is not None:
        retries["total_max_attempts"] = max_attempts
    elif not (env.get("AWS_MAX_ATTEMPTS") or from_profile("max_attempts")):
        retries["total_max_attempts"] = DEFAULT_MAX_ATTEMPTS
    return retries


def session(profile: str | None = None, region: str | None = None):
    import boto3

    # A session reads the AWS config files once: a different file is a different session.
    key = (profile or None, region or None, os.environ.get("AWS_CONFIG_FILE"),
           os.environ.get("AWS_SHARED_CREDENTIALS_FILE"))
    with _lock:
        found = _sessions.get(key)
        if found is None:
            found = boto3.session.Session(profile_name=profile or None, region_name=region or None)
            _sessions[key] = found
        return found


def client(service: str, *, profile: str | None = None, region: str | None = None,
           endpoint_url: str | None = None, max_attempts: int | None = None,
           connect_timeout: float = 5.0, read_timeout: float = 30.0, max_pool_connections: int = 32,
           **kwargs: Any):
    """A boto3 client with sane timeouts. Clients are thread-safe.

    ``region``: the configured one (``aws.region``, or a store URL's); None resolves the rest of
    the order, and raises ``NoRegion`` when nothing names one. ``max_attempts``: attempts per
    request including the first; None honours ``AWS_MAX_ATTEMPTS`` / the profile, else 5."""
    from botocore.config import Config

    name = resolve_region(configured=region, profile=profile).name
    cfg = Config(
        retries=retry_config(profile=profile, max_attempts=max_attempts),
        connect_timeout=connect_timeout,
        read_timeout=read_timeout,
        max_pool_connections=max_pool_connections,
    )
    return session(profile, name).client(service, region_name=name, endpoint_url=endpoint_url or None,
                                         config=cfg, **kwargs)


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
