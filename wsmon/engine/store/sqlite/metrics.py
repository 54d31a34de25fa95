"""Metric history: one row per (name, instant, series); roll-ups are ``rules.roll_up``."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from wsmon.core.clock import isoformat, parse_iso
from wsmon.core.models import (
    MetricSample,
)
from wsmon.engine.store import rules
from wsmon.engine.store.sqlite.database import Database


class MetricsHistory(Database):
    def record_metric_samples(self, samples: Iterable[MetricSample]) -> None:
        rows = [(s.name, isoformat(s.at), rules.series_key(s.dimensions), float(s.value))
                for s in samples]
        if not rows:
            return
        with self._write() as conn:
            # The same series at the same instant is one sample: a re-sent batch replaces it.
            conn.executemany(
                "INSERT INTO metric_samples (name, at, dimensions, value) VALUES (?, ?, ?, ?) "
                "ON CONFLICT (name, at, dimensions) DO UPDATE SET value = excluded.value", rows,
            )

    def metric_history(self, name: str, since: datetime, until: datetime | None = None,
                       resolution: str = "minute",
                       dimensions: Mapping[str, str] | None = None) -> list[MetricSample]:
        rules.check_resolution(resolution)
        sql = "SELECT at, dimensions, value FROM metric_samples WHERE name = ? AND at >= ?"
        params: list[Any] = [name, isoformat(since)]
        if until is not None:
            sql += " AND at < ?"
            params.append(isoformat(until))
        with self._translate():
            rows = self._conn().execute(sql, params).fetchall()
        selected = []
        for r in rows:
            dims = json.loads(r["dimensions"])
            if rules.dimensions_match(dims, dimensions):
                selected.append((parse_iso(r["at"]), dims, r["value"]))
        return rules.roll_up(name, selected, resolution)

    def prune_metric_history(self, before: datetime) -> int:
        with self._write() as conn:
            cur = conn.execute("DELETE FROM metric_samples WHERE at < ?", (isoformat(before),))
            return cur.rowcount
