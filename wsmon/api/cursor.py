"""The opaque page cursor of ``GET /worksets``.

It carries the store's own cursor plus a fingerprint of the filters it was issued for, so a
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


def encode(store_cursor: str, filters: Mapping[str, Any]) -> str:
    raw = json.dumps({"v": _VERSION, "f": _fingerprint(filters), "c": store_cursor},
                     separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode(cursor: str, filters: Mapping[str, Any]) -> str:
    """The store cursor inside ``cursor``; ``ApiError`` 400 when it is not one of ours or was
    issued for other filters."""
    bad = ApiError(400, "bad_cursor", "the cursor is not one this API issued; start again "
                                      "without a cursor")
    if len(cursor) > 4096:
        raise bad
    try:
        data = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (ValueError, TypeError):
        raise bad from None
    if (not isinstance(data, dict) or data.get("v") != _VERSION
            or not isinstance(data.get("c"), str) or not isinstance(data.get("f"), str)):
        raise bad
    if data["f"] != _fingerprint(filters):
        raise ApiError(400, "bad_cursor", "the cursor belongs to a query with other filters; "
                                          "repeat that query's filters or start again")
    return data["c"]
