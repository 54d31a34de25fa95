"""wsmon health (Nagios exit codes), monitors --check / --forget, stale-monitor pruning, the
systemd unit in the docs, and a real ``wsmon --headless`` under a fake systemd notify socket."""

from __future__ import annotations

import os
import queue
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
from datetime import timedelta
from pathlib import Path

import pytest
from click.testing import CliRunner

from wsmon.cli.main import cli
from wsmon.config.settings import Settings
from wsmon.core.clock import ManualClock, SystemClock
from wsmon.core.models import Alert, AlertState, Severity
from wsmon.engine.health import MonitorPruner
from wsmon.engine.store import open_store

DOCS = Path(__file__).resolve().parents[1] / "docs" / "deployment.md"


@pytest.fixture
def store_url(tmp_path, no_user_config) -> str:
    url = f"sqlite:///{tmp_path / 'state.db'}"
    store = open_store(url)
    store.init_schema()
    store.close()
    return url


def heartbeat(url: str, monitor_id: str, *, seconds_ago: float = 0.0, details=None) -> None:
    clock = ManualClock(SystemClock().now() - timedelta(seconds=seconds_ago))
    store = open_store(url, clock=clock)
    try:
        store.record_monitor_heartbeat(monitor_id, "head-1", 4242, "test", role="engine",
                                       details=details or {})
    finally:
        store.close()


def health(url: str, *args: str):
    return CliRunner().invoke(cli, ["--store", url, "health", *args])


# -- wsmon health -----------------------------------------------------------------------------------

def test_health_is_critical_when_no_engine_has_ever_reported(store_url) -> None:
    result = health(store_url)
    assert result.exit_code == 2, result.output
    assert result.output.startswith("WSMON CRITICAL - ")
    assert "NO ENGINE has ever reported" in result.output
    assert len(result.output.strip().splitlines()) == 1


def test_health_is_critical_with_only_a_stale_engine_and_says_since_when(store_url) -> None:
    heartbeat(store_url, "gone-engine", seconds_ago=3600)
    result = health(store_url)
    assert result.exit_code == 2, result.output
    assert "0 alive, 1 stale" in result.output and "last heartbeat 60m ago" in result.output


def test_health_is_degraded_with_a_stale_engine_beside_a_live_one(store_url) -> None:
    heartbeat(store_url, "gone-engine", seconds_ago=3600)
    heartbeat(store_url, "live-engine")
    result = health(store_url)
    assert result.exit_code == 1, result.output
    assert result.output.startswith("WSMON WARNING - engines: 1 alive, 1 stale (gone-engine)")


def test_health_is_critical_when_the_store_is_unreachable(tmp_path, no_user_config) -> None:
    url = f"sqlite:///{tmp_path / 'no-such-dir' / 'state.db'}"
    result = health(url)
    assert result.exit_code == 2, result.output
    assert "store: unreachable" in result.output


def test_health_is_ok_with_a_live_engine_and_reports_job_lag(store_url) -> None:
    jobs = {"sweep": {"interval_seconds": 60, "runs": 3, "overruns": 0, "recent_overruns": 0,
                      "lag_seconds": 0.01, "max_lag_seconds": 0.25, "duration_seconds": 0.1}}
    heartbeat(store_url, "live-engine", details={"jobs": jobs})
    result = health(store_url)
    assert result.exit_code == 0, result.output
    assert "WSMON OK" in result.output and "worst job lag sweep 0.2s" in result.output
    as_json = health(store_url, "--json")
    assert as_json.exit_code == 0
    assert '"oldest_job_lag_seconds": 0.25' in as_json.output


def test_skipped_runs_and_firing_alerts_set_the_level(store_url) -> None:
    jobs = {"sweep": {"interval_seconds": 3, "recent_overruns": 7, "max_lag_seconds": 0.1}}
    heartbeat(store_url, "busy-engine", details={"jobs": jobs})
    result = health(store_url)
    assert result.exit_code == 1 and "skipped runs in 10 min: busy-engine/sweep 7" in result.output
    store = open_store(store_url)
    now = SystemClock().now()
    store.put_alert(Alert(alert_id="a1", rule="dead_lettered", subject="w1", severity=Severity.CRITICAL,
                          state=AlertState.FIRING, summary="w1 failed", pending_since=now,
                          fired_at=now, updated_at=now))
    store.close()
    result = health(store_url)
    assert result.exit_code == 2 and "alerts firing: 1 critical" in result.output
    alias = CliRunner().invoke(cli, ["--store", store_url, "monitors", "--check"])
    assert alias.exit_code == 2 and alias.output == result.output


# -- stale monitors ---------------------------------------------------------------------------------

def _heartbeat_alert(store, monitor_id: str, now) -> Alert:
    return store.put_alert(Alert(alert_id=f"hb-{monitor_id}", rule="engine_heartbeat",
                                 subject=monitor_id, severity=Severity.CRITICAL,
                                 state=AlertState.FIRING, summary="silent", pending_since=now,
                                 fired_at=now, updated_at=now))


def test_a_monitor_silent_past_the_prune_time_is_pruned_with_an_event_and_its_alert_resolves(
        tmp_path) -> None:
    clock = ManualClock()
    store = open_store(f"sqlite:///{tmp_path / 's.db'}", clock=clock)
    store.init_schema()
    settings = Settings(store={"monitor_prune_hours": 24})
    store.record_monitor_heartbeat("crashed", "h", 1, "v", role="engine")
    store.record_monitor_heartbeat("me", "h", 2, "v", role="engine")
    alert = _heartbeat_alert(store, "crashed", clock.now())
    events: list = []
    pruner = MonitorPruner(settings, store, actor="me",
                           emit=lambda event, **details: events.append((event, details)))
    clock.advance(23 * 3600)
    assert pruner.prune(clock.now()) == []
    clock.advance(2 * 3600)
    assert pruner.prune(clock.now()) == ["crashed"]
    assert [m.monitor_id for m in store.list_monitors()] == ["me"]
    assert store.get_alert(alert.alert_id).state is AlertState.RESOLVED
    (event, details), = events
    assert event == "monitor_pruned" and details["monitor_id"] == "crashed"
    assert "no heartbeat for 25h00m" in details["text"]
    store.close()


def test_monitors_forget_removes_a_stale_monitor_audited_and_refuses_a_live_one(store_url) -> None:
    heartbeat(store_url, "gone-engine", seconds_ago=3600)
    heartbeat(store_url, "live-engine")
    store = open_store(store_url)
    _heartbeat_alert(store, "gone-engine", SystemClock().now())
    store.close()
    runner = CliRunner()
    live = runner.invoke(cli, ["--store", store_url, "monitors", "--forget", "live-engine"])
    assert live.exit_code == 1 and "is alive" in live.output
    done = runner.invoke(cli, ["--store", store_url, "monitors", "--forget", "gone-engine",
                               "--reason", "host decommissioned"])
    assert done.exit_code == 0, done.output
    assert "forgot monitor 'gone-engine'" in done.output and "resolved alert hb-gone-engine" in done.output
    missing = runner.invoke(cli, ["--store", store_url, "monitors", "--forget", "gone-engine"])
    assert missing.exit_code == 3
    store = open_store(store_url)
    try:
        assert [m.monitor_id for m in store.list_monitors()] == ["live-engine"]
        actions = [(a.action, a.target, a.outcome, a.reason) for a in store.list_operator_actions()]
        assert ("forget_monitor", "gone-engine", "done", "host decommissioned") in actions
        assert ("forget_monitor", "live-engine", "refused", "") in actions
    finally:
        store.close()


# -- systemd ---------------------------------------------------------------------------------------

def test_the_unit_in_the_deployment_guide_is_the_one_systemd_unit_prints(no_user_config) -> None:
    result = CliRunner().invoke(cli, ["systemd-unit"])
    assert result.exit_code == 0, result.output
    blocks = re.findall(r"```ini\n(.*?)```", DOCS.read_text(), flags=re.S)
    assert result.output in blocks, "docs/deployment.md: paste the output of `wsmon systemd-unit`"
    for line in ("Type=notify", "WatchdogSec=180", "Restart=on-failure", "NoNewPrivileges=true",
                 "ProtectSystem=strict", "ReadWritePaths=/var/lib/wsmon", "PrivateTmp=true",
                 "EnvironmentFile=/etc/wsmon/secrets.env"):
        assert line in result.output.splitlines()
    user = CliRunner().invoke(cli, ["systemd-unit", "--user"])
    assert "User=" not in user.output and "WantedBy=default.target" in user.output


class NotifySocket:
    """A datagram socket standing in for systemd's; messages arrive on a queue."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(str(path))
        self.sock.settimeout(120)
        self.messages: queue.Queue = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        while True:
            try:
                data = self.sock.recv(4096)
            except OSError:
                return
            self.messages.put(data.decode())

    def wait_for(self, field: str) -> str:
        while True:
            message = self.messages.get(timeout=120)
            if field in message.splitlines():
                return message

    def drain(self) -> list[str]:
        out = []
        while not self.messages.empty():
            out.append(self.messages.get_nowait())
        return out


class LogLines:
    def __init__(self, stream) -> None:
        self.lines: queue.Queue = queue.Queue()
        threading.Thread(target=lambda: [self.lines.put(line) for line in stream], daemon=True).start()

    def wait_for(self, *parts: str) -> str:
        while True:
            line = self.lines.get(timeout=120)
            if all(p in line for p in parts):
                return line


def test_headless_engine_notifies_systemd_and_stops_pinging_when_its_store_is_wedged(
        tmp_path, store_url) -> None:
    notify = NotifySocket(tmp_path / "notify.sock")
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("WSMON_")}
    env.update(NOTIFY_SOCKET=str(notify.path), WATCHDOG_USEC="3000000",  # ping every second
               WSMON_MONITOR_ID="watched-engine", XDG_CONFIG_HOME=str(tmp_path / "cfg"))
    proc = subprocess.Popen([sys.executable, "-m", "wsmon", "--store", store_url, "--headless"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    logs = LogLines(proc.stdout)
    db = store_url.removeprefix("sqlite:///")
    try:
        assert "STATUS=engine watched-engine: 9 jobs scheduled" in notify.wait_for("READY=1")
        notify.wait_for("WATCHDOG=1")
        notify.wait_for("WATCHDOG=1")
        # wedge the store: another connection holds the write lock, the heartbeat blocks in it
        blocker = sqlite3.connect(db, timeout=30, isolation_level=None)
        blocker.execute("BEGIN EXCLUSIVE")
        logs.wait_for('"job_overrun"', '"heartbeat"')
        logs.wait_for('"job_overrun"', '"heartbeat"')
        notify.drain()  # a ping from before the lock may still have been on its way
        logs.wait_for('"job_overrun"', '"heartbeat"')
        logs.wait_for('"job_overrun"', '"heartbeat"')
        assert not [m for m in notify.drain() if "WATCHDOG=1" in m.splitlines()]
        blocker.execute("ROLLBACK")
        blocker.close()
        notify.wait_for("WATCHDOG=1")  # the store answers again: so does the watchdog
        proc.send_signal(signal.SIGTERM)
        notify.wait_for("STOPPING=1")
        assert proc.wait(timeout=120) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


# -- engine_overloaded ------------------------------------------------------------------------------

def test_engine_overloaded_fires_for_a_live_engine_whose_job_keeps_skipping_runs(tmp_path) -> None:
    from wsmon.engine.alerts import AlertEvaluator

    clock = ManualClock()
    store = open_store(f"sqlite:///{tmp_path / 's.db'}", clock=clock)
    store.init_schema()
    sweeping = {"interval_seconds": 3, "recent_overruns": 5, "duration_seconds": 7.5}
    fine = {"interval_seconds": 60, "recent_overruns": 2, "duration_seconds": 0.1}
    store.record_monitor_heartbeat("busy", "h", 1, "v", role="engine",
                                   details={"jobs": {"sweep": sweeping, "poll": fine}})
    store.record_monitor_heartbeat("calm", "h", 2, "v", role="engine",
                                   details={"jobs": {"sweep": fine}})
    settings = Settings(alerts={"engine_overloaded": {"threshold": 3}})
    AlertEvaluator(settings, store, clock=clock).evaluate()
    firing = [a for a in store.list_alerts() if a.rule == "engine_overloaded"]
    assert [(a.subject, a.value, a.state) for a in firing] == [("busy/sweep", 5.0, AlertState.FIRING)]
    assert "took 7.5s" in firing[0].description
    store.close()


# -- the dashboard header -----------------------------------------------------------------------------

def test_the_header_says_loudly_when_no_engine_is_alive_anywhere_and_counts_skipped_runs() -> None:
    from wsmon.core.models import MonitorInfo
    from wsmon.screens.snapshot import engine_status

    now = SystemClock().now()

    def engine(mid: str, seconds_ago: float, **details) -> MonitorInfo:
        seen = now - timedelta(seconds=seconds_ago)
        return MonitorInfo(monitor_id=mid, host=f"host-{mid}", pid=1, version="v", role="engine",
                           started_at=seen, last_seen=seen, details=details)

    gone = engine_status([engine("a", 14 * 60), engine("b", 3600)], now, 210)
    assert gone.kind == "stale"
    assert gone.text == "NO ENGINE ALIVE anywhere: last heartbeat 14m ago (host-a)"
    busy = engine_status([engine("a", 5, jobs={"sweep": {"recent_overruns": 4}})], now, 210)
    assert busy.kind == "alive" and busy.text.endswith(" · 4 skipped job run(s) in 10 min")
    calm = engine_status([engine("a", 5, jobs={"sweep": {"recent_overruns": 0}})], now, 210)
    assert "skipped" not in calm.text
