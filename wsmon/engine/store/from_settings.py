"""Open the configured store: the one place settings become ``open_store`` arguments.

The engine, the dashboard, every command and the demo open their store here, so none of them can
leave out a setting (the AWS profile, the lease length, the allowed clock skew) that the others pass.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from wsmon.engine.store import Store, open_store

if TYPE_CHECKING:
    from wsmon.config.settings import Settings
    from wsmon.core.clock import Clock


def open_store_from_settings(settings: Settings, *, clock: Clock | None = None, create: bool = True) -> Store:
    """The store ``settings`` name (``store.url``, else SQLite in the state directory).

    ``create``: for SQLite, create the file and schema when missing; commands other than
    ``store init`` pass False so a typo in the path is an error instead of an empty new store.
    """
    from wsmon.config.aws_region import store_region, store_url_with_region

    # A DynamoDB URL without region= gets the one aws.region / AWS_REGION / the profile name
    # (NoRegion when none does): every client and the store resolve the region the same way.
    options = {}
    if store_region(settings) is not None and settings.aws.max_attempts is not None:
        options["max_attempts"] = settings.aws.max_attempts
    return open_store(store_url_with_region(settings), clock=clock,
                      max_clock_skew=settings.store.max_clock_skew_seconds,
                      default_lease_seconds=settings.store.lease_seconds,
                      aws_profile=settings.aws.profile, create=create, **options)
