"""Shared fixtures. Time comes from ManualClock; AWS from moto (a server per session, never
``mock_aws`` in the same process as a server: they share one backend and wipe each other)."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import pytest

from wsmon.core.clock import ManualClock

# Never touch real AWS from tests, whatever the developer's environment holds.
os.environ.setdefault("AWS_ACCESS_KEY_ID", "testing")
os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "testing")
os.environ.setdefault("AWS_SESSION_TOKEN", "testing")
os.environ["AWS_DEFAULT_REGION"] = "us-west-2"
for _var in ("AWS_PROFILE", "AWS_CONFIG_FILE", "AWS_SHARED_CREDENTIALS_FILE"):
    os.environ.pop(_var, None)
os.environ["AWS_CONFIG_FILE"] = os.devnull
os.environ["AWS_SHARED_CREDENTIALS_FILE"] = os.devnull

# Real Daylily workset folders, kept in the repository (see its README for where they come from).
FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures", "daylily-worksets")


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    """A real HTTP endpoint (moto server) for S3, DynamoDB, SNS, CloudWatch in this process."""
    from wsmon.demo.moto_server import serve_in_thread

    # One request at a time inside moto's backends: they are not thread-safe, and the engine and
    # the S3 poll make concurrent requests by design (see wsmon/demo/moto_server.py).
    with serve_in_thread("127.0.0.1", 0) as url:
        yield url


@pytest.fixture
def no_user_config(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A developer's own ~/.config/wsmon, state directory and WSMON_* variables must not change
    what a CLI test sees. pydantic-settings matches variable names case-insensitively, so any
    case of the prefix goes."""
    for name in list(os.environ):
        if name.upper().startswith("WSMON_"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg-config"))
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg-state"))


@pytest.fixture
def unique_name() -> str:
    """Tables and buckets are per test, so tests sharing the moto server never see each other."""
    return f"t{uuid.uuid4().hex[:12]}"


@pytest.fixture
def daylily_fixtures() -> str:
    path = os.path.abspath(FIXTURES)
    # A test whose data is missing fails: a skip would hide that the clone is incomplete.
    if not os.path.isdir(path):
        pytest.fail(f"Daylily workset fixtures not found at {path} (they belong in the repository)")
    return path
