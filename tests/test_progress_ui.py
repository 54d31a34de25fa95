"""Progress in the dashboard: the queue's progress column at 80 and 140 columns, the detail
screen's Run section (bar, ETA, rules, session, log, actual cost), the live log tail, copy keys."""

from __future__ import annotations

from datetime import timedelta

import pytest
from app_seed import make_app, refresh, screen_text, seed_store, settle, wait_for

from wsmon.core.models import ActualUsage, RunProgress

RUNNING = "ws-running-05"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def seeded_with_progress(tmp_path):
    store, clock = seed_store(str(tmp_path / "s.db"))
    ws = store.get_workset(RUNNING)
    store.update_fields(RUNNING, progress=RunProgress(
        status="ok", steps_done=3, steps_total=10, percent=30.0,
        running_rules={"bwa2a_sort": 2, "[bold red]evil\x1b[31m": 1},
        done_per_rule={"bwa2a_sort": 3}, last_progress_at=clock.now() - timedelta(minutes=12),
        eta=clock.now() + timedelta(hours=2), rate_per_hour=3.5,
        slurm_job_ids=["7000001", "7000002"], session="wsmon-ws-running-05-abc",
        log_path="/state/logs/ws-running-05/run.log"),
        actual=ActualUsage(vcpu_hours=12.5, cost_usd=0.63, jobs=2, jobs_running=1, status="ok"),
        estimate={"cost_usd": 4.8})
    assert ws is not None
    return store, clock


@pytest.mark.anyio
async def test_queue_progress_column_at_80_and_140_columns(tmp_path):
    store, clock = seeded_with_progress(tmp_path)
    app = make_app(tmp_path, store=store, clock=clock)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot, app)
        text = screen_text(app)
        row = next(line for line in text.splitlines() if "ws-running" in line)
        assert row.rstrip().endswith("30%")
        # "ws-urgent-tumor-01" is cut in the middle at 80 columns; both ends stay readable
        other = next(line for line in text.splitlines() if "ws-urg" in line and "mor-01" in line)
        assert other.rstrip().endswith("—")  # no progress known: never a made-up figure
        assert max(len(line) for line in text.splitlines()) <= 80
    app = make_app(tmp_path, store=store, clock=clock)
    async with app.run_test(size=(140, 30)) as pilot:
        await settle(pilot, app)
        row = next(line for line in screen_text(app).splitlines() if "ws-running" in line)
        assert row.rstrip().endswith("█░░░  30%")


@pytest.mark.anyio
async def test_detail_shows_progress_eta_rules_session_log_cost_and_follows_the_tail(tmp_path):
    store, clock = seeded_with_progress(tmp_path)
    app = make_app(tmp_path, store=store, clock=clock)
    async with app.run_test(size=(120, 60)) as pilot:
        await settle(pilot, app)
        await pilot.press("down", "enter")  # the second row: urgent, then the oldest
        await wait_for(pilot, lambda: "Run" in screen_text(app) and "steps" in screen_text(app),
                       what="the detail screen's Run section")
        text = screen_text(app)
        assert "3 of 10 steps" in text and "30%" in text
        assert "ETA" in text and "in 2h00m" in text and "3.5 steps/h" in text
        assert "12m00s ago" in text
        assert "[bold red]evil" in text  # a rule name is shown as text, never as markup
        assert "bwa2a_sort ×2" in text
        assert "wsmon-ws-running-05-abc" in text and "/state/logs/ws-running-05/run.log" in text
        assert "$0.63 for 12.5 vCPU-hours" in text and "estimate $4.80" in text
        assert "s3.console.aws.amazon.com" in text

        # the engine stores new log lines: they appear at the next refresh
        store.update_fields(RUNNING, log_tail="rule dedup:\n    jobid: 4\n4 of 10 steps (40%) done")
        await refresh(pilot, app)
        await wait_for(pilot, lambda: "4 of 10 steps (40%) done" in screen_text(app),
                       what="the new log line")

        await pilot.press("c")
        await pilot.pause()
        assert app.clipboard == RUNNING
        await pilot.press("u")
        await pilot.pause()
        assert app.clipboard == "s3://daylily-ws/worksets/ws-running-05/"


@pytest.mark.anyio
async def test_clusters_screen_charts_throughput_and_errors_with_time_axis_and_month_usage(tmp_path):
    from wsmon.core.models import MetricSample, StepRecord

    store, clock = seeded_with_progress(tmp_path)
    now = clock.now()
    samples = []
    for hours_ago in range(1, 24 * 10):  # ten days of hourly samples: beyond 6 h come roll-ups
        at = now - timedelta(hours=hours_ago)
        samples.append(MetricSample(name="throughput", at=at, value=0.05 * (hours_ago % 5)))
        samples.append(MetricSample(name="error_rate", at=at, value=0.1 * (hours_ago % 3)))
    store.record_metric_samples(samples)
    store.update_fields(RUNNING, steps=[StepRecord(name="run", status="running", started_at=now)])
    app = make_app(tmp_path, store=store, clock=clock)
    async with app.run_test(size=(160, 48)) as pilot:
        await settle(pilot, app)
        app.switch_mode("clusters")
        await wait_for(pilot, lambda: bool(app.charts.get("done per hour")), what="chart history")
        await pilot.pause()
        text = screen_text(app)
        assert "-6h" in text and "now" in text and "minutes ago" not in text
        assert "this month: 1 worksets run, 12.5 vCPU-h, $0.63 actual (estimated $4.80)" in text
        assert "cluster-a $0.63" in text
        chart = app.screen.query_one("#outcome-chart")
        assert list(chart._series) == ["done per hour", "error rate %"]
        points_6h = len(app.charts["done per hour"])
        await pilot.press("t")  # 2 days, hourly roll-ups
        await wait_for(pilot, lambda: len(app.charts.get("done per hour", [])) > points_6h,
                       what="the 2-day range")
        await pilot.pause()
        assert len(app.charts["done per hour"]) <= 48
        assert "-48h" in screen_text(app) or "-36h" in screen_text(app)
        await pilot.press("t")  # 14 days, daily roll-ups
        await wait_for(pilot, lambda: 0 < len(app.charts.get("done per hour", [])) <= 15,
                       what="the 14-day range")


def test_series_differ_by_marker_and_ticks_read_as_times():
    from wsmon.widgets.charts import SERIES_MARKERS, time_ticks

    assert len(set(SERIES_MARKERS)) == len(SERIES_MARKERS)
    assert time_ticks(timedelta(hours=6)) == ([-6.0, -5.0, -4.0, -3.0, -2.0, -1.0, -0.0],
                                              ["-6h", "-5h", "-4h", "-3h", "-2h", "-1h", "now"])
    ticks, labels = time_ticks(timedelta(days=14))
    assert labels[-1] == "now" and all(label.endswith("d") for label in labels[:-1])
