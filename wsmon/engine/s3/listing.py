"""Listing workset folders, and the ETag cache that spares re-reading sentinel bodies.

A source and each folder are listed one level deep (``Delimiter='/'``, never into
``sample_data/``), every page through boto3's paginator. A sentinel body is fetched only when its
ETag changed since the last listing; what each folder showed is kept in the store (``kv``
namespace ``s3.folders``) so it survives a restart.
"""

from __future__ import annotations

import threading
import zlib
from dataclasses import dataclass, field
from typing import Any

import structlog

from wsmon.core.clock import isoformat
from wsmon.core.models import Workset
from wsmon.core.textsafe import strip_control
from wsmon.engine.s3.sentinels import (
    PRECEDENCE,
    SENTINEL_PREFIX,
    SENTINEL_READ_BYTES,
    WRITER_METADATA,
    SentinelInfo,
    parse_sentinel_body,
    sentinel_state,
)
from wsmon.engine.store.base import Store, StoreError
from wsmon.engine.worksetfiles import SAMPLE_DATA_DIR, WORKSET_FILES

log = structlog.get_logger(__name__)

KV_FOLDERS = "s3.folders"


@dataclass
class FolderSnapshot:
    bucket: str
    prefix: str  # the folder's full prefix, ending in '/'
    name: str
    sentinels: dict[str, SentinelInfo] = field(default_factory=dict)
    new_sentinels: set[str] = field(default_factory=set)  # appeared or changed since last look
    files: dict[str, tuple[int, str]] = field(default_factory=dict)
    has_sample_data: bool = False
    listed: bool = False
    had_cache: bool = False
    error_code: str | None = None  # AWS error code when listing/reading failed
    error_message: str | None = None
    generation: int = 0  # mirror_state writes to this folder seen when the listing started

    @property
    def key(self) -> str:
        return folder_key(self.bucket, self.prefix)

    @property
    def state(self) -> str | None:
        return sentinel_state(self.sentinels)

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}"


def folder_key(bucket: str, prefix: str) -> str:
    return f"{bucket}/{prefix}"


def normalize_prefix(prefix: str) -> str:
    prefix = prefix.lstrip("/")
    return prefix if not prefix or prefix.endswith("/") else prefix + "/"


def stable_slot(key: str, modulo: int) -> int:
    return zlib.crc32(key.encode("utf-8", "surrogatepass")) % modulo


def belongs(ws: Workset, bucket: str, src_prefix: str) -> bool:
    """Whether ``ws`` is a folder directly under the source ``bucket``/``src_prefix``."""
    if ws.bucket != bucket or not ws.prefix.startswith(src_prefix) or not ws.prefix.endswith("/"):
        return False
    return "/" not in ws.prefix[len(src_prefix):-1]


def list_level(s3: Any, bucket: str, prefix: str) -> tuple[list[dict[str, Any]], list[str]]:
    """One level under ``prefix``: (objects, sub-prefixes), every page, with the delimiter."""
    objects: list[dict[str, Any]] = []
    prefixes: list[str] = []
    pages = s3.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix, Delimiter="/")
    for page in pages:
        objects.extend(page.get("Contents") or [])
        prefixes.extend(p["Prefix"] for p in page.get("CommonPrefixes") or [])
    return objects, prefixes


class FolderCache:
    """What the last listing of each folder showed (sentinels with their ETags, the workset files,
    whether sample data is there), loaded from the store once and written back in batches.

    ``lock`` guards the entries: listings run in a thread pool, and ``SentinelWriter`` records
    its writes here (each bumps the folder's generation, so an older listing does not overwrite
    the newer view)."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.lock = threading.Lock()
        self._cache: dict[str, dict[str, Any]] | None = None
        self._dirty: set[str] = set()
        self._mirror_generation: dict[str, int] = {}

    def entries(self) -> dict[str, dict[str, Any]]:
        if self._cache is None:
            self._cache = self.store.kv_get_all(KV_FOLDERS) or {}
        return self._cache

    def has(self, key: str) -> bool:
        return key in self.entries()

    def sentinels(self, key: str) -> dict[str, SentinelInfo]:
        entry = self.entries().get(key) or {}
        return {n: SentinelInfo.from_json(v) for n, v in (entry.get("sentinels") or {}).items()}

    def generation(self, key: str) -> int:
        return self._mirror_generation.get(key, 0)

    def store_snapshot(self, snap: FolderSnapshot) -> None:
        with self.lock:
            if self._mirror_generation.get(snap.key, 0) != snap.generation:
                return  # mirror_state wrote meanwhile: its view is newer than this listing
            cache = self.entries()
            entry = {"sentinels": {n: s.to_json() for n, s in sorted(snap.sentinels.items())},
                     "files": {n: list(v) for n, v in sorted(snap.files.items())},
                     "sample_data": snap.has_sample_data}
            if cache.get(snap.key) != entry:
                cache[snap.key] = entry
                self._dirty.add(snap.key)

    def record_write(self, key: str, sentinels: dict[str, SentinelInfo]) -> None:
        """The folder's sentinels after this monitor wrote them."""
        with self.lock:
            self._mirror_generation[key] = self._mirror_generation.get(key, 0) + 1
            cache = self.entries()
            entry = dict(cache.get(key) or {"files": {}, "sample_data": False})
            entry["sentinels"] = {n: s.to_json() for n, s in sorted(sentinels.items())}
            cache[key] = entry
            self._dirty.add(key)

    def flush(self) -> None:
        with self.lock:
            if not self._dirty or self._cache is None:
                return
            items = {k: self._cache[k] for k in self._dirty if k in self._cache}
            self._dirty.clear()
        try:
            self.store.kv_put_many(KV_FOLDERS, items)
        except StoreError as exc:
            log.warning("s3source.cache_persist_failed", error=str(exc))
            with self.lock:
                self._dirty.update(items)

    def forget(self, key: str) -> None:
        with self.lock:
            if self._cache is not None and self._cache.pop(key, None) is not None:
                self._dirty.discard(key)
                try:
                    self.store.kv_delete(KV_FOLDERS, key)
                except StoreError:
                    pass


def inspect_folder(s3: Any, cache: FolderCache, bucket: str, prefix: str, name: str,
                   own: str | None) -> FolderSnapshot:
    """List one folder; ``own`` is the sentinel of the store's state (None: unknown folder)."""
    from botocore.exceptions import BotoCoreError, ClientError

    from wsmon.core.aws import error_code

    snap = FolderSnapshot(bucket, prefix, name, listed=True)
    snap.generation = cache.generation(snap.key)
    cached = cache.sentinels(snap.key)
    snap.had_cache = cache.has(snap.key)
    try:
        objects, subprefixes = list_level(s3, bucket, prefix)
        snap.has_sample_data = f"{prefix}{SAMPLE_DATA_DIR}/" in subprefixes
        found: dict[str, tuple[dict[str, Any], str]] = {}
        for obj in objects:
            leaf = obj["Key"][len(prefix):]
            etag = str(obj.get("ETag", "")).strip('"')
            if leaf in WORKSET_FILES:
                snap.files[leaf] = (int(obj.get("Size", 0)), etag)
            sname = leaf[len(SENTINEL_PREFIX):] if leaf.startswith(SENTINEL_PREFIX) else ""
            if sname in PRECEDENCE:
                found[sname] = (obj, etag)
        # Bodies that can decide something: the winning sentinel's; for a known workset also
        # daylily.lock's (whether we wrote it) and, when the sentinel of its state is gone,
        # daylily.ready's (a retry request compares its time). The rest are read if they
        # start to matter.
        winner = sentinel_state(found)
        wanted = {winner}
        if own is not None:
            wanted.add("lock")
            if own not in found:
                wanted.add("ready")
        for sname, (obj, etag) in found.items():
            previous = cached.get(sname)
            changed = previous is None or previous.etag != etag
            if not changed and (previous.loaded or sname not in wanted):
                snap.sentinels[sname] = previous
                continue
            snap.sentinels[sname] = read_sentinel(s3, bucket, obj, sname, etag, load=sname in wanted)
            if changed:
                snap.new_sentinels.add(sname)
    except ClientError as exc:
        snap.error_code = error_code(exc) or "ClientError"
        snap.error_message = strip_control(str(exc))
    except BotoCoreError as exc:
        snap.error_code = type(exc).__name__
        snap.error_message = strip_control(str(exc))
    return snap


def read_sentinel(s3: Any, bucket: str, obj: dict[str, Any], sname: str, etag: str, *,
                  load: bool = True) -> SentinelInfo:
    size = int(obj.get("Size", 0))
    last_modified = isoformat(obj["LastModified"])
    info = SentinelInfo(sname, etag, last_modified, size, loaded=load or size == 0)
    if size == 0 or not load:
        return info
    resp = s3.get_object(Bucket=bucket, Key=obj["Key"], Range=f"bytes=0-{SENTINEL_READ_BYTES - 1}")
    body = parse_sentinel_body(resp["Body"].read(SENTINEL_READ_BYTES))
    # written by a wsmon monitor (any: sentinels mirror the shared store), not an operator
    info.ours = WRITER_METADATA in (resp.get("Metadata") or {})
    info.timestamp = isoformat(body.timestamp) if body.timestamp else None
    info.detail = body.detail
    info.warning = body.warning
    return info
