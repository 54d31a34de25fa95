"""`wsmon --headless` as a real process: SIGTERM and SIGINT stop it cleanly (exit 0), its logs are
JSON lines on stdout, and it says goodbye in the store so no dashboard shows it as stale."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from wsmon.engine.store import open_store
from wsmon.engine.store.base import StoreError, StoreNotInitialized

STARTUP_DEADLINE = 20.0
EXIT_DEADLINE = 15.0


def write_config(tmp_path: Path, monitor_id: str) -> Path:
    config = tmp_path / "wsmon.toml"
    config.write_text(f"""
monitor_id = "{monitor_id}"
state_dir = "{tmp_path / 'state'}"

[store]
url = "sqlite:///{tmp_path / 'state.db'}"
heartbeat_seconds = 1

[scheduler]
interval_seconds = 1

[clusters]
pcluster_discovery = false
slurm_usage = false
static = [{{ name = "c1", max_vcpus = 8, max_memory_gb = 32, max_concurrent_worksets = 1 }}]

[runner]
kind = "simulated"

[metrics]
sink = "none"
""", encoding="utf-8")
    return config


@pytest.mark.slow
@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGINT], ids=lambda s: s.name)
def test_headless_stops_cleanly_on_a_signal(tmp_path: Path, signum: signal.Signals) -> None:
    monitor_id = f"shutdown-{signum.name.lower()}"
    config = write_config(tmp_path, monitor_id)
    env = {k: v for k, v in os.environ.items() if not k.startswith("WSMON_")}
    env.update(XDG_CONFIG_HOME=str(tmp_path / "xdg-config"), XDG_STATE_HOME=str(tmp_path / "xdg-state"))
    proc = subprocess.Popen([sys.executable, "-m", "wsmon.cli", "--config", str(config), "--headless"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, text=True)
    store = None
    not_yet: StoreError | None = None
    try:
        deadline = time.monotonic() + STARTUP_DEADLINE
        while proc.poll() is None and time.monotonic() < deadline:
            if (tmp_path / "state.db").exists():
                try:
                    store = store or open_store(f"sqlite:///{tmp_path / 'state.db'}", create=False)
                except StoreNotInitialized as exc:  # the file exists a moment before its schema
                    not_yet = exc
                else:
                    if any(m.monitor_id == monitor_id for m in store.list_monitors()):
                        break
            time.sleep(0.1)
        else:
            raise AssertionError(f"the engine never recorded its heartbeat: {proc.poll()=} {not_yet}")
        proc.send_signal(signum)
        out, err = proc.communicate(timeout=EXIT_DEADLINE)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 0, err[-2000:]
    events = [json.loads(line)["event"] for line in out.splitlines() if line.strip()]
    assert "signal_received" in events and events[-1] == "engine_stopped", (events[-10:], err[-2000:])
    assert store is not None
    try:
        assert monitor_id not in [m.monitor_id for m in store.list_monitors()]
    finally:
        store.close()
