"""The last version of each workset item this store instance saw (a bounded LRU).

A transition's event goes under the next ``seq`` and its write is pinned to the item's
``version``; both come from here, so a claim or a transition is one request. A stale entry
costs a failed write (whose ALL_OLD item refreshes it) and a retry, never correctness.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from typing import Any

#: How many workset items one store instance remembers (about 2 KB each).
CACHE_MAX_ITEMS = 20_000


class ItemCache:
    def __init__(self, max_items: int = CACHE_MAX_ITEMS) -> None:
        self._items: OrderedDict[str, dict[str, Any]] = OrderedDict()
        self._lock = threading.Lock()
        self._max_items = max_items

    def remember(self, item: dict[str, Any] | None) -> None:
        if not item or "workset_id" not in item:
            return
        wid = item["workset_id"]
        with self._lock:
            old = self._items.get(wid)
            # A GSI read may lag behind what this instance already wrote: keep the newer.
            if old is not None and int(old.get("version", 0)) > int(item.get("version", 0)):
                self._items.move_to_end(wid)
                return
            self._items[wid] = item
            self._items.move_to_end(wid)
            while len(self._items) > self._max_items:
                self._items.popitem(last=False)

    def forget(self, workset_id: str) -> None:
        with self._lock:
            self._items.pop(workset_id, None)

    def get(self, workset_id: str) -> dict[str, Any] | None:
        with self._lock:
            item = self._items.get(workset_id)
            if item is not None:
                self._items.move_to_end(workset_id)
            return item
