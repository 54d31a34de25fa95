"""``wsmon usage`` and ``wsmon show``'s run lines over a store seeded with measured worksets."""

from __future__ import annotations

import csv
import io
import json
from datetime import datetime, timedelta

import pytest
from click.testing import CliRunner

from wsmon.cli.main import cli
from wsmon.core.clock import SystemClock
from wsmon.core.models import ActualUsage, RunProgress, StepRecord
from wsmon.engine.store import open_store

NOW = SystemClock().now()
THIS_MONTH = NOW.replace(day=1, hour=0, minute=0, second=0, microsecond=0)
LAST_MONTH = THIS_MONTH - timedelta(days=3)


def this_month(fraction: float) -> datetime:
    """A time inside [the 1st of this month, now), whatever day the test runs."""
    return THIS_MONTH + (NOW - THIS_MONTH) * fraction


@pytest.fixture
def store_url(tmp_path) -> str:
    url = f"sqlite:///{tmp_path / 'usage.db'}"
    store = open_store(url, clock=SystemClock())
    store.init_schema()

    def run(name, customer, cluster, started, *, cost, hours, estimate, attempts=1, state="complete",
            priority="normal"):
        store.register_workset(name, "b", f"p/{name}/", priority, customer_id=customer, state=state,
                               cluster_name=cluster, attempts=attempts, estimate={"cost_usd": estimate},
                               steps=[StepRecord(name="run", status="succeeded", started_at=started)],
                               actual=None if cost is None else ActualUsage(
                                   vcpu_hours=hours, cost_usd=cost, jobs=3, final=True, status="ok"))

    run("a1", "acme", "prod", this_month(0.2), cost=4.0, hours=80, estimate=5.0)
    run("a2", "acme", "prod", this_month(0.5), cost=2.5, hours=50, estimate=2.0,
        attempts=3, state="failed")
    run("b1", "beta", "spot", this_month(0.8), cost=None, hours=0, estimate=1.0,
        priority="urgent")
    run("old", "acme", "prod", LAST_MONTH, cost=100.0, hours=2000, estimate=90.0)
    store.register_workset("never-ran", "b", "p/never-ran/", customer_id="acme")
    store.register_workset("live", "b", "p/live/", customer_id="acme", progress=RunProgress(
        status="ok", steps_done=3, steps_total=10, percent=30.0, session="wsmon-live-1",
        log_path="/fsx/x/.wsmon-run.log", log_host="head-1", running_rules={"dedup": 2}),
        actual=ActualUsage(vcpu_hours=1.5, cost_usd=0.08, jobs=2, status="sacct: not found on head node"))
    store.close()
    return url


def invoke(store_url: str, *args: str):
    return CliRunner().invoke(cli, ["--store", store_url, *args], catch_exceptions=False)


def test_usage_this_month_by_customer(store_url):
    result = invoke(store_url, "usage", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    groups = {g["group"]: g for g in data["groups"]}
    assert set(groups) == {"acme", "beta"}  # last month's run and the never-run workset are out
    assert groups["acme"] == {"group": "acme", "worksets": 2, "vcpu_hours": 130.0,
                              "actual_cost_usd": 6.5, "estimated_cost_usd": 7.0, "failures": 1,
                              "retries": 2, "unmeasured": 0}
    assert groups["beta"]["unmeasured"] == 1 and groups["beta"]["actual_cost_usd"] == 0
    assert data["total"]["worksets"] == 3 and data["total"]["actual_cost_usd"] == 6.5


def test_usage_period_grouping_csv_and_text(store_url):
    since = (LAST_MONTH - timedelta(days=1)).strftime("%Y-%m-%d")
    until = THIS_MONTH.strftime("%Y-%m-%d")
    result = invoke(store_url, "usage", "--since", since, "--until", until, "--by", "cluster", "--csv")
    rows = list(csv.DictReader(io.StringIO(result.output)))
    assert [(r["group"], r["worksets"], r["actual_cost_usd"]) for r in rows] == [
        ("prod", "1", "100.0"), ("total", "1", "100.0")]
    text = invoke(store_url, "usage", "--by", "priority").output
    assert "usage by priority" in text and "urgent" in text and "normal" in text
    assert text.splitlines()[-1].split()[:2] == ["total", "3"]


def test_usage_bad_dates_are_usage_errors(store_url):
    result = CliRunner().invoke(cli, ["--store", store_url, "usage", "--since", "last tuesday"])
    assert result.exit_code == 2 and "not a date" in result.output
    result = CliRunner().invoke(cli, ["--store", store_url, "usage", "--since", "2026-05-02",
                                      "--until", "2026-05-01"])
    assert result.exit_code == 2 and "--until must be after --since" in result.output


def test_show_names_session_log_progress_and_actual_cost(store_url):
    text = invoke(store_url, "show", "live").output
    assert "3 of 10 steps (30%)" in text
    assert "tmux wsmon-live-1" in text and "/fsx/x/.wsmon-run.log on head-1" in text
    assert "dedup x2" in text
    assert "$0.08 for 1.5 vCPU-hours" in text and "sacct: not found on head node" in text
