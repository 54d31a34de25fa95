"""The Daylily workset folder contract on S3: discovery, sync with the store, sentinel write-back.

A workset is a folder ``s3://BUCKET/PREFIX/<name>/`` directly under a configured source. Its
state in S3 is told by sentinel objects ``daylily.<name>``; with several present, precedence
decides: ignore > error > complete > in_progress > lock > ready. A sentinel body is a timestamp
(``20251016T111111``, ISO 8601 with or without microseconds, ``Z`` or ``+00:00``); an error body
is ``<timestamp>\\t<detail>``. A body that does not parse is kept as text with a warning.

What a poll costs (the earlier monitor listed every folder recursively and read every sentinel
body, about 2N+1 LIST and 3N GET requests per poll):

* each source is listed with ``Delimiter='/'`` (one request per 1,000 folders);
* a folder is listed (again with the delimiter, never into ``sample_data/``) only when it is
  not in a terminal state in the store, or when its turn to be reconciled comes: terminal
  folders are re-listed in a fixed rotation, ``terminal / reconcile_every`` per poll (derived
  from the persisted poll number, so a restart continues the rotation), so each is seen every
  ``reconcile_every`` polls and the cost is the same every poll instead of a spike every N;
* a sentinel body is fetched only when its ETag changed; the ETag cache lives in the store
  (``kv`` namespace ``s3.folders``) so it survives a restart;
* listings run in a pool of ``list_workers`` threads, FASTQ HEADs in ``head_workers``.

Sync rules: a new folder with ``daylily.ready`` is validated and registered (ready, or error
with its findings and a ``daylily.error`` body ``<timestamp>\\t<code>: <message>``). A folder
unknown to the store that carries only a terminal sentinel is imported in that state with the
sentinel's timestamp. Operator intent in S3 is honoured: a new ``daylily.ignore`` (one this
monitor did not write) ignores the workset; the sentinel of the store's state removed and a new
``daylily.ready`` newer than the last transition is a retry request (re-validated first).
Otherwise the store is authoritative: each poll rewrites sentinels that disagree with it. A
folder that vanished is marked ``s3_missing``, never deleted.
"""

from __future__ import annotations

import hashlib
import posixpath
import threading
import zlib
from collections import Counter
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import structlog

from wsmon.core.clock import Clock, SystemClock, isoformat, parse_iso, utc
from wsmon.engine import diagnostics
from wsmon.engine.store.base import IllegalTransition, StateConflict, Store, StoreError
from wsmon.engine.worksetfiles import (
    INFO_FILE,
    SAMPLE_DATA_DIR,
    SAMPLES_FILE,
    WORK_FILE,
    WORKSET_FILES,
    RawFile,
    ValidationReport,
    finding,
    s3_exists_checker,
    validate_files,
)
from wsmon.core.models import WorksetState, Workset
from wsmon.core.textsafe import strip_control, truncate

log = structlog.get_logger(__name__)

S = WorksetState

# highest precedence first
SENTINELS = ("ignore", "error", "complete", "in_progress", "lock", "ready")
SENTINEL_PREFIX = "daylily."
PRECEDENCE = {name: rank for rank, name in enumerate(SENTINELS)}  # lower = stronger
STATE_SENTINEL: dict[WorksetState, str] = {
    S.READY: "ready", S.LOCKED: "lock", S.IN_PROGRESS: "in_progress", S.COMPLETE: "complete",
    S.ERROR: "error", S.RETRYING: "error", S.FAILED: "error", S.IGNORED: "ignore",
}
IMPORTABLE = {"complete": S.COMPLETE, "error": S.ERROR, "ignore": S.IGNORED}
RETRY_FROM = frozenset({S.ERROR, S.FAILED, S.RETRYING, S.IGNORED, S.COMPLETE})
SENTINEL_READ_BYTES = 4096
KV_FOLDERS = "s3.folders"
KV_INDEX = "s3.index"
KV_META = "s3.meta"
S3_ACTOR = "s3"
WRITER_METADATA = "wsmon-writer"  # x-amz-meta-wsmon-writer on the sentinels wsmon writes


# -- sentinel bodies --------------------------------------------------------------------------
def parse_timestamp(text: str) -> datetime | None:
    """The timestamp formats writers in the field used; None when it is none of them."""
    value = text.strip()
    if not value:
        return None
    for fmt in ("%Y%m%dT%H%M%S", "%Y%m%dT%H%M%SZ", "%Y%m%d%H%M%S"):
        try:
            return datetime.strptime(value, fmt).replace(tzinfo=timezone.utc)
        except ValueError:
            pass
    if value.isdigit() and 9 <= len(value) <= 11:  # epoch seconds (date +%s)
        return datetime.fromtimestamp(int(value), tz=timezone.utc)
    try:
        return utc(datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00")))
    except ValueError:
        return None


@dataclass
class SentinelBody:
    timestamp: datetime | None
    detail: str | None
    text: str
    warning: str | None = None


def parse_sentinel_body(data: bytes) -> SentinelBody:
    """``<timestamp>`` or ``<timestamp>\\t<detail>``; anything else is kept as text."""
    text = data.decode("utf-8", errors="replace").strip()
    if not text:
        return SentinelBody(None, None, "")
    head, sep, rest = text.partition("\t")
    stamp = parse_timestamp(head)
    if stamp is None and not sep:
        first, _, remainder = text.partition(" ")
        stamp = parse_timestamp(first)
        if stamp is not None:
            head, rest = first, remainder
    if stamp is None:
        stamp_line = text.splitlines()[0] if text else ""
        stamp = parse_timestamp(stamp_line)
        if stamp is None:
            return SentinelBody(None, truncate(strip_control(text), 2000), text,
                                warning=f"unreadable timestamp {truncate(strip_control(head), 60)!r}")
        rest = "\n".join(text.splitlines()[1:])
    detail = rest.strip() or None
    return SentinelBody(stamp, truncate(strip_control(detail), 2000) if detail else None, text)


def format_sentinel_body(workset: Workset) -> str:
    """What this monitor writes into the sentinel of ``workset``'s state."""
    stamp = workset.state_changed_at.strftime("%Y-%m-%dT%H:%M:%SZ")
    sentinel = STATE_SENTINEL[workset.state]
    if sentinel == "error":
        code = workset.error_code or diagnostics.UNKNOWN_CODE
        detail = strip_control(workset.error_details or diagnostics.get(code).title)
        if detail.startswith(f"{code}: "):
            detail = detail[len(code) + 2:]
        return f"{stamp}\t{code}: {truncate(detail, 1000)}\n"
    if sentinel == "lock" and workset.lock_owner:
        return f"{stamp}\t{strip_control(workset.lock_owner)}\n"
    return f"{stamp}\n"


def escape_index_value(value: str) -> str:
    return (value.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n")
            .replace("\r", "\\r"))


# -- what we know about a folder --------------------------------------------------------------
@dataclass
class SentinelInfo:
    name: str
    etag: str
    last_modified: str  # iso
    size: int
    timestamp: str | None = None  # iso, from the body
    detail: str | None = None
    warning: str | None = None
    ours: bool = False
    loaded: bool = True  # False: body not read yet (masked by a stronger sentinel)

    @property
    def effective_time(self) -> datetime:
        return parse_iso(self.timestamp) if self.timestamp else parse_iso(self.last_modified)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> SentinelInfo:
        return cls(**{k: data.get(k) for k in cls.__dataclass_fields__ if k in data})


def sentinel_state(names: Iterable[str]) -> str | None:
    present = [n for n in names if n in PRECEDENCE]
    return min(present, key=PRECEDENCE.__getitem__) if present else None


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


def _stable_slot(key: str, modulo: int) -> int:
    return zlib.crc32(key.encode("utf-8", "surrogatepass")) % modulo


# -- poll report ------------------------------------------------------------------------------
@dataclass
class PollReport:
    seq: int
    started_at: datetime
    duration_seconds: float = 0.0
    sources: list[dict[str, Any]] = field(default_factory=list)
    folders_seen: int = 0
    folders_listed: int = 0
    registered: list[str] = field(default_factory=list)
    imported: list[dict[str, str]] = field(default_factory=list)
    invalid: list[dict[str, str]] = field(default_factory=list)
    changes: list[dict[str, str]] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    reappeared: list[str] = field(default_factory=list)
    waiting: list[dict[str, str]] = field(default_factory=list)
    errors: list[dict[str, str]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    sentinel_writes: int = 0
    index_writes: list[str] = field(default_factory=list)
    requests: dict[str, int] = field(default_factory=dict)

    @property
    def changed(self) -> bool:
        return bool(self.registered or self.imported or self.invalid or self.changes
                    or self.missing or self.reappeared)

    @property
    def request_total(self) -> int:
        return sum(self.requests.values())

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["started_at"] = isoformat(self.started_at)
        out["request_total"] = self.request_total
        return out


class S3Source:
    """Discovery and write-back for every configured source. Thread-safe; one poll at a time."""

    def __init__(self, settings: Any, store: Store, *, clock: Clock | None = None,
                 s3_client: Any = None, monitor_id: str = "wsmon") -> None:
        self.settings = settings
        self.discovery = settings.discovery
        self.store = store
        self.clock = clock or SystemClock()
        self.monitor_id = monitor_id
        if s3_client is None:
            from wsmon.core import aws

            s3_client = aws.client(
                "s3", profile=settings.aws.profile, region=settings.aws.region,
                endpoint_url=settings.aws.endpoint_url, max_attempts=settings.aws.max_attempts,
                max_pool_connections=max(10, self.discovery.list_workers + self.discovery.head_workers),
            )
        self.s3 = s3_client
        self._poll_lock = threading.Lock()
        # one poll counter per set of sources: several S3Source instances share the store
        self._seq_key = "poll_seq:" + "+".join(sorted(
            f"{src.bucket}/{normalize_prefix(src.prefix)}" for src in self.discovery.sources))
        self._cache_lock = threading.Lock()
        self._cache: dict[str, dict[str, Any]] | None = None
        self._dirty: set[str] = set()
        self._index_hashes: dict[str, str] | None = None
        self._mirror_generation: dict[str, int] = {}
        self._known: dict[str, Workset] = {}
        self._watermark: datetime | None = None
        self._requests: Counter[str] = Counter()
        self._requests_lock = threading.Lock()
        self.s3.meta.events.register("before-call.s3", self._count_request,
                                     unique_id=f"wsmon-s3source-count-{id(self)}")

    # -- bookkeeping ------------------------------------------------------------------------
    def _count_request(self, model: Any = None, **_: Any) -> None:
        with self._requests_lock:
            self._requests[getattr(model, "name", "?")] += 1

    def _take_request_counts(self) -> dict[str, int]:
        with self._requests_lock:
            out = dict(self._requests)
            self._requests.clear()
            return out

    def _load_cache(self) -> dict[str, dict[str, Any]]:
        if self._cache is None:
            self._cache = self.store.kv_get_all(KV_FOLDERS) or {}
        return self._cache

    def _cached_sentinels(self, key: str) -> dict[str, SentinelInfo]:
        entry = self._load_cache().get(key) or {}
        return {n: SentinelInfo.from_json(v) for n, v in (entry.get("sentinels") or {}).items()}

    def _store_snapshot(self, snap: FolderSnapshot) -> None:
        with self._cache_lock:
            if self._mirror_generation.get(snap.key, 0) != snap.generation:
                return  # mirror_state wrote meanwhile: its view is newer than this listing
            cache = self._load_cache()
            entry = {"sentinels": {n: s.to_json() for n, s in sorted(snap.sentinels.items())},
                     "files": {n: list(v) for n, v in sorted(snap.files.items())},
                     "sample_data": snap.has_sample_data}
            if cache.get(snap.key) != entry:
                cache[snap.key] = entry
                self._dirty.add(snap.key)

    def _flush_cache(self) -> None:
        with self._cache_lock:
            if not self._dirty or self._cache is None:
                return
            items = {k: self._cache[k] for k in self._dirty if k in self._cache}
            self._dirty.clear()
        try:
            self.store.kv_put_many(KV_FOLDERS, items)
        except StoreError as exc:
            log.warning("s3source.cache_persist_failed", error=str(exc))
            with self._cache_lock:
                self._dirty.update(items)

    def _refresh_known(self) -> None:
        changed, self._watermark = self.store.worksets_changed_since(self._watermark)
        for ws in changed:
            self._known[ws.workset_id] = ws

    def _remember(self, ws: Workset | None) -> Workset | None:
        if ws is not None:
            self._known[ws.workset_id] = ws
        return ws

    # -- S3 primitives ----------------------------------------------------------------------
    def _list(self, bucket: str, prefix: str) -> tuple[list[dict[str, Any]], list[str]]:
        """One level under ``prefix``: (objects, sub-prefixes). Paginated, with the delimiter."""
        objects: list[dict[str, Any]] = []
        prefixes: list[str] = []
        kwargs: dict[str, Any] = {"Bucket": bucket, "Prefix": prefix, "Delimiter": "/"}
        while True:
            page = self.s3.list_objects_v2(**kwargs)
            objects.extend(page.get("Contents") or [])
            prefixes.extend(p["Prefix"] for p in page.get("CommonPrefixes") or [])
            token = page.get("NextContinuationToken")
            if not page.get("IsTruncated") or not token:
                return objects, prefixes
            kwargs["ContinuationToken"] = token

    def _inspect_folder(self, bucket: str, prefix: str, name: str, own: str | None) -> FolderSnapshot:
        """List one folder; ``own`` is the sentinel of the store's state (None: unknown folder)."""
        from botocore.exceptions import BotoCoreError, ClientError

        from wsmon.core.aws import error_code

        snap = FolderSnapshot(bucket, prefix, name, listed=True)
        snap.generation = self._mirror_generation.get(snap.key, 0)
        cached = self._cached_sentinels(snap.key)
        snap.had_cache = snap.key in self._load_cache()
        try:
            objects, subprefixes = self._list(bucket, prefix)
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
                snap.sentinels[sname] = self._read_sentinel(bucket, obj, sname, etag,
                                                            load=sname in wanted)
                if changed:
                    snap.new_sentinels.add(sname)
        except ClientError as exc:
            snap.error_code = error_code(exc) or "ClientError"
            snap.error_message = strip_control(str(exc))
        except BotoCoreError as exc:
            snap.error_code = type(exc).__name__
            snap.error_message = strip_control(str(exc))
        return snap

    def _read_sentinel(self, bucket: str, obj: dict[str, Any], sname: str, etag: str, *,
                       load: bool = True) -> SentinelInfo:
        size = int(obj.get("Size", 0))
        last_modified = isoformat(obj["LastModified"])
        info = SentinelInfo(sname, etag, last_modified, size, loaded=load or size == 0)
        if size == 0 or not load:
            return info
        resp = self.s3.get_object(Bucket=bucket, Key=obj["Key"],
                                  Range=f"bytes=0-{SENTINEL_READ_BYTES - 1}")
        body = parse_sentinel_body(resp["Body"].read(SENTINEL_READ_BYTES))
        # written by a wsmon monitor (any: sentinels mirror the shared store), not an operator
        info.ours = WRITER_METADATA in (resp.get("Metadata") or {})
        info.timestamp = isoformat(body.timestamp) if body.timestamp else None
        info.detail = body.detail
        info.warning = body.warning
        return info

    # -- validation -------------------------------------------------------------------------
    def validate_s3_folder(self, bucket: str, prefix: str) -> ValidationReport:
        """Every check on one workset folder in S3 (what ``wsmon validate s3://...`` runs)."""
        return validate_s3_folder(self.s3, bucket, prefix, self.settings)

    def _validate_snapshot(self, snap: FolderSnapshot) -> ValidationReport:
        return _validate_listed(self.s3, snap.bucket, snap.prefix, snap.name, self.settings,
                                snap.files, snap.has_sample_data)

    # -- the poll ---------------------------------------------------------------------------
    def poll(self) -> PollReport:
        """One discovery pass over every source; returns what it found and changed."""
        with self._poll_lock:
            started = self.clock.monotonic()
            self._take_request_counts()
            seq = int(self.store.kv_get(KV_META, self._seq_key) or 0) + 1
            self.store.kv_put(KV_META, self._seq_key, seq)
            report = PollReport(seq=seq, started_at=self.clock.now())
            self._refresh_known()
            locations: dict[tuple[str, str], list[Any]] = {}
            listed_ok: dict[tuple[str, str], dict[str, dict[str, Any]]] = {}
            for source in self.discovery.sources:
                src_prefix = normalize_prefix(source.prefix)
                top = self._poll_source(source.bucket, src_prefix, seq, report)
                index_prefix = normalize_prefix(self.discovery.sentinel_index_prefix or src_prefix)
                locations.setdefault((source.bucket, index_prefix), []).append((source.bucket, src_prefix))
                if top is not None and index_prefix == src_prefix:
                    listed_ok.setdefault((source.bucket, index_prefix), {}).update(top)
            self._flush_cache()
            if self.discovery.write_sentinels:
                for (bucket, index_prefix), members in locations.items():
                    self._write_indexes(bucket, index_prefix, members,
                                        listed_ok.get((bucket, index_prefix)), report)
            report.requests = self._take_request_counts()
            report.duration_seconds = round(self.clock.monotonic() - started, 3)
            log.info("s3source.poll", seq=seq, folders=report.folders_seen,
                     listed=report.folders_listed, requests=report.request_total,
                     registered=len(report.registered), changes=len(report.changes),
                     errors=len(report.errors))
            return report

    def sync_folder(self, bucket: str, prefix: str) -> PollReport:
        """One workset folder now, exactly as the next poll would take it: listed, validated,
        registered or updated (``POST /worksets`` registers a folder without waiting a poll)."""
        prefix = normalize_prefix(prefix)
        name = prefix.rstrip("/").rsplit("/", 1)[-1]
        with self._poll_lock:
            self._take_request_counts()
            report = PollReport(seq=0, started_at=self.clock.now())
            self._refresh_known()
            snap = self._inspect_folder(bucket, prefix, name, self._own_sentinel(name, bucket, prefix))
            report.folders_seen = report.folders_listed = 1
            if snap.error_code is None:
                self._store_snapshot(snap)
            self._sync([snap], report)
            self._flush_cache()
            report.requests = self._take_request_counts()
            return report

    def _belongs(self, ws: Workset, bucket: str, src_prefix: str) -> bool:
        if ws.bucket != bucket or not ws.prefix.startswith(src_prefix) or not ws.prefix.endswith("/"):
            return False
        return "/" not in ws.prefix[len(src_prefix):-1]

    def _own_sentinel(self, name: str, bucket: str, prefix: str) -> str | None:
        ws = self._known.get(name)
        if ws is None or ws.bucket != bucket or ws.prefix != prefix:
            return None
        return STATE_SENTINEL[ws.state]

    def _must_list(self, key: str, ws: Workset | None) -> bool:
        """Listed every poll: unknown, non-terminal, missing, or never seen by this cache."""
        return (ws is None or not ws.state.is_terminal or ws.s3_missing
                or key not in self._load_cache())

    def _poll_source(self, bucket: str, src_prefix: str, seq: int,
                     report: PollReport) -> dict[str, dict[str, Any]] | None:
        from botocore.exceptions import BotoCoreError, ClientError

        from wsmon.core.aws import describe_client_error, error_code

        source_info: dict[str, Any] = {"bucket": bucket, "prefix": src_prefix, "folders": 0}
        report.sources.append(source_info)
        try:
            objects, subprefixes = self._list(bucket, src_prefix)
        except (ClientError, BotoCoreError) as exc:
            code = diagnostics.aws_code(error_code(exc)) if isinstance(exc, ClientError) else \
                diagnostics.classify_exception(exc).code
            message = describe_client_error(exc) if isinstance(exc, ClientError) else str(exc)
            source_info["error"] = f"{code}: {strip_control(message)}"
            report.errors.append({"source": f"s3://{bucket}/{src_prefix}", "code": code,
                                  "message": strip_control(message)})
            log.warning("s3source.source_list_failed", bucket=bucket, prefix=src_prefix,
                        code=code, error=strip_control(message))
            return None
        top = {o["Key"]: o for o in objects}
        source_info["folders"] = len(subprefixes)
        report.folders_seen += len(subprefixes)
        here = {ws.workset_id: ws for ws in self._known.values() if self._belongs(ws, bucket, src_prefix)}
        folders: list[tuple[str, str]] = []
        for sub in subprefixes:
            name = sub[len(src_prefix):-1]
            folders.append((sub, name))
        to_list: list[tuple[str, str]] = []
        terminal: list[tuple[int, str, str]] = []
        for sub, name in folders:
            ws = self._known.get(name)
            key = folder_key(bucket, sub)
            mine = ws if ws is not None and ws.bucket == bucket and ws.prefix == sub else None
            if self._must_list(key, mine):
                to_list.append((sub, name))
            else:
                terminal.append((_stable_slot(key, 1 << 30), sub, name))
        # Terminal folders are re-listed in a fixed rotation, terminal/reconcile_every per poll
        # (the window is computed from the persisted poll number, so it needs no memory and a
        # restart or a fresh S3Source continues where the last one left off): each folder once
        # every reconcile_every polls, and no poll pays for all of them at once.
        terminal.sort()
        count, every = len(terminal), self.discovery.reconcile_every
        window = set()
        if count:
            window = {i % count for i in range(seq * count // every, (seq + 1) * count // every)}
        snapshots: list[FolderSnapshot] = []
        for i, (_, sub, name) in enumerate(terminal):
            if i in window:
                to_list.append((sub, name))
            else:
                key = folder_key(bucket, sub)
                snapshots.append(FolderSnapshot(bucket, sub, name,
                                                sentinels=self._cached_sentinels(key), had_cache=True))
        if to_list:
            with ThreadPoolExecutor(max_workers=min(self.discovery.list_workers, len(to_list)),
                                    thread_name_prefix="wsmon-list") as pool:
                listed = list(pool.map(
                    lambda f: self._inspect_folder(bucket, f[0], f[1], self._own_sentinel(f[1], bucket, f[0])),
                    to_list))
            report.folders_listed += len(listed)
            for snap in listed:
                if snap.error_code is None:
                    self._store_snapshot(snap)
            snapshots.extend(listed)
        self._sync(snapshots, report)
        present = {name for _, name in folders}
        for name, ws in here.items():
            if name not in present and not ws.s3_missing:
                try:
                    self._remember(self.store.update_fields(name, actor=self.monitor_id, s3_missing=True))
                    report.missing.append(name)
                except StoreError as exc:
                    report.errors.append({"workset_id": name, "code": "store", "message": str(exc)})
        return top

    # -- sync -------------------------------------------------------------------------------
    def _sync(self, snapshots: list[FolderSnapshot], report: PollReport) -> None:
        to_validate: list[tuple[FolderSnapshot, Workset | None]] = []
        for snap in snapshots:
            for s in snap.sentinels.values():
                if s.warning and s.name in snap.new_sentinels:
                    report.warnings.append(f"{snap.uri}{SENTINEL_PREFIX}{s.name}: {s.warning}")
            ws = self._known.get(snap.name)
            if ws is not None and (ws.bucket != snap.bucket or ws.prefix != snap.prefix):
                report.errors.append({"workset_id": snap.name, "code": "WS-CFG-007",
                                      "message": f"{snap.uri} has the same name as s3://{ws.bucket}/"
                                                 f"{ws.prefix}; it is skipped"})
                continue
            try:
                action = self._decide(snap, ws, report)
            except StoreError as exc:
                report.errors.append({"workset_id": snap.name, "code": "store", "message": str(exc)})
                self._forget(snap.key)  # so what was new this time is still new next time
                continue
            if action == "validate":
                to_validate.append((snap, ws))
        if not to_validate:
            return
        with ThreadPoolExecutor(max_workers=min(self.discovery.list_workers, len(to_validate)),
                                thread_name_prefix="wsmon-validate") as pool:
            results = list(pool.map(lambda item: self._validate_snapshot(item[0]), to_validate))
        for (snap, ws), result in zip(to_validate, results):
            try:
                if ws is None:
                    self._register_new(snap, result, report)
                elif ws.state is S.READY:
                    self._fill_in_validation(ws, result, report)
                else:
                    self._apply_retry_request(snap, ws, result, report)
            except StoreError as exc:
                report.errors.append({"workset_id": snap.name, "code": "store", "message": str(exc)})
                self._forget(snap.key)

    def _forget(self, key: str) -> None:
        with self._cache_lock:
            if self._cache is not None and self._cache.pop(key, None) is not None:
                self._dirty.discard(key)
                try:
                    self.store.kv_delete(KV_FOLDERS, key)
                except StoreError:
                    pass

    def _decide(self, snap: FolderSnapshot, ws: Workset | None, report: PollReport) -> str | None:
        now = self.clock.now()
        if snap.error_code is not None:
            self._folder_error(snap, ws, report)
            return None
        state = snap.state
        if ws is None:
            if snap.name in (".", ".."):
                report.waiting.append({"workset_id": snap.name, "why": "unsafe folder name"})
                return None
            if state is None:
                report.waiting.append({"workset_id": snap.name, "why": "no daylily.* sentinel yet"})
                return None
            if state == "ready":
                ready = snap.sentinels["ready"]
                missing = [f for f in WORKSET_FILES if f not in snap.files]
                age = (now - parse_iso(ready.last_modified)).total_seconds()
                if missing and 0 <= age < self.discovery.ready_lock_backoff_seconds:
                    report.waiting.append({"workset_id": snap.name,
                                           "why": f"waiting for upload of {', '.join(missing)}"})
                    return None
                return "validate"
            if state in IMPORTABLE:
                self._import(snap, IMPORTABLE[state], report)
                return None
            report.waiting.append({"workset_id": snap.name,
                                   "why": f"daylily.{state} from another monitor; imported when it ends"})
            return None

        if ws.s3_missing:
            ws = self._remember(self.store.update_fields(ws.workset_id, actor=self.monitor_id,
                                                         s3_missing=False))
            report.reappeared.append(ws.workset_id)
        if snap.listed:
            ignore = snap.sentinels.get("ignore")
            if (ignore is not None and not ignore.ours and ws.state != S.IGNORED
                    and self._is_new(snap, ignore, ws)):
                self._transition(ws, S.IGNORED, "daylily.ignore found in S3", report, actor=S3_ACTOR)
                return None
            own = STATE_SENTINEL[ws.state]
            ready = snap.sentinels.get("ready")
            # by time alone, as the contract says: the operator may touch daylily.ready and
            # remove daylily.error in either order, with a poll in between
            if (ws.state in RETRY_FROM and own not in snap.sentinels and ready is not None
                    and not ready.ours and ready.effective_time > ws.state_changed_at):
                return "validate"
            if ws.state is S.READY and not (ws.metadata or {}).get("work"):
                # e.g. imported from a terminal sentinel, then sent back to ready by an operator:
                # never validated, so the runner would have nothing to run
                return "validate"
        self._reconcile(snap, ws, report)
        return None

    def _is_new(self, snap: FolderSnapshot, sentinel: SentinelInfo, ws: Workset) -> bool:
        """Operator intent: a sentinel that appeared/changed since we last looked, or (no cache to
        compare with) one newer than the workset's last transition."""
        if snap.had_cache:
            return sentinel.name in snap.new_sentinels
        return sentinel.effective_time > ws.state_changed_at

    def _folder_error(self, snap: FolderSnapshot, ws: Workset | None, report: PollReport) -> None:
        code = diagnostics.aws_code(snap.error_code)
        message = f"{snap.error_code} reading {snap.uri}: {truncate(snap.error_message or '', 300)}"
        report.errors.append({"workset_id": snap.name, "code": code, "message": message})
        item = finding(code, message, severity="error").to_dict()
        if ws is None:
            ws = self._remember(self._register(snap, state=S.ERROR, state_at=self.clock.now(),
                                               reason=f"{code}: {message}", error_code=code,
                                               error_details=message, findings=[item]))
            if ws is not None:
                report.invalid.append({"workset_id": snap.name, "code": code, "message": message})
                self._mirror_quietly(ws, report)
        elif ws.state == S.READY:
            self._transition(ws, S.ERROR, f"{code}: {message}", report, error_code=code,
                             error_details=message, findings=[item])

    def _register(self, snap: FolderSnapshot, *, state: WorksetState, state_at: datetime,
                  reason: str, priority: str = "normal", customer_id: str | None = None,
                  metadata: dict[str, Any] | None = None, **fields: Any) -> Workset | None:
        meta = {"s3_uri": snap.uri, **(metadata or {})}
        created = self.store.register_workset(
            snap.name, snap.bucket, snap.prefix, priority=priority, metadata=meta,
            customer_id=customer_id, state=state, state_at=state_at, actor=self.monitor_id,
            reason=reason, **fields)
        if not created:
            return None
        return self.store.get_workset(snap.name)

    def _import(self, snap: FolderSnapshot, state: WorksetState, report: PollReport) -> None:
        sentinel = snap.sentinels[STATE_SENTINEL[state]]
        when = min(sentinel.effective_time, self.clock.now())
        fields: dict[str, Any] = {}
        if state == S.ERROR:
            detail = sentinel.detail or ""
            fields["error_code"] = diagnostics.classify(detail).code if detail else diagnostics.UNKNOWN_CODE
            fields["error_details"] = detail or None
        ws = self._register(snap, state=state, state_at=when,
                            reason=f"imported from S3 sentinel daylily.{STATE_SENTINEL[state]}",
                            metadata={"imported": True}, **fields)
        if self._remember(ws) is not None:
            report.imported.append({"workset_id": snap.name, "state": state.value})

    def _register_new(self, snap: FolderSnapshot, result: ValidationReport, report: PollReport) -> None:
        info = result.info or {}
        metadata = {"work": result.work, "info": result.info}
        common = {"priority": info.get("priority") or "normal", "customer_id": info.get("customer_id"),
                  "metadata": metadata, "findings": result.findings_dicts(),
                  "estimate": result.estimate}
        if info.get("max_retries") is not None:
            common["max_retries"] = info["max_retries"]
        now = self.clock.now()
        if result.valid:
            ready = snap.sentinels["ready"]
            ws = self._register(snap, state=S.READY, state_at=min(ready.effective_time, now),
                                reason="registered from daylily.ready", **common)
            if self._remember(ws) is not None:
                report.registered.append(snap.name)
            return
        first = result.first_error
        assert first is not None
        ws = self._register(snap, state=S.ERROR, state_at=now,
                            reason=f"validation failed: {first.code}: {truncate(first.message, 300)}",
                            error_code=first.code, error_details=first.message, **common)
        if self._remember(ws) is not None:
            report.invalid.append({"workset_id": snap.name, "code": first.code, "message": first.message})
            self._mirror_quietly(ws, report)

    def _fill_in_validation(self, ws: Workset, result: ValidationReport, report: PollReport) -> None:
        info = result.info or {}
        fields: dict[str, Any] = {"findings": result.findings_dicts(), "estimate": result.estimate,
                                  "metadata": {**ws.metadata, "work": result.work, "info": result.info}}
        if result.valid:
            updated = self.store.update_fields(ws.workset_id, actor=self.monitor_id,
                                               expected_state=S.READY,
                                               customer_id=info.get("customer_id"), **fields)
            if info.get("priority") and updated.priority.value != info["priority"]:
                updated = self.store.set_priority(ws.workset_id, info["priority"], self.monitor_id,
                                                  reason="from daylily_info.yaml")
            self._remember(updated)
            return
        first = result.first_error
        assert first is not None
        report.invalid.append({"workset_id": ws.workset_id, "code": first.code, "message": first.message})
        updated = self._transition(ws, S.ERROR, f"validation failed: {first.code}: "
                                   f"{truncate(first.message, 300)}", report,
                                   error_code=first.code, error_details=first.message, **fields)
        if updated is not None:
            self._mirror_quietly(updated, report)

    def _apply_retry_request(self, snap: FolderSnapshot, ws: Workset, result: ValidationReport,
                             report: PollReport) -> None:
        info = result.info or {}
        fields: dict[str, Any] = {"findings": result.findings_dicts(), "estimate": result.estimate,
                                  "metadata": {**ws.metadata, "work": result.work, "info": result.info}}
        if result.valid:
            fields.update(error_code=None, error_details=None, customer_id=info.get("customer_id"))
            self._transition(ws, S.READY, "retry requested in S3: daylily.ready is newer than "
                             f"the last transition and daylily.{STATE_SENTINEL[ws.state]} is gone",
                             report, actor=S3_ACTOR, **fields)
            return
        first = result.first_error
        assert first is not None
        report.invalid.append({"workset_id": ws.workset_id, "code": first.code, "message": first.message})
        fields.update(error_code=first.code, error_details=first.message)
        if ws.state in (S.ERROR, S.FAILED, S.RETRYING):
            updated = self._remember(self.store.update_fields(ws.workset_id, actor=S3_ACTOR,
                                                              expected_state=ws.state, **fields))
        else:
            ready = self._transition(ws, S.READY, "retry requested in S3", report, actor=S3_ACTOR)
            updated = ready and self._transition(
                ready, S.ERROR, f"validation failed: {first.code}: {truncate(first.message, 300)}",
                report, **fields)
        if updated is not None:
            self._mirror_quietly(updated, report)

    def _transition(self, ws: Workset, to: WorksetState, reason: str, report: PollReport, *,
                    actor: str | None = None, **fields: Any) -> Workset | None:
        try:
            updated = self.store.update_state(ws.workset_id, to, reason, actor or self.monitor_id,
                                              expected_state=ws.state, **fields)
        except (IllegalTransition, StateConflict) as exc:
            report.warnings.append(f"{ws.workset_id}: {exc}")
            return None
        self._remember(updated)
        report.changes.append({"workset_id": ws.workset_id, "from": ws.state.value, "to": to.value,
                               "reason": reason})
        return updated

    def _reconcile(self, snap: FolderSnapshot, ws: Workset, report: PollReport) -> None:
        if not self.discovery.write_sentinels:
            return
        desired = STATE_SENTINEL[ws.state]
        our_stale_lock = ws.state != S.LOCKED and (snap.sentinels.get("lock") or SentinelInfo(
            "lock", "", "", 0)).ours
        if snap.state != desired or our_stale_lock:
            # ``ws`` was read when the poll started; an engine may have claimed or finished the
            # workset since. Mirroring that stale view would write e.g. daylily.ready over a
            # running workset, so decide again on the current record (one read, mismatches only).
            current = self._remember(self.store.get_workset(ws.workset_id))
            if current is None:
                return
            desired = STATE_SENTINEL[current.state]
            our_stale_lock = current.state != S.LOCKED and our_stale_lock
            if snap.state != desired or our_stale_lock:
                self._mirror_quietly(current, report)

    # -- write-back -------------------------------------------------------------------------
    def _mirror_quietly(self, ws: Workset, report: PollReport | None) -> None:
        if not self.discovery.write_sentinels or ws.s3_missing:
            return
        try:
            writes = self._mirror(ws)
            if report is not None:
                report.sentinel_writes += writes
        except Exception as exc:  # a failed write is retried by the next poll's reconcile
            from wsmon.core.aws import describe_client_error

            message = strip_control(describe_client_error(exc))
            log.warning("s3source.sentinel_write_failed", workset_id=strip_control(ws.workset_id),
                        error=message)
            if report is not None:
                report.warnings.append(f"{ws.workset_id}: sentinel write failed: {message}")

    def mirror_state(self, workset: Workset | str) -> bool:
        """Write the sentinel for the store's current state of ``workset`` (and remove the ones
        that would mask it, and our own daylily.lock when no longer locked). Returns False when
        write-back is off or the workset is unknown; raises on S3 errors (the next poll retries).
        """
        if not self.discovery.write_sentinels:
            return False
        ws = self.store.get_workset(workset) if isinstance(workset, str) else workset
        if ws is None or ws.s3_missing:  # writing would recreate a folder someone removed
            return False
        self._mirror(ws)
        self._flush_cache()
        return True

    def _mirror(self, ws: Workset) -> int:
        desired = STATE_SENTINEL[ws.state]
        key = folder_key(ws.bucket, ws.prefix)
        with self._cache_lock:
            sentinels = self._cached_sentinels(key)
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
        with self._cache_lock:
            self._mirror_generation[key] = self._mirror_generation.get(key, 0) + 1
            cache = self._load_cache()
            entry = dict(cache.get(key) or {"files": {}, "sample_data": False})
            entry["sentinels"] = {n: s.to_json() for n, s in sorted(sentinels.items())}
            cache[key] = entry
            self._dirty.add(key)
        log.info("s3source.sentinel_written", workset_id=strip_control(ws.workset_id),
                 sentinel=desired, state=ws.state.value)
        return writes

    def _write_indexes(self, bucket: str, index_prefix: str, members: list[tuple[str, str]],
                       listed_top: dict[str, dict[str, Any]] | None, report: PollReport) -> None:
        if self._index_hashes is None:
            self._index_hashes = self.store.kv_get_all(KV_INDEX) or {}
        by_sentinel: dict[str, list[Workset]] = {name: [] for name in SENTINELS}
        for ws in self._known.values():
            if any(self._belongs(ws, b, p) for b, p in members):
                by_sentinel[STATE_SENTINEL[ws.state]].append(ws)
        for name, worksets in by_sentinel.items():
            key = f"{index_prefix}{SENTINEL_PREFIX}{name}.log"
            lines = [f"{escape_index_value(ws.workset_id)}\t{isoformat(ws.state_changed_at)}"
                     for ws in sorted(worksets, key=lambda w: w.workset_id)]
            content = "".join(line + "\n" for line in lines).encode("utf-8")
            digest = hashlib.md5(content, usedforsecurity=False).hexdigest()
            kv_key = f"{bucket}/{key}"
            known = self._index_hashes.get(kv_key)
            if known is None and listed_top is not None:
                # the index sits among the folders: the listing already told us its ETag
                obj = listed_top.get(key)
                known = str(obj.get("ETag", "")).strip('"') if obj else hashlib.md5(
                    b"", usedforsecurity=False).hexdigest()
            if known == digest:
                if kv_key not in self._index_hashes:
                    self._index_hashes[kv_key] = digest
                    self.store.kv_put(KV_INDEX, kv_key, digest)
                continue
            try:
                self.s3.put_object(Bucket=bucket, Key=key, Body=content,
                                   ContentType="text/plain; charset=utf-8")
            except Exception as exc:
                from wsmon.core.aws import describe_client_error

                report.warnings.append(f"index s3://{bucket}/{key}: {strip_control(describe_client_error(exc))}")
                continue
            self._index_hashes[kv_key] = digest
            self.store.kv_put(KV_INDEX, kv_key, digest)
            report.index_writes.append(f"s3://{bucket}/{key}")

    # -- files for the runner ---------------------------------------------------------------
    def download_file(self, workset: Workset | str, name: str, dest_path: str | Path) -> Path:
        """Copy one file of the workset folder (e.g. stage_samples.tsv) to ``dest_path``.

        ``name`` is relative to the folder and may not climb out of it. Workset files are
        capped at ``discovery.max_file_bytes``; sample data is not fetched through here.
        """
        ws = self.store.get_workset(workset) if isinstance(workset, str) else workset
        if ws is None:
            raise KeyError(f"no workset {workset!r} in the store")
        clean = posixpath.normpath(name)
        if name.startswith("/") or clean.startswith("..") or clean in (".", "") or "\x00" in name:
            raise ValueError(f"file name {name!r} must stay inside the workset folder")
        dest = Path(dest_path)
        dest.parent.mkdir(parents=True, exist_ok=True)
        limit = self.discovery.max_file_bytes
        resp = self.s3.get_object(Bucket=ws.bucket, Key=f"{ws.prefix}{clean}")
        tmp = dest.with_name(dest.name + ".part")
        total = 0
        with tmp.open("wb") as fh:
            for chunk in iter(lambda: resp["Body"].read(1 << 16), b""):
                total += len(chunk)
                if total > limit:
                    fh.close()
                    tmp.unlink(missing_ok=True)
                    raise ValueError(f"{clean} is larger than discovery.max_file_bytes ({limit:,})")
                fh.write(chunk)
        tmp.replace(dest)
        return dest


# -- validation of one S3 folder (no store needed: the CLI uses it directly) --------------------
def _validate_listed(s3: Any, bucket: str, prefix: str, name: str, settings: Any,
                     files_present: dict[str, tuple[int, str]],
                     has_sample_data_hint: bool) -> ValidationReport:
    from botocore.exceptions import BotoCoreError, ClientError

    from wsmon.core.aws import error_code

    disc = getattr(settings, "discovery", settings)
    limit = disc.max_file_bytes
    files: dict[str, RawFile | None] = {}
    problems = []
    for fname in WORKSET_FILES:
        if fname not in files_present:
            files[fname] = None
            continue
        size = files_present[fname][0]
        try:
            if size > limit:
                files[fname] = RawFile(size, None)
            elif size == 0:
                files[fname] = RawFile(0, b"")
            else:
                resp = s3.get_object(Bucket=bucket, Key=prefix + fname, Range=f"bytes=0-{limit}")
                data = resp["Body"].read(limit + 1)
                files[fname] = RawFile(max(size, len(data)), data)
        except (ClientError, BotoCoreError) as exc:
            aws = error_code(exc) or type(exc).__name__
            code = diagnostics.aws_code(aws)
            problems.append(finding(code, f"cannot read {fname}: {aws}", file=fname))
            files[fname] = RawFile(0, b"")
    has_sample_data = has_sample_data_hint
    if has_sample_data:
        # the folder listing shows sample_data/ when anything is under it; make sure it is more
        # than a zero-byte "folder" marker (one small request, only when validating)
        try:
            page = s3.list_objects_v2(Bucket=bucket, Prefix=f"{prefix}{SAMPLE_DATA_DIR}/", MaxKeys=2)
            has_sample_data = any(o["Key"] != f"{prefix}{SAMPLE_DATA_DIR}/" for o in page.get("Contents") or [])
        except (ClientError, BotoCoreError):
            pass
    report = validate_files(name, files, settings=disc, target=f"s3://{bucket}/{prefix}",
                            workset_bucket=bucket, workset_prefix=prefix,
                            has_sample_data=has_sample_data,
                            exists=s3_exists_checker(s3, disc.head_workers))
    if problems:
        # a file we could not read is reported as that, not as "does not parse"
        unreadable = {p.file for p in problems}
        report.findings = problems + [f for f in report.findings
                                      if not (f.file in unreadable and f.code.startswith(("WS-CFG", "WS-DAT")))]
    return report


def validate_s3_folder(s3: Any, bucket: str, prefix: str, settings: Any) -> ValidationReport:
    """List one workset folder (with the delimiter) and run every check on it."""
    from botocore.exceptions import BotoCoreError, ClientError

    from wsmon.core.aws import error_code

    prefix = normalize_prefix(prefix)
    name = prefix.rstrip("/").rsplit("/", 1)[-1]
    target = f"s3://{bucket}/{prefix}"
    files: dict[str, tuple[int, str]] = {}
    try:
        objects: list[dict[str, Any]] = []
        subprefixes: list[str] = []
        kwargs: dict[str, Any] = {"Bucket": bucket, "Prefix": prefix, "Delimiter": "/"}
        while True:
            page = s3.list_objects_v2(**kwargs)
            objects.extend(page.get("Contents") or [])
            subprefixes.extend(p["Prefix"] for p in page.get("CommonPrefixes") or [])
            if not page.get("IsTruncated"):
                break
            kwargs["ContinuationToken"] = page["NextContinuationToken"]
    except (ClientError, BotoCoreError) as exc:
        aws = error_code(exc) or type(exc).__name__
        report = ValidationReport(target=target, workset_id=name)
        report.findings.append(finding(diagnostics.aws_code(aws), f"cannot list {target}: {aws}"))
        return report
    for obj in objects:
        leaf = obj["Key"][len(prefix):]
        if leaf in WORKSET_FILES:
            files[leaf] = (int(obj.get("Size", 0)), str(obj.get("ETag", "")))
    if not objects and not subprefixes:
        report = ValidationReport(target=target, workset_id=name)
        report.findings.append(finding("WS-AWS-004", f"nothing at {target}"))
        return report
    has_sample_data = f"{prefix}{SAMPLE_DATA_DIR}/" in subprefixes
    return _validate_listed(s3, bucket, prefix, name, settings, files, has_sample_data)


def parse_s3_uri(uri: str) -> tuple[str, str]:
    """``s3://bucket/a/b/`` -> (bucket, "a/b/")."""
    if not uri.startswith("s3://"):
        raise ValueError(f"{uri!r} is not an s3:// URI")
    bucket, _, key = uri[5:].partition("/")
    if not bucket:
        raise ValueError(f"{uri!r} names no bucket")
    return bucket, key


__all__ = [
    "S3Source", "PollReport", "FolderSnapshot", "SentinelInfo", "SENTINELS", "STATE_SENTINEL",
    "parse_timestamp", "parse_sentinel_body", "format_sentinel_body", "sentinel_state",
    "validate_s3_folder", "parse_s3_uri", "escape_index_value", "INFO_FILE", "WORK_FILE",
    "SAMPLES_FILE",
]
