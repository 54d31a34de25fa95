"""Metric history in ``TABLE-metrics``: key ``name`` + ``sk`` = "at#hash(series)", so a chart is
one Query on a time range and the same series at the same instant is one sample (a re-sent batch
replaces it). A registry of metric names (``metric-name`` in ``TABLE-meta``) lets pruning find
every series without a Scan. Roll-ups are ``rules.roll_up``."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from wsmon.core.clock import isoformat, parse_iso
from wsmon.core.models import MetricSample
from wsmon.engine.store import rules
from wsmon.engine.store.dynamodb.codec import av, item_av
from wsmon.engine.store.dynamodb.meta import MetaTable


class MetricsHistory(MetaTable):
    _known_metric_names: set[str]

    def record_metric_samples(self, samples: Iterable[MetricSample]) -> None:
        latest: dict[tuple[str, str], dict[str, Any]] = {}
        for s in samples:
            at = isoformat(s.at)
            dims = rules.series_key(s.dimensions)
            sk = f"{at}#{hashlib.sha256(dims.encode()).hexdigest()[:24]}"
            # BatchWriteItem refuses two writes to one key in a request: the last one wins.
            latest[(s.name, sk)] = {"name": s.name, "sk": sk, "at": at,
                                    "value": json.dumps(float(s.value)), "dims": dims}
        if not latest:
            return
        self._db.batch_write(self.tables.metrics,
                             [{"PutRequest": {"Item": item_av(i)}} for i in latest.values()])
        new_names = {name for name, _ in latest} - self._known_metric_names
        if new_names:
            self._db.batch_write(self.tables.meta, [
                {"PutRequest": {"Item": item_av({"pk": "metric-name", "sk": n})}}
                for n in sorted(new_names)])
            self._known_metric_names |= new_names

    def metric_history(self, name: str, since: datetime, until: datetime | None = None,
                       resolution: str = "minute",
                       dimensions: Mapping[str, str] | None = None) -> list[MetricSample]:
        rules.check_resolution(resolution)
        lo = isoformat(since)
        hi = isoformat(until) if until is not None else "9999"
        selected: list[tuple[datetime, dict[str, str], float]] = []
        for item in self._db.query(self.tables.metrics,
                                   KeyConditionExpression="#n = :n AND #sk BETWEEN :lo AND :hi",
                                   ExpressionAttributeNames={"#n": "name", "#sk": "sk"},
                                   ExpressionAttributeValues={":n": av(name), ":lo": av(lo),
                                                              ":hi": av(hi)}):
            if until is not None and item["at"] >= hi:
                continue  # [since, until): BETWEEN is inclusive
            dims = json.loads(item.get("dims") or "{}")
            if rules.dimensions_match(dims, dimensions):
                selected.append((parse_iso(item["at"]), dims, float(json.loads(item["value"]))))
        return rules.roll_up(name, selected, resolution)

    def prune_metric_history(self, before: datetime) -> int:
        """Rare admin path: one Query per registered metric name, then batched deletes."""
        cutoff = isoformat(before)
        removed = 0
        for reg in list(self._meta_query("metric-name")):
            keys = [{"DeleteRequest": {"Key": {"name": av(reg["sk"]), "sk": av(i["sk"])}}}
                    for i in self._db.query(self.tables.metrics,
                                            KeyConditionExpression="#n = :n AND #sk < :c",
                                            ExpressionAttributeNames={"#n": "name", "#sk": "sk"},
                                            ExpressionAttributeValues={":n": av(reg["sk"]),
                                                                       ":c": av(cutoff)},
                                            ProjectionExpression="#n, #sk")]
            if keys:
                self._db.batch_write(self.tables.metrics, keys)
                removed += len(keys)
        return removed
