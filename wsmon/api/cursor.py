"""The opaque page cursor of ``GET /worksets``.

It carries the store's own cursor (where the store page the API last read began), how many records
of that page were already handed out, and a fingerprint of the filters it was issued for, so a
cursor reused with other filters, truncated or made up is a clear 400, never a wrong page.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Mapping
from typing import Any

from wsmon.api.errors import ApiError

_VERSION = 1


def _fingerprint(filters: Mapping[str, Any]) -> str:
    canonical = json.dumps({k: filters[k] for k in sorted(filters)}, sort_keys=True)
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def encode(store_cursor: str | None, skip: int, filters: Mapping[str, Any]) -> str:
    raw = json.dumps({"v": _VERSION, "f": _fingerprint(filters), "c": store_cursor, "s": skip},
                     separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode(cursor: str, filters: Mapping[str, Any]) -> tuple[str | None, int]:
    """(store cursor, records of that store page already handed out); ``ApiError`` 400 when it
    is not one of ours or was issued for other filters."""
    bad = ApiError(400, "bad_cursor", "the cursor is not one this API issued; start again "
                                      "without a cursor")
    if len(cursor) > 4096:
        raise bad
    try:
        data = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (ValueError, TypeError):
        raise bad from None
    if (not isinstance(data, dict) or data.get("v") != _VERSION
            or not isinstance(data.get("c"), (str, type(None))) or not isinstance(data.get("f"), str)
            or not isinstance(data.get("s"), int) or isinstance(data.get("s"), bool)
            or not 0 <= data["s"] <= 100_000):
        raise bad
    if data["f"] != _fingerprint(filters):
        raise ApiError(400, "bad_cursor", "the cursor belongs to a query with other filters; "
                                          "repeat that query's filters or start again")
    return data["c"], data["s"]
