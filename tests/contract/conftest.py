"""The store contract runs against every backend through the ``store`` fixture.

``sqlite``: a fresh file in tmp_path. ``dynamodb``: fresh tables on the session's moto server.
Both backends are imported outright: a backend that fails to import fails every case, it is
never skipped. Both use the ManualClock, a 30 s clock skew allowance
and 300 s default leases, so tests move time instead of sleeping.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from wsmon.core.clock import ManualClock
from wsmon.engine.store import Store
from wsmon.engine.store.dynamodb import DynamoDBStore
from wsmon.engine.store.sqlite import SqliteStore

MAX_CLOCK_SKEW = 30.0
DEFAULT_LEASE_SECONDS = 300.0


@pytest.fixture(params=["sqlite", "dynamodb"])
def store(request: pytest.FixtureRequest, clock: ManualClock, tmp_path: Path,
          unique_name: str) -> Iterator[Store]:
    if request.param == "sqlite":
        st: Store = SqliteStore.from_url(
            f"sqlite:///{tmp_path / 'state.db'}", clock=clock, max_clock_skew=MAX_CLOCK_SKEW,
            default_lease_seconds=DEFAULT_LEASE_SECONDS,
        )
    else:
        # Only the DynamoDB params start the moto server.
        moto_endpoint = request.getfixturevalue("moto_endpoint")
        st = DynamoDBStore.from_url(
            f"dynamodb://{unique_name}?region=us-west-2&endpoint_url={moto_endpoint}",
            clock=clock, max_clock_skew=MAX_CLOCK_SKEW, default_lease_seconds=DEFAULT_LEASE_SECONDS,
        )
    st.init_schema()
    try:
        yield st
    finally:
        st.close()
