"""Write-back to S3: the sentinel of the store's state (removing the ones that would mask it, and
our own daylily.lock once no longer locked), and the sentinel index files
(``<index prefix>daylily.<sentinel>.log``: one ``<workset>\\t<since>`` line per workset)."""

from __future__ import annotations

import hashlib
import re
from typing import TYPE_CHECKING, Any

import structlog

from wsmon.core.clock import Clock, isoformat
from wsmon.core.models import Workset
from wsmon.core.textsafe import strip_control
from wsmon.engine.s3.listing import FolderCache, folder_key
from wsmon.engine.s3.sentinels import (
    PRECEDENCE,
    SENTINEL_PREFIX,
    SENTINELS,
    STATE_SENTINEL,
    WRITER_METADATA,
    SentinelInfo,
    format_sentinel_body,
    parse_sentinel_body,
)

if TYPE_CHECKING:
    from wsmon.engine.s3.report import PollReport
    from wsmon.engine.store.base import Store

log = structlog.get_logger(__name__)

KV_INDEX = "s3.index"


_INDEX_ESCAPES = {"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"}
_INDEX_UNSAFE = re.compile(r"[\\\x00-\x1f\x7f-\x9f]")


def escape_index_value(value: str) -> str:
    """One tab-separated field of an index log: backslash, tab, newline and CR as \\, \\t,
    \\n, \\r; every other control character (ESC from a folder name, say) as \\xNN, so a
    terminal showing the file runs no escape sequence."""
    return _INDEX_UNSAFE.sub(
        lambda m: _INDEX_ESCAPES.get(m.group(0)) or f"\\x{ord(m.group(0)):02x}", value)


class SentinelWriter:
    """Makes a folder's sentinels say the store's state (when ``discovery.write_sentinels``)."""

    def __init__(self, s3: Any, cache: FolderCache, *, clock: Clock, monitor_id: str,
                 enabled: bool) -> None:
        self.s3 = s3
        self.cache = cache
        self.clock = clock
        self.monitor_id = monitor_id
        self.enabled = enabled

    def mirror_quietly(self, ws: Workset, report: PollReport | None) -> None:
        if not self.enabled or ws.s3_missing:
            return
        try:
            writes = self.mirror(ws)
            if report is not None:
                report.sentinel_writes += writes
        except Exception as exc:  # a failed write is retried by the next poll's reconcile
            from wsmon.core.aws import describe_client_error

            message = strip_control(describe_client_error(exc))
            log.warning("s3source.sentinel_write_failed", workset_id=strip_control(ws.workset_id),
                        error=message)
            if report is not None:
                report.warnings.append(f"{ws.workset_id}: sentinel write failed: {message}")

    def mirror(self, ws: Workset) -> int:
        """Write the sentinel of ``ws``'s state; returns the number of S3 writes. Raises on S3
        errors."""
        desired = STATE_SENTINEL[ws.state]
        key = folder_key(ws.bucket, ws.prefix)
        with self.cache.lock:
            sentinels = self.cache.sentinels(key)
        writes = 0
        body = format_sentinel_body(ws)
        resp = self.s3.put_object(Bucket=ws.bucket, Key=f"{ws.prefix}{SENTINEL_PREFIX}{desired}",
                                  Body=body.encode("utf-8"), ContentType="text/plain; charset=utf-8",
                                  Metadata={WRITER_METADATA: strip_control(self.monitor_id)[:200]})
        writes += 1
        parsed = parse_sentinel_body(body.encode("utf-8"))
        sentinels[desired] = SentinelInfo(
            desired, str(resp.get("ETag", "")).strip('"'), isoformat(self.clock.now()),
            len(body.encode("utf-8")), isoformat(parsed.timestamp) if parsed.timestamp else None,
            parsed.detail, None, ours=True)
        for name in list(sentinels):
            masks = PRECEDENCE[name] < PRECEDENCE[desired]
            stale_lock = name == "lock" and desired != "lock" and sentinels[name].ours
            if masks or stale_lock:
                self.s3.delete_object(Bucket=ws.bucket, Key=f"{ws.prefix}{SENTINEL_PREFIX}{name}")
                writes += 1
                del sentinels[name]
        self.cache.record_write(key, sentinels)
        log.info("s3source.sentinel_written", workset_id=strip_control(ws.workset_id),
                 sentinel=desired, state=ws.state.value)
        return writes


class IndexWriter:
    """Rewrites an index file only when its content changed (hash kept in ``kv`` ``s3.index``)."""

    def __init__(self, s3: Any, store: Store) -> None:
        self.s3 = s3
        self.store = store
        self._hashes: dict[str, str] | None = None

    def write(self, bucket: str, index_prefix: str, members: list[Workset],
              listed_top: dict[str, dict[str, Any]] | None, report: PollReport) -> None:
        """``members``: the worksets of the sources that share this index location."""
        if self._hashes is None:
            self._hashes = self.store.kv_get_all(KV_INDEX) or {}
        by_sentinel: dict[str, list[Workset]] = {name: [] for name in SENTINELS}
        for ws in members:
            by_sentinel[STATE_SENTINEL[ws.state]].append(ws)
        for name, worksets in by_sentinel.items():
            key = f"{index_prefix}{SENTINEL_PREFIX}{name}.log"
            lines = [f"{escape_index_value(ws.workset_id)}\t{isoformat(ws.state_changed_at)}"
                     for ws in sorted(worksets, key=lambda w: w.workset_id)]
            content = "".join(line + "\n" for line in lines).encode("utf-8")
            digest = hashlib.md5(content, usedforsecurity=False).hexdigest()
            kv_key = f"{bucket}/{key}"
            known = self._hashes.get(kv_key)
            if known is None and listed_top is not None:
                # the index sits among the folders: the listing already told us its ETag
                obj = listed_top.get(key)
                known = str(obj.get("ETag", "")).strip('"') if obj else hashlib.md5(
                    b"", usedforsecurity=False).hexdigest()
            if known == digest:
                if kv_key not in self._hashes:
                    self._hashes[kv_key] = digest
                    self.store.kv_put(KV_INDEX, kv_key, digest)
                continue
            try:
                self.s3.put_object(Bucket=bucket, Key=key, Body=content,
                                   ContentType="text/plain; charset=utf-8")
            except Exception as exc:
                from wsmon.core.aws import describe_client_error

                report.warnings.append(f"index s3://{bucket}/{key}: {strip_control(describe_client_error(exc))}")
                continue
            self._hashes[kv_key] = digest
            self.store.kv_put(KV_INDEX, kv_key, digest)
            report.index_writes.append(f"s3://{bucket}/{key}")
