"""A small, fixed dashboard world for the app tests, snapshots and the tmux check.

Everything happens on a ManualClock, so ages and timestamps are the same on every run.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from wsmon.core.clock import ManualClock
from wsmon.engine.store import open_store
from wsmon.core.models import Alert, AlertState, ClusterStatus, MetricSample, Severity, StepRecord

START = datetime(2026, 3, 2, 6, 0, 0, tzinfo=timezone.utc)
MARKUP_ID = "[@click=app.quit]x"
ESCAPE_ID = "\x1b]0;pwned\x07evil-title"
ENGINE = "head-node-1-wsmon"
WAIT_REASON = "waiting: cluster-a full 3/3, cluster-b full 3/3"


def seed_store(path: str, clock: ManualClock | None = None):
    """Returns (store, clock); the clock ends at START + 6 h."""
    clock = clock or ManualClock(START)
    store = open_store(f"sqlite:///{path}", clock=clock)

    def reg(name: str, priority: str = "normal", customer: str = "acme", **kw):
        store.register_workset(name, "daylily-ws", f"worksets/{name}/", priority=priority,
                               customer_id=customer,
                               metadata={"s3_uri": f"s3://daylily-ws/worksets/{name}/",
                                         "work": {"export_uri": "s3://exports/" + name,
                                                  "notes": "seeded"}},
                               actor="discovery", **kw)
        clock.advance(minutes=7)

    reg("ws-urgent-tumor-01", "urgent", "oncology")
    reg("ws-normal-cohort-02", "normal", "acme")
    reg("ws-low-reanalysis-03", "low", "acme")
    reg("ws-locked-04", "normal", "genomix")
    reg("ws-running-05", "urgent", "genomix", max_retries=3)
    reg("ws-error-06", "normal", "acme", max_retries=3)
    reg("ws-retrying-07", "normal", "oncology", max_retries=3)
    reg("ws-failed-08", "low", "acme", max_retries=1)
    reg("ws-ignored-09", "low", "acme")
    reg("ws-done-10", "normal", "genomix", state="complete")
    reg(MARKUP_ID, "normal", "[bold red]cust[/]")
    reg(ESCAPE_ID, "normal", "acme")

    lease = store.acquire_lock("ws-locked-04", ENGINE)
    assert lease is not None
    lease = store.acquire_lock("ws-running-05", ENGINE)
    store.update_state("ws-running-05", "in_progress", "pipeline started", ENGINE, lease=lease,
                       cluster_name="cluster-a", attempts=1, steps=[
                           StepRecord(name="stage", status="succeeded", started_at=clock.now(),
                                      finished_at=clock.now() + timedelta(minutes=4), exit_code=0),
                           StepRecord(name="run", status="running",
                                      started_at=clock.now() + timedelta(minutes=5)),
                       ], log_tail="rule align_reads:\n  jobid 12\n[bold]not markup[/bold]\n")
    for name, code in (("ws-error-06", "WS-RES-001"), ("ws-retrying-07", "WS-NET-001"),
                       ("ws-failed-08", "WS-DAT-001")):
        lease = store.acquire_lock(name, ENGINE)
        store.update_state(name, "in_progress", "pipeline started", ENGINE, lease=lease,
                           cluster_name="cluster-b", attempts=1)
        store.update_state(name, "error", "step run failed", ENGINE, lease=lease,
                           error_code=code, error_details="exit 137: out of memory",
                           findings=[{"code": "WS-DAT-002", "severity": "warning",
                                      "message": "sample S2 has no R2", "file": "stage_samples.tsv",
                                      "line": 3, "column": None, "remediation": "add R2_FQ"}])
    store.update_state("ws-retrying-07", "retrying", "retry 1 of 3", ENGINE,
                       retry_after=clock.now() + timedelta(minutes=20))
    store.update_state("ws-failed-08", "failed", "retries exhausted", ENGINE)
    store.update_state("ws-ignored-09", "ignored", "daylily.ignore sentinel", "discovery")
    store.update_fields("ws-normal-cohort-02", actor=ENGINE, schedule_reason=WAIT_REASON)
    store.update_fields("ws-low-reanalysis-03", actor="discovery", s3_missing=True)
    clock.advance(minutes=20)

    for name, az, used, act in (("cluster-a", "us-west-2d", 96, 1), ("cluster-b", "us-west-2c", 16, 0)):
        store.put_cluster_status(ClusterStatus(
            name=name, availability_zone=az, source="pcluster" if name == "cluster-a" else "config",
            max_vcpus=256, vcpus_used=used, max_memory_gb=1024, memory_gb_used=used * 3.5,
            max_concurrent_worksets=3, active_worksets=act, cost_per_vcpu_hour=0.05,
            updated_at=clock.now()))
    samples = []
    for minute in range(0, 180, 5):
        at = clock.now() - timedelta(minutes=180 - minute)
        samples.append(MetricSample(name="queue_depth", at=at, value=float(3 + (minute // 20) % 4),
                                    dimensions={"state": "ready"}))
        samples.append(MetricSample(name="cluster_utilisation", at=at,
                                    value=0.2 + 0.15 * ((minute // 15) % 4),
                                    dimensions={"cluster": "cluster-a"}))
    store.record_metric_samples(samples)

    now = clock.now()
    store.put_alert(Alert(alert_id="al-1", rule="urgent_waiting", subject="ws-urgent-tumor-01",
                          severity=Severity.CRITICAL, state=AlertState.FIRING,
                          summary="urgent workset waiting 84 min (threshold 30)",
                          description="An urgent workset has waited longer than 30 minutes.",
                          pending_since=now - timedelta(minutes=40), fired_at=now - timedelta(minutes=35),
                          updated_at=now))
    store.put_alert(Alert(alert_id="al-2", rule="queue_depth", subject="normal",
                          severity=Severity.WARNING, state=AlertState.ACKNOWLEDGED,
                          summary="7 normal worksets waiting (threshold 5)",
                          pending_since=now - timedelta(hours=2), fired_at=now - timedelta(hours=2),
                          acknowledged_by="ops@bastion", acknowledged_at=now - timedelta(hours=1),
                          ack_note="capacity coming", updated_at=now))
    store.put_alert(Alert(alert_id="al-3", rule="stale_lease", subject="ws-old",
                          severity=Severity.INFO, state=AlertState.RESOLVED,
                          summary="stale lease recovered", pending_since=now - timedelta(hours=5),
                          fired_at=now - timedelta(hours=5), resolved_at=now - timedelta(hours=3),
                          updated_at=now))
    store.record_monitor_heartbeat(ENGINE, host="head-node-1", pid=4242, version="0.1.0",
                                   role="engine", started_at=now - timedelta(hours=6))
    return store, clock


def files_valid(workset):
    """The seeded worksets have no S3 folders: re-validation finds their files valid, unless a
    test passes its own validator (see tests/ops_world.py for real folders in moto S3)."""
    from wsmon.engine.worksetfiles import ValidationReport

    return ValidationReport(target=f"s3://{workset.bucket}/{workset.prefix}",
                            workset_id=workset.workset_id)


def make_app(tmp_path, *, store=None, clock=None, validator=files_valid, **ui):
    """A WsmonApp over the seeded store, a fixed clock, no timers that could fire during a test."""
    from wsmon.app import WsmonApp
    from wsmon.config.settings import Settings

    if store is None:
        store, clock = seed_store(str(tmp_path / "s.db"))
    ui.setdefault("bell", False)
    keymap = ui.pop("keymap", {})
    settings = Settings(state_dir=tmp_path / "state", ui={"refresh_interval": 3600, **ui},
                        keymap=keymap)
    app = WsmonApp(store, settings, clock=clock, actor="tester@host",
                   engine_mode_text="attach mode: no engine here", remember_theme=False,
                   validator=validator)
    app.store_url = "sqlite:///seed.db"  # the temp path differs per run; snapshots must not
    return app


async def settle(pilot, app, generation: int = 1, timeout: float = 10.0) -> None:
    """Wait until the app has applied ``generation`` refreshes (the reader runs in a thread)."""
    await wait_for(pilot, lambda: app.refresh_generation >= generation and app.loaded, timeout,
                   what=f"refresh #{generation}")


async def refresh(pilot, app) -> None:
    target = app.refresh_generation + 1
    app.refresh_now()
    await settle(pilot, app, target)


async def wait_for(pilot, predicate, timeout: float = 10.0, what: str = "condition") -> None:
    import time as _time

    deadline = _time.monotonic() + timeout
    while not predicate():
        if _time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await pilot.pause(0.02)
    await pilot.pause()


def screen_text(app) -> str:
    """What the terminal shows, as plain lines (from the SVG screenshot Textual exports)."""
    import html
    import re
    from collections import defaultdict

    svg = app.export_screenshot()
    lines: dict[float, list[tuple[float, str]]] = defaultdict(list)
    for m in re.finditer(r'<text class="[^"]*" x="([\d.]+)" y="([\d.]+)"[^>]*>(.*?)</text>', svg):
        lines[float(m.group(2))].append((float(m.group(1)), html.unescape(m.group(3))))
    out = []
    for y in sorted(lines):
        row = ""
        for x, text in sorted(lines[y]):
            col = int(round(x / 12.2))
            row = row.ljust(col)[:col] + text
        out.append(row.replace("\xa0", " ").rstrip())
    return "\n".join(out)
