"""``S3Source``: one discovery poll over the configured sources, and write-back on request.

What a poll costs (the earlier monitor listed every folder recursively and read every sentinel
body, about 2N+1 LIST and 3N GET requests per poll):

* each source is listed with ``Delimiter='/'`` (one request per 1,000 folders);
* a folder is listed only when it is not in a terminal state in the store, or when its turn to be
  reconciled comes: terminal folders are re-listed in a fixed rotation, ``terminal /
  reconcile_every`` per poll (derived from the persisted poll number, so a restart continues the
  rotation), so each is seen every ``reconcile_every`` polls and the cost is the same every poll
  instead of a spike every N;
* a sentinel body is fetched only when its ETag changed (``listing.FolderCache``);
* listings run in a pool of ``list_workers`` threads, FASTQ HEADs in ``head_workers``.

No folder can stall the others: each validation has a time and memory budget
(``discovery.folder_time_budget_seconds`` / ``folder_memory_budget_mb``) and past it the folder
is refused with WS-DAT-019, once (it is validated again only when its ``daylily.ready`` changes).
``stop_polling`` (the engine shutting down) ends a poll between folders and inside a validation.

Each folder then goes through the sync rules (``sync_rules.decide``, pure) and the decision is
carried out (``apply.DecisionApplier``). A folder that vanished is marked ``s3_missing``, never
deleted.
"""

from __future__ import annotations

import posixpath
import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime
from pathlib import Path
from typing import Any

import structlog

from wsmon.core.clock import Clock, SystemClock
from wsmon.core.models import Workset
from wsmon.core.textsafe import strip_control
from wsmon.engine import diagnostics
from wsmon.engine.recent_changes import ChangeReads, StoreReads, newer
from wsmon.engine.s3.apply import DecisionApplier
from wsmon.engine.s3.listing import (
    FolderCache,
    FolderSnapshot,
    belongs,
    folder_key,
    inspect_folder,
    list_level,
    normalize_prefix,
    stable_slot,
)
from wsmon.engine.s3.report import PollReport
from wsmon.engine.s3.sentinels import SENTINEL_PREFIX, STATE_SENTINEL
from wsmon.engine.s3.sync_rules import Decision, decide
from wsmon.engine.s3.validation import validate_listed, validate_s3_folder
from wsmon.engine.s3.writeback import IndexWriter, SentinelWriter
from wsmon.engine.store.base import Store, StoreError
from wsmon.engine.worksetfiles import Budget, ValidationReport, ValidationStopped

log = structlog.get_logger(__name__)

KV_META = "s3.meta"


class S3Source:
    """Discovery and write-back for every configured source. Thread-safe; one poll at a time."""

    def __init__(self, settings: Any, store: Store, *, clock: Clock | None = None,
                 s3_client: Any = None, monitor_id: str = "wsmon",
                 stop: threading.Event | None = None, changes: ChangeReads | None = None) -> None:
        self.settings = settings
        self.discovery = settings.discovery
        self.store = store
        # the engine's shared view of recent changes; on its own (CLI, API), the store itself
        self.changes: ChangeReads = changes if changes is not None else StoreReads(store)
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
        self._stopping = stop or threading.Event()  # the engine's, shared by all its sources
        # one poll counter per set of sources: several S3Source instances share the store
        self._seq_key = "poll_seq:" + "+".join(sorted(
            f"{src.bucket}/{normalize_prefix(src.prefix)}" for src in self.discovery.sources))
        self.cache = FolderCache(store)
        self.writer = SentinelWriter(self.s3, self.cache, clock=self.clock, monitor_id=monitor_id,
                                     enabled=self.discovery.write_sentinels)
        self.indexes = IndexWriter(self.s3, store)
        self._apply = DecisionApplier(store, clock=self.clock, monitor_id=monitor_id,
                                      remember=self._remember, writer=self.writer)
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

    def _refresh_known(self) -> None:
        changed, self._watermark = self.changes.changed_since(self._watermark)
        for ws in changed:
            # a shared read may predate this source's own last write to the workset
            if newer(ws, self._known.get(ws.workset_id)):
                self._known[ws.workset_id] = ws

    def _remember(self, ws: Workset | None) -> Workset | None:
        if ws is not None:
            self._known[ws.workset_id] = ws
        return ws

    # -- validation -------------------------------------------------------------------------
    def validate_s3_folder(self, bucket: str, prefix: str) -> ValidationReport:
        """Every check on one workset folder in S3 (what ``wsmon validate s3://...`` runs)."""
        return validate_s3_folder(self.s3, bucket, prefix, self.settings)

    def _validate_snapshot(self, snap: FolderSnapshot) -> ValidationReport:
        budget = Budget(self.discovery.folder_time_budget_seconds,
                        self.discovery.folder_memory_budget_mb * 2**20,
                        monotonic=self.clock.monotonic, stop=self._stopping)
        return validate_listed(self.s3, snap.bucket, snap.prefix, snap.name, self.settings,
                               snap.files, snap.has_sample_data, budget)

    def stop_polling(self) -> None:
        """Make a poll in progress end soon (between folders, or inside a validation) and
        refuse new ones: the engine is shutting down."""
        self._stopping.set()

    # -- the poll ---------------------------------------------------------------------------
    def poll(self) -> PollReport:
        """One discovery pass over every source; returns what it found and changed."""
        with self._poll_lock:
            started = self.clock.monotonic()
            self._take_request_counts()
            if self._stopping.is_set():
                return PollReport(seq=0, started_at=self.clock.now())
            seq = int(self.store.kv_get(KV_META, self._seq_key) or 0) + 1
            self.store.kv_put(KV_META, self._seq_key, seq)
            report = PollReport(seq=seq, started_at=self.clock.now())
            self._refresh_known()
            locations: dict[tuple[str, str], list[Any]] = {}
            listed_ok: dict[tuple[str, str], dict[str, dict[str, Any]]] = {}
            for source in self.discovery.sources:
                if self._stopping.is_set():
                    break
                src_prefix = normalize_prefix(source.prefix)
                top = self._poll_source(source.bucket, src_prefix, seq, report)
                index_prefix = normalize_prefix(self.discovery.sentinel_index_prefix or src_prefix)
                locations.setdefault((source.bucket, index_prefix), []).append((source.bucket, src_prefix))
                if top is not None and index_prefix == src_prefix:
                    listed_ok.setdefault((source.bucket, index_prefix), {}).update(top)
            self.cache.flush()
            if self.discovery.write_sentinels:
                for (bucket, index_prefix), members in locations.items():
                    worksets = [ws for ws in self._known.values()
                                if any(belongs(ws, b, p) for b, p in members)]
                    self.indexes.write(bucket, index_prefix, worksets,
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
            snap = inspect_folder(self.s3, self.cache, bucket, prefix, name,
                                  self._own_sentinel(name, bucket, prefix))
            report.folders_seen = report.folders_listed = 1
            if snap.error_code is None:
                self.cache.store_snapshot(snap)
            self._sync([snap], report)
            self.cache.flush()
            report.requests = self._take_request_counts()
            return report

    def sync_event_folders(self, folders: list[tuple[str, str]]) -> tuple[PollReport, set[tuple[str, str]]]:
        """The folders S3 events named, each once and as the poll takes it: listed, validated,
        registered or updated; a folder with no object left gets the vanished rule. What an
        event said is never trusted, only what S3 holds now, so a duplicated, late or
        reordered event changes nothing. Returns the report and the folders not carried out
        (listing or store write failed, or the engine is stopping): their messages stay."""
        from wsmon.engine.s3.events import folder_is_empty

        failed: set[tuple[str, str]] = set()
        with self._poll_lock:
            self._take_request_counts()
            report = PollReport(seq=0, started_at=self.clock.now())
            self._refresh_known()
            snapshots: list[FolderSnapshot] = []
            for bucket, prefix in folders:
                if self._stopping.is_set():
                    failed.add((bucket, prefix))
                    continue
                name = prefix.rstrip("/").rsplit("/", 1)[-1]
                snap = inspect_folder(self.s3, self.cache, bucket, prefix, name,
                                      self._own_sentinel(name, bucket, prefix))
                report.folders_seen += 1
                report.folders_listed += 1
                if snap.error_code is not None:
                    failed.add((bucket, prefix))
                    report.errors.append({"workset_id": name, "code": snap.error_code,
                                          "message": snap.error_message or ""})
                    continue
                if not (snap.sentinels or snap.files or snap.has_sample_data) and \
                        folder_is_empty(self.s3, bucket, prefix):
                    ws = self._known.get(name)
                    if ws is not None and ws.bucket == bucket and ws.prefix == prefix \
                            and not ws.s3_missing:
                        try:
                            self._remember(self.store.update_fields(name, actor=self.monitor_id,
                                                                    s3_missing=True))
                            report.missing.append(name)
                        except StoreError as exc:
                            failed.add((bucket, prefix))
                            report.errors.append({"workset_id": name, "code": "store",
                                                  "message": str(exc)})
                    continue
                self.cache.store_snapshot(snap)
                snapshots.append(snap)
            self._sync(snapshots, report)
            self.cache.flush()
            by_name = {snap.name: (snap.bucket, snap.prefix) for snap in snapshots}
            failed.update(by_name[e["workset_id"]] for e in report.errors
                          if e.get("code") == "store" and e.get("workset_id") in by_name)
            if self._stopping.is_set():
                failed.update(by_name.values())
            report.requests = self._take_request_counts()
            return report, failed

    def _own_sentinel(self, name: str, bucket: str, prefix: str) -> str | None:
        ws = self._known.get(name)
        if ws is None or ws.bucket != bucket or ws.prefix != prefix:
            return None
        return STATE_SENTINEL[ws.state]

    def _must_list(self, key: str, ws: Workset | None) -> bool:
        """Listed every poll: unknown, non-terminal, missing, or never seen by this cache."""
        return (ws is None or not ws.state.is_terminal or ws.s3_missing
                or not self.cache.has(key))

    def _poll_source(self, bucket: str, src_prefix: str, seq: int,
                     report: PollReport) -> dict[str, dict[str, Any]] | None:
        from botocore.exceptions import BotoCoreError, ClientError

        from wsmon.core.aws import describe_client_error, error_code

        source_info: dict[str, Any] = {"bucket": bucket, "prefix": src_prefix, "folders": 0}
        report.sources.append(source_info)
        try:
            objects, subprefixes = list_level(self.s3, bucket, src_prefix)
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
        here = {ws.workset_id: ws for ws in self._known.values() if belongs(ws, bucket, src_prefix)}
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
                terminal.append((stable_slot(key, 1 << 30), sub, name))
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
                                                sentinels=self.cache.sentinels(key), had_cache=True))
        if to_list:
            with ThreadPoolExecutor(max_workers=min(self.discovery.list_workers, len(to_list)),
                                    thread_name_prefix="wsmon-list") as pool:
                listed = list(pool.map(
                    lambda f: inspect_folder(self.s3, self.cache, bucket, f[0], f[1],
                                             self._own_sentinel(f[1], bucket, f[0])),
                    to_list))
            report.folders_listed += len(listed)
            for snap in listed:
                if snap.error_code is None:
                    self.cache.store_snapshot(snap)
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
        to_validate: list[tuple[FolderSnapshot, Workset | None, Decision]] = []
        for snap in snapshots:
            if self._stopping.is_set():
                return
            for s in snap.sentinels.values():
                if s.warning and s.name in snap.new_sentinels:
                    report.warnings.append(f"{snap.uri}{SENTINEL_PREFIX}{s.name}: {s.warning}")
            ws = self._known.get(snap.name)
            if ws is not None and (ws.bucket != snap.bucket or ws.prefix != snap.prefix):
                report.errors.append({"workset_id": snap.name, "code": "WS-CFG-007",
                                      "message": f"{snap.uri} has the same name as s3://{ws.bucket}/"
                                                 f"{ws.prefix}; it is skipped"})
                continue
            decision = decide(snap, ws, now=self.clock.now(),
                              ready_lock_backoff_seconds=self.discovery.ready_lock_backoff_seconds,
                              write_sentinels=self.discovery.write_sentinels)
            try:
                self._apply.apply(decision, snap, ws, report)
            except StoreError as exc:
                report.errors.append({"workset_id": snap.name, "code": "store", "message": str(exc)})
                self.cache.forget(snap.key)  # so what was new this time is still new next time
                continue
            if decision.needs_validation:
                to_validate.append((snap, ws, decision))
        if not to_validate:
            return
        log.info("s3source.validating", folders=len(to_validate))
        with ThreadPoolExecutor(max_workers=min(self.discovery.list_workers, len(to_validate)),
                                thread_name_prefix="wsmon-validate") as pool:
            futures = [pool.submit(self._validate_snapshot, item[0]) for item in to_validate]
            try:
                results = [future.result() for future in futures]
            except ValidationStopped:
                for future in futures:
                    future.cancel()
                report.warnings.append("poll stopped part way: the engine is shutting down")
                log.info("s3source.poll_stopped", validations=len(to_validate))
                return
        for (snap, ws, decision), result in zip(to_validate, results):
            try:
                self._apply.apply_validation(decision, snap, ws, result, report)
            except StoreError as exc:
                report.errors.append({"workset_id": snap.name, "code": "store", "message": str(exc)})
                self.cache.forget(snap.key)

    # -- write-back -------------------------------------------------------------------------
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
        self.writer.mirror(ws)
        self.cache.flush()
        return True

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
