"""The demo: its folders mean what their names say, and `wsmon --demo --headless` runs the whole
system for a bounded time, shows worksets completing, retrying and failing, and leaves nothing
behind."""

from __future__ import annotations

import fcntl
import json
import os
import re
import signal
import socket
import subprocess
import struct
import sys
import termios
import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from wsmon.demo.run import BUCKET, PREFIX, demo_settings
from wsmon.demo.worksets import initial_worksets
from wsmon.engine.runner import SimulatedRunner
from wsmon.engine.worksetfiles import validate_local_folder

ROOT = Path(__file__).resolve().parents[1]
EXPECTED_CODE = {
    "invalid-missing-sheet": "WS-DAT-001",
    "invalid-bad-yaml": "WS-CFG-002",
    "invalid-fastq-escape": "WS-DAT-007",
    "invalid-shell-in-dy-r": "WS-CFG-004",
    "invalid-no-r1-column": "WS-DAT-004",
}


@pytest.fixture
def settings(tmp_path: Path):
    return demo_settings(endpoint="http://127.0.0.1:1", state_dir=tmp_path, store_kind="sqlite",
                         topic_arn=None)


def _write(folder_files: dict[str, bytes], root: Path) -> None:
    for key, body in folder_files.items():
        path = root / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(body)


def test_demo_folders_validate_as_their_names_say(settings, tmp_path: Path) -> None:
    runner = SimulatedRunner(settings)
    folders = initial_worksets(bucket=BUCKET, prefix=PREFIX, now=datetime.now(timezone.utc),
                               fate=runner.fate)
    assert 35 <= len(folders) <= 45
    assert len({f.name for f in folders}) == len(folders)
    _write({k: v for f in folders for k, v in f.files.items()}, tmp_path / "bucket")
    for ws in folders:
        report = validate_local_folder(tmp_path / "bucket" / PREFIX / ws.name, settings)
        codes = {f.code for f in report.errors}
        if ws.kind == "invalid":
            assert EXPECTED_CODE[ws.name] in codes, (ws.name, codes)
        else:
            assert report.valid, (ws.name, [f.message for f in report.errors])


def test_failing_worksets_are_named_for_their_fate(settings) -> None:
    runner = SimulatedRunner(settings)
    folders = initial_worksets(bucket=BUCKET, prefix=PREFIX, now=datetime.now(timezone.utc),
                               fate=runner.fate)
    runnable = [f for f in folders if f.kind not in ("invalid", "ignored", "imported")]
    fates = {f.name: runner.fate(f.name) for f in runnable}
    assert sorted(n for n, fate in fates.items() if fate == "permanent") == [
        n for n in fates if n.startswith("missing-reference")]
    transient = sorted(n for n, fate in fates.items() if fate == "transient")
    assert len(transient) == 3 and all(n.startswith("flaky-network") for n in transient)
    assert {f.priority for f in folders} == {"urgent", "normal", "low"}
    assert len({f.customer_id for f in folders}) >= 4


def _port_open(url: str) -> bool:
    host, port = re.match(r"http://([\d.]+):(\d+)", url).groups()
    with socket.socket() as sock:
        sock.settimeout(1)
        return sock.connect_ex((host, int(port))) == 0


def _processes_mentioning(text: str) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if text in cmdline:
            found.append(int(entry.name))
    return found


def _run_demo(tmp_path: Path, *args: str, interrupt_after: str | None = None,
              deadline: float = 180) -> tuple[int, str, str]:
    """Run `wsmon --demo --headless ARGS` as a user would; with ``interrupt_after``, press
    Ctrl-C (SIGINT) once a stdout line contains that text."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "WSMON_"))}
    env.update(TMPDIR=str(tmp_path), XDG_CONFIG_HOME=str(tmp_path / "cfg"),
               XDG_STATE_HOME=str(tmp_path / "state"), PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([sys.executable, "-m", "wsmon.cli", "--demo", "--headless", *args],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    lines: list[str] = []
    err: list[str] = []
    drain = threading.Thread(target=lambda: err.extend(proc.stderr), daemon=True)
    drain.start()
    timer = threading.Timer(deadline, proc.kill)
    timer.start()
    try:
        for line in proc.stdout:
            lines.append(line)
            if interrupt_after and interrupt_after in line:
                proc.send_signal(signal.SIGINT)
                interrupt_after = None
        proc.wait()
    finally:
        timer.cancel()
        drain.join(5)
    out = "".join(lines)
    assert proc.returncode is not None and proc.returncode >= 0, (
        f"ended by signal {proc.returncode} (deadline {deadline}s)\n{out[-3000:]}\n{''.join(err)[-3000:]}")
    return proc.returncode, out, "".join(err)


def _assert_left_nothing(out: str) -> None:
    endpoint = re.search(r"AWS stand-in at (http://[\d.:]+)", out).group(1)
    state_dir = re.search(r"state in (\S+)", out).group(1)
    assert not _port_open(endpoint), "the AWS stand-in still listens"
    assert _processes_mentioning(state_dir) == [], "a process of the demo is still running"


@pytest.mark.slow
@pytest.mark.xdist_group("demo")  # two demos at once on two cores only slow each other down
def test_headless_demo_completes_retries_fails_and_recovers_a_stale_lease(tmp_path: Path) -> None:
    code, out, err = _run_demo(tmp_path, "--demo-store", "sqlite", "--timeout", "22")
    assert code == 0, err[-3000:]
    assert "Traceback" not in err
    summary = json.loads(re.search(r"wsmon demo summary: (\{.*\})", out).group(1))
    assert summary.get("complete", 0) >= 4, summary
    assert summary.get("failed", 0) >= 1, summary
    assert summary.get("error", 0) >= 5, summary  # the invalid folders and the imported error

    # with SQLite the state outlives the run: the history tells the story
    from wsmon.engine.store import open_store

    state_db = re.search(r"store (sqlite:///\S+?)\)", out).group(1)
    store = open_store(state_db, create=False)
    try:
        retried = [w.workset_id for w in store.iter_worksets()
                   if any(e.to_state.value == "retrying" for e in store.events(w.workset_id))]
        assert any(name.startswith("flaky-network") for name in retried), retried
        stale = store.events("stale-lease-crashed-monitor")
        assert any(e.actor == "crashed-monitor" and e.to_state.value == "in_progress" for e in stale)
        # the crashed monitor's lease lasts minutes, so an operator can find it and practise a
        # release; release is allowed because the holder's heartbeat is stale, not its lease
        held = store.get_workset("stale-lease-crashed-monitor")
        assert (held.state.value, held.lock_owner) == ("in_progress", "crashed-monitor"), held
        from wsmon.operations import Operations, Result

        outcome = Operations(store, "tester@host", engine_stale_after=timedelta(seconds=14)).release(
            held, "practising on the demo")
        assert outcome.result is Result.DONE, outcome
        assert store.get_workset("stale-lease-crashed-monitor").state.value == "ready"
        assert store.list_monitors() == [] or all(
            m.monitor_id != "demo-engine" for m in store.list_monitors()), "the engine did not say goodbye"
    finally:
        store.close()
    _assert_left_nothing(out)


@pytest.mark.slow
@pytest.mark.xdist_group("demo")
def test_ctrl_c_stops_the_default_dynamodb_demo_cleanly(tmp_path: Path) -> None:
    # After the engine's own first poll: the folder without stage_samples.tsv is given
    # ready_lock_backoff_seconds to finish uploading before it is registered as invalid, so the
    # seeding pass may skip it, and a Ctrl-C right at "engine_started" left the summary one short.
    code, out, err = _run_demo(tmp_path, interrupt_after='"event": "polled"')
    assert code == 0, err[-3000:]
    assert "Traceback" not in err
    assert "dynamodb://wsmon-demo" in out
    summary = json.loads(re.search(r"wsmon demo summary: (\{.*\})", out).group(1))
    assert sum(summary.values()) >= 40
    assert "gone with it" in out  # says where its state lived
    _assert_left_nothing(out)


ESCAPES = re.compile(r"\x1b\[[0-9;?<>=]*[A-Za-z]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[()][0-9A-B]|\x1b[=>]")


def _dashboard_demo(tmp_path: Path, end: Callable[[subprocess.Popen, int], None]) -> tuple[int, str]:
    """`wsmon --demo` in a real pseudo-terminal at 80x24, as over SSH: waits until rows are
    drawn and the engine runs, then ``end(proc, master)`` closes it; returns (exit code, what the
    terminal received, escapes removed)."""
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 80, 0, 0))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "WSMON_"))}
    env.update(TERM="xterm-256color", TMPDIR=str(tmp_path), XDG_CONFIG_HOME=str(tmp_path / "cfg"),
               XDG_STATE_HOME=str(tmp_path / "state"))
    proc = subprocess.Popen([sys.executable, "-m", "wsmon.cli", "--demo"], cwd=ROOT, env=env,
                            stdin=slave, stdout=slave, stderr=slave, start_new_session=True)
    os.close(slave)
    screen = bytearray()
    closed = threading.Event()

    def drain() -> None:
        while not closed.is_set():
            try:
                chunk = os.read(master, 65536)
            except OSError:  # EIO once the child has closed its end
                return
            if not chunk:
                return
            screen.extend(chunk)

    reader = threading.Thread(target=drain, daemon=True)
    reader.start()
    try:
        deadline = time.monotonic() + 120
        # rows drawn (a non-zero total) and the header says the engine of this process is alive
        alive = f"pid {proc.pid}".encode()
        while not (re.search(rb"total [1-9]", screen) and alive in screen) \
                and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.2)
        assert alive in screen, ESCAPES.sub("", screen.decode(errors="replace"))[-3000:]
        end(proc, master)
        code = proc.wait(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        closed.set()
        reader.join(5)
        try:
            os.close(master)
        except OSError:
            pass
    return code, ESCAPES.sub("", screen.decode(errors="replace"))


@pytest.mark.slow
@pytest.mark.xdist_group("demo")
def test_q_quits_the_demo_dashboard_and_leaves_nothing_behind(tmp_path: Path) -> None:
    """`q` quits, says it is stopping the engine, the exit code is 0, the summary says where the
    state lived, and the temporary directory is gone. Before the first rows the header said
    "starting…", never a red "engine ✗ unknown yet"."""
    code, text = _dashboard_demo(tmp_path, lambda proc, master: os.write(master, b"q"))
    assert code == 0, text[-3000:]
    assert "Traceback" not in text
    assert "starting…" in text and "unknown yet" not in text
    assert "stopping the engine…" in text
    assert re.search(r"wsmon demo summary: \{.*\}", text), text[-3000:]
    assert "gone with it" in text
    _assert_left_nothing(text)
    state_dir = re.search(r"state in (\S+)", text).group(1)
    assert not Path(state_dir).exists(), "the demo's temporary directory is still there"


@pytest.mark.slow
@pytest.mark.xdist_group("demo")
def test_a_closed_ssh_session_cleans_up_like_q(tmp_path: Path) -> None:
    """The terminal goes away (the pty's master closes, the kernel sends SIGHUP): the demo stops
    its engine, its AWS stand-in and removes its temporary directory, as `q` does."""
    def hang_up(proc: subprocess.Popen, master: int) -> None:
        os.close(master)
        proc.send_signal(signal.SIGHUP)

    code, text = _dashboard_demo(tmp_path, hang_up)
    assert code == 0, text[-3000:]
    assert "Traceback" not in text
    _assert_left_nothing(text)  # port closed, no process left
    state_dir = re.search(r"state in (\S+)", text).group(1)
    assert not Path(state_dir).exists(), "the demo's temporary directory is still there"
