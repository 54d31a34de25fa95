"""``[api] enabled = true``: ``wsmon --headless`` serves the API beside the engine, in the same
process, and stops it with the engine; a configuration it must not serve stops the start."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from api_support import free_port
from waiting import wait_until

pytestmark = pytest.mark.slow


def _health(url: str):
    try:
        r = httpx.get(url, timeout=2)
    except httpx.HTTPError:
        return None
    return r if r.status_code == 200 else None


def test_headless_serves_the_api_beside_the_engine(tmp_path: Path, no_user_config) -> None:
    port = free_port()
    config = tmp_path / "config.toml"
    config.write_text(
        f'[store]\nurl = "sqlite:///{tmp_path / "state.db"}"\nheartbeat_seconds = 1\n'
        f'[runner]\nkind = "simulated"\n[api]\nenabled = true\nbind = "127.0.0.1:{port}"\n')
    log = tmp_path / "headless.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "wsmon.cli", "--config", str(config), "--headless"],
                                stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_until(lambda: proc.poll() is not None or "api.listening" in log.read_text(), "api.listening", timeout=60.0)
        assert proc.poll() is None, log.read_text()
        # the engine in the same process reports its heartbeat: health turns 200
        health = wait_until(lambda: _health(f"http://127.0.0.1:{port}/api/v1/health"), "a healthy API", timeout=60.0)
        assert health.json()["checks"]["engines"]["ok"] is True
        assert httpx.get(f"http://127.0.0.1:{port}/api/v1/queue/stats").json()["total"] == 0
    finally:
        proc.send_signal(signal.SIGTERM)
        code = proc.wait(timeout=60)
    assert code == 0, log.read_text()
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{port}/api/v1/health", timeout=2)


def test_headless_refuses_an_api_it_must_not_serve(tmp_path: Path, no_user_config) -> None:
    config = tmp_path / "config.toml"
    config.write_text(f'[store]\nurl = "sqlite:///{tmp_path / "state.db"}"\n'
                      '[api]\nenabled = true\nbind = "0.0.0.0:0"\n')
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("WSMON_")}
    done = subprocess.run([sys.executable, "-m", "wsmon.cli", "--config", str(config), "--headless"],
                          capture_output=True, text=True, timeout=120, env=env, check=False)
    assert done.returncode == 2
    assert "[api] enabled: refusing to serve the API on 0.0.0.0" in done.stderr
