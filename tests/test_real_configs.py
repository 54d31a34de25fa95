"""Real Daylily folders and hostile ones through a poll (issue 11): the real folders are
registered and scheduled by wsmon's own clock, and a hostile folder gets a coded error while
the normal one next to it is registered in the same poll."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import pytest

from wsmon.config.settings import Settings
from wsmon.core import aws
from wsmon.core.clock import ManualClock
from wsmon.core.models import WorksetState
from wsmon.engine.s3source import S3Source
from wsmon.engine.scheduler import ClusterCapacity, placements, schedule
from wsmon.engine.store import open_store
from wsmon.engine.worksetfiles import TSV_COLUMNS

FIXTURE_BUCKET = "lsmc-dayoa-omics-analysis-us-west-2"
STAND_IN_FASTQ = b"@stand-in\nACGT\n+\nIIII\n"


class Bucket:
    """The fixtures' bucket on the moto server, a unique prefix per test, a SQLite store."""

    def __init__(self, endpoint: str, name: str, tmp_path: Path) -> None:
        self.s3 = aws.client("s3", endpoint_url=endpoint, region="us-west-2", max_attempts=3)
        try:
            self.s3.create_bucket(Bucket=FIXTURE_BUCKET,
                                  CreateBucketConfiguration={"LocationConstraint": "us-west-2"})
        except self.s3.exceptions.BucketAlreadyOwnedByYou:
            pass
        self.prefix = f"{name}/active/"
        self.tmp_path = tmp_path
        self.clock = ManualClock(datetime.now(timezone.utc).replace(microsecond=0))
        self.store = open_store(f"sqlite:///{tmp_path}/s.db", clock=self.clock)

    def put(self, key: str, body: bytes | str) -> None:
        self.s3.put_object(Bucket=FIXTURE_BUCKET, Key=key,
                           Body=body.encode() if isinstance(body, str) else body)

    def upload_fixture(self, fixtures: str, name: str, as_name: str | None = None,
                       **replace: str) -> None:
        """A real folder as it is (``replace`` swaps one file's text), with stand-in FASTQs
        where its sample sheet points."""
        folder = Path(fixtures) / name
        base = f"{self.prefix}{as_name or name}/"
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                relative = path.relative_to(folder).as_posix()
                self.put(base + relative, replace.get(relative, path.read_bytes()))
        for line in (folder / "stage_samples.tsv").read_text().splitlines()[1:]:
            if line.strip():
                fields = line.split("\t")
                for uri in (fields[TSV_COLUMNS.index("R1_FQ")], fields[TSV_COLUMNS.index("R2_FQ")]):
                    self.put(uri[len(f"s3://{FIXTURE_BUCKET}/"):], STAND_IN_FASTQ)

    def settings(self, **discovery: object) -> Settings:
        return Settings(discovery={"sources": [{"bucket": FIXTURE_BUCKET, "prefix": self.prefix}],
                                   "ready_lock_backoff_seconds": 0, **discovery},
                        state_dir=self.tmp_path / "state")

    def source(self, **discovery: object) -> S3Source:
        return S3Source(self.settings(**discovery), self.store, clock=self.clock, s3_client=self.s3,
                        monitor_id="mon-1")


@pytest.fixture
def bucket(moto_endpoint: str, unique_name: str, tmp_path: Path) -> Bucket:
    return Bucket(moto_endpoint, unique_name, tmp_path)


def test_a_stale_ready_timestamp_does_not_jump_the_queue(bucket: Bucket, daylily_fixtures: str) -> None:
    # every real folder carries daylily.ready = 20251016T111111; an urgent copy is uploaded at
    # the same moment with the same stale stamp
    bucket.upload_fixture(daylily_fixtures, "test_snv")
    bucket.upload_fixture(daylily_fixtures, "test_help", as_name="urgent_help",
                          **{"daylily_info.yaml": "priority: urgent\n"})
    report = bucket.source().poll()
    assert sorted(report.registered) == ["test_snv", "urgent_help"], report.to_dict()
    normal = bucket.store.get_workset("test_snv")
    # the sentinel's own time is kept and shown as the state's time; age counts from the poll
    assert normal.state_changed_at == datetime(2025, 10, 16, 11, 11, 11, tzinfo=timezone.utc)
    assert normal.created_at == bucket.clock.now()
    ready = list(bucket.store.iter_worksets(state=WorksetState.READY))
    one_slot = ClusterCapacity("c1", "us-west-2d", 1024, 0, 8192, 0, 0, 1, 0.05, "ready")
    decisions = schedule(ready, [one_slot], now=bucket.clock.now())
    assert [d.workset_id for d in placements(decisions)] == ["urgent_help"]
