"""What only the SQLite backend has to prove: the file itself (WAL, damage, schema versions, URLs),
`wsmon store`, and that several threads and several OS processes sharing one file never claim a
workset twice."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from click.testing import CliRunner

from wsmon.cli.main import cli
from wsmon.core.clock import ManualClock, SystemClock
from wsmon.engine.store import (
    CorruptStore,
    StoreError,
    StoreNotInitialized,
    open_store,
)
from wsmon.engine.store.sqlite import SCHEMA_VERSION, SqliteStore, parse_sqlite_url
from wsmon.core.models import WorksetState

ROOT = Path(__file__).resolve().parents[1]


def url_for(path: Path) -> str:
    return f"sqlite:///{path}"


# -- the file ----------------------------------------------------------------------------------

def test_creates_parent_directories_and_uses_wal(tmp_path: Path) -> None:
    path = tmp_path / "deep" / "er" / "state.db"
    store = open_store(url_for(path), clock=ManualClock())
    assert path.exists()
    assert store.url == f"sqlite://{path}"
    store.register_workset("ws-1", "b", "p/")
    with sqlite3.connect(path) as raw:
        assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert raw.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    store.close()


def test_init_schema_is_idempotent_and_reports(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    store = SqliteStore(path, clock=ManualClock())
    lines = store.init_schema()
    assert any("created table worksets" in line for line in lines)
    store.register_workset("ws-1", "b", "p/")
    store.close()
    again = SqliteStore(path, clock=ManualClock())
    lines = again.init_schema()
    assert "found table worksets" in lines and not any("created" in line for line in lines)
    assert again.get_workset("ws-1") is not None


def test_missing_file_without_create_says_run_store_init(tmp_path: Path) -> None:
    path = tmp_path / "nothing-here.db"
    with pytest.raises(StoreNotInitialized, match="wsmon store init") as err:
        open_store(url_for(path), create=False)
    assert str(path) in str(err.value)
    assert not path.exists()


def test_empty_file_without_create_is_not_initialised(tmp_path: Path) -> None:
    path = tmp_path / "empty.db"
    path.touch()
    with pytest.raises(StoreNotInitialized, match="wsmon store init"):
        open_store(url_for(path), create=False)
    assert open_store(url_for(path), create=True).queue_stats().total() == 0


@pytest.mark.parametrize("create", [True, False], ids=["create", "no-create"])
def test_a_file_that_is_not_a_database_is_corrupt(tmp_path: Path, create: bool) -> None:
    path = tmp_path / "state.db"
    path.write_bytes(b"this is a text file, not a database\n" * 200)
    with pytest.raises(CorruptStore) as err:
        open_store(url_for(path), create=create)
    assert str(path) in str(err.value)
    assert path.read_bytes().startswith(b"this is a text file")  # left alone for inspection


def test_a_damaged_database_is_corrupt_not_a_traceback(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    store = SqliteStore(path, clock=ManualClock())
    for i in range(300):
        store.register_workset(f"ws-{i}", "bucket", f"prefix/ws-{i}/", metadata={"pad": "x" * 200})
    store.close()  # the last connection checkpoints the WAL into the main file
    with sqlite3.connect(path) as raw:
        page_size = raw.execute("PRAGMA page_size").fetchone()[0]
        root = raw.execute("SELECT rootpage FROM sqlite_master WHERE name = 'worksets'").fetchone()[0]
    with open(path, "r+b") as fh:  # scribble over the worksets table's root page
        fh.seek((root - 1) * page_size)
        fh.write(b"\xa5" * page_size)
    with pytest.raises(CorruptStore) as err:
        damaged = open_store(url_for(path), create=False)
        damaged.list_worksets(limit=1000)
        damaged.queue_stats()
    assert str(path) in str(err.value) and "damaged" in str(err.value)


def test_a_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "state.db"
    SqliteStore(path).close()
    with sqlite3.connect(path) as raw:
        raw.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with pytest.raises(StoreError, match="upgrade wsmon"):
        open_store(url_for(path))


def test_a_schema_2_file_is_upgraded_in_place_on_open(tmp_path: Path) -> None:
    """A file written before the audit trail had its table: no operator_actions table, the
    trail in the kv namespace. Opening it creates the table and moves the entries."""
    path = tmp_path / "state.db"
    SqliteStore(path).close()
    entry = {"at": "2026-12-01T10:00:00+00:00", "actor": "op@host", "action": "retry",
             "target": "ws-1", "reason": "files fixed", "outcome": "refused", "detail": "WS-V-003"}
    with sqlite3.connect(path) as raw:
        raw.execute("DROP TABLE operator_actions")
        raw.execute("INSERT INTO kv VALUES ('operator-actions', 'k1', ?)", (json.dumps(entry),))
        raw.execute("PRAGMA user_version = 2")
    store = open_store(url_for(path), create=False)
    [moved] = store.list_operator_actions(workset_id="ws-1")
    assert (moved.action_id, moved.outcome, moved.detail) == ("k1", "refused", "WS-V-003")
    assert store.kv_get_all("operator-actions") == {}
    store.close()
    with sqlite3.connect(path) as raw:
        assert raw.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 3


def test_a_directory_is_not_a_store(tmp_path: Path) -> None:
    with pytest.raises(StoreError, match="directory"):
        open_store(url_for(tmp_path))


@pytest.mark.parametrize(("url", "expected"), [
    ("sqlite:///var/lib/wsmon/state.db", "/var/lib/wsmon/state.db"),
    ("sqlite:////var/lib/wsmon/state.db", "/var/lib/wsmon/state.db"),
    ("sqlite:///srv/with%20space/state.db", "/srv/with space/state.db"),
    ("SQLITE:///x.db", "/x.db"),
])
def test_url_forms(url: str, expected: str) -> None:
    assert str(parse_sqlite_url(url)) == expected


def test_url_relative_and_home_forms(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert parse_sqlite_url("sqlite:///./rel/s.db") == tmp_path / "rel" / "s.db"
    assert parse_sqlite_url("sqlite:///~/s.db") == tmp_path / "home" / "s.db"


@pytest.mark.parametrize("url", ["sqlite:///:memory:", "sqlite://", "sqlite://host/x.db",
                                 "postgres:///x"])
def test_bad_urls_are_clear_errors(url: str) -> None:
    with pytest.raises(StoreError, match="sqlite"):
        parse_sqlite_url(url)


def test_store_reopens_after_close(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "s.db", clock=ManualClock())
    store.register_workset("ws-1", "b", "p/")
    store.close()
    assert store.get_workset("ws-1") is not None  # a closed store hands out fresh connections
    store.close()


def test_invalid_cursor_is_a_store_error(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "s.db", clock=ManualClock())
    with pytest.raises(StoreError, match="cursor"):
        store.list_worksets(cursor="not-a-cursor!!")


# -- threads -----------------------------------------------------------------------------------

def test_threads_sharing_one_store_claim_each_workset_once(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "s.db", clock=SystemClock())
    ids = [f"ws-{i:03d}" for i in range(120)]
    for wid in ids:
        store.register_workset(wid, "b", f"p/{wid}/")
    claims: dict[str, list[str]] = {}
    lock = threading.Lock()
    start = threading.Barrier(6)

    def worker(n: int) -> None:
        start.wait()
        for wid in ids[n % 3::1] + ids[: n % 3]:
            if store.acquire_lock(wid, f"t{n}", 600) is not None:
                with lock:
                    claims.setdefault(wid, []).append(f"t{n}")

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert sorted(claims) == ids
    assert all(len(owners) == 1 for owners in claims.values())
    for wid in ids:
        ws = store.get_workset(wid)
        assert ws is not None and ws.fence == 1 and ws.lock_owner == claims[wid][0]
    store.close()


# -- several processes on one file -------------------------------------------------------------

CLAIM_WORKER = r"""
import json, os, random, sys, time
from wsmon.core.clock import SystemClock
from wsmon.engine.store import open_store

url, owner, go_file, n = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
store = open_store(url, clock=SystemClock(), create=False)
ids = [f"race {i:04d} [x]" for i in range(n)]
random.Random(owner).shuffle(ids)
open(go_file + "." + owner, "w").close()  # imported and connected: ready to race
deadline = time.monotonic() + 60
while not os.path.exists(go_file):  # start together, so the claims really overlap
    if time.monotonic() > deadline:
        sys.exit("no go signal")
    time.sleep(0.005)
won = [wid for wid in ids if store.acquire_lock(wid, owner, 3600) is not None]
print(json.dumps(won))
"""


@pytest.mark.slow
def test_eight_processes_race_to_claim_500_worksets(tmp_path: Path) -> None:
    n_worksets, n_procs = 500, 8
    path = tmp_path / "race.db"
    url = url_for(path)
    store = open_store(url, clock=SystemClock())
    ids = [f"race {i:04d} [x]" for i in range(n_worksets)]
    for wid in ids:
        store.register_workset(wid, "bucket", f"in/{wid}/")
    go = tmp_path / "go"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = [
        subprocess.Popen([sys.executable, "-c", CLAIM_WORKER, url, f"proc-{k}", str(go),
                          str(n_worksets)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                         text=True, cwd=ROOT, env=env)
        for k in range(n_procs)
    ]
    # Release them together once every interpreter has imported and opened the store.
    deadline = time.monotonic() + 120
    while not all((tmp_path / f"go.proc-{k}").exists() for k in range(n_procs)):
        assert time.monotonic() < deadline, "workers never became ready"
        assert all(p.poll() is None for p in procs), "a worker died before the race"
        time.sleep(0.01)
    go.touch()
    won: dict[str, list[str]] = {}
    for k, proc in enumerate(procs):
        out, err = proc.communicate(timeout=240)
        assert proc.returncode == 0, err
        for wid in json.loads(out):
            won.setdefault(wid, []).append(f"proc-{k}")
    # What the processes believe ...
    assert sorted(won) == ids
    assert {wid: owners for wid, owners in won.items() if len(owners) != 1} == {}
    # ... and what the store recorded: one claim event, one owner, fence 1, for every workset.
    for wid in ids:
        ws = store.get_workset(wid)
        assert ws is not None and ws.state is WorksetState.LOCKED
        claims = [e for e in store.events(wid) if e.to_state is WorksetState.LOCKED]
        assert [e.actor for e in claims] == won[wid] == [ws.lock_owner]
        assert ws.fence == 1
    assert store.queue_stats().total("locked") == n_worksets
    per_process = sorted(len([w for w in won.values() if w == [f"proc-{k}"]])
                         for k in range(n_procs))
    print(f"claims per process: {per_process}")


SHARE_WORKER = r"""
import json, sys
from wsmon.core.clock import SystemClock
from wsmon.engine.store import open_store

store = open_store(sys.argv[1], clock=SystemClock(), create=False)
seen = store.get_workset("from-parent")
lease = store.acquire_lock("from-parent", "child")
store.update_state("from-parent", "in_progress", "child started", "child", lease=lease)
store.register_workset("from-child", "b", "p/from-child/", priority="urgent")
store.kv_put("ns", "child", {"pid": 1})
print(json.dumps({"metadata": seen.metadata if seen else None, "fence": lease.fence}))
"""


@pytest.mark.slow
def test_two_processes_see_each_others_writes(tmp_path: Path) -> None:
    url = url_for(tmp_path / "shared.db")
    store = open_store(url, clock=SystemClock())
    store.register_workset("from-parent", "b", "p/from-parent/", metadata={"who": "parent ü"})
    assert store.get_workset("from-parent") is not None  # this process holds a connection open
    out = subprocess.run([sys.executable, "-c", SHARE_WORKER, url], capture_output=True,
                         text=True, cwd=ROOT, timeout=120,
                         env={**os.environ, "PYTHONPATH": str(ROOT)})
    assert out.returncode == 0, out.stderr
    child = json.loads(out.stdout)
    assert child == {"metadata": {"who": "parent ü"}, "fence": 1}
    ws = store.get_workset("from-parent")
    assert ws is not None and ws.state is WorksetState.IN_PROGRESS and ws.lock_owner == "child"
    assert store.events("from-parent")[-1].reason == "child started"
    assert [w.workset_id for w in store.list_worksets().items] == ["from-child", "from-parent"]
    assert store.kv_get("ns", "child") == {"pid": 1}


# -- wsmon store -------------------------------------------------------------------------------

@pytest.fixture
def runner(no_user_config: None) -> CliRunner:
    return CliRunner()


def test_store_init_then_info(runner: CliRunner, tmp_path: Path) -> None:
    url = url_for(tmp_path / "new" / "state.db")
    result = runner.invoke(cli, ["--store", url, "store", "init"])
    assert result.exit_code == 0, result.output
    assert "created table worksets" in result.output
    again = runner.invoke(cli, ["--store", url, "store", "init"])
    assert again.exit_code == 0 and "found table worksets" in again.output
    store = open_store(url, clock=ManualClock())
    store.register_workset("a", "b", "p/a/")
    store.register_workset("c", "b", "p/c/", state="complete")
    info = runner.invoke(cli, ["--store", url, "store", "info"])
    assert info.exit_code == 0, info.output
    assert str(tmp_path / "new" / "state.db") in info.output
    assert "worksets: 2" in info.output
    as_json = json.loads(runner.invoke(cli, ["--store", url, "store", "info", "--json"]).output)
    assert as_json["states"]["ready"] == 1 and as_json["states"]["complete"] == 1
    assert as_json["total"] == 2


def test_store_init_uses_the_state_directory_by_default(runner: CliRunner,
                                                        tmp_path: Path) -> None:
    result = runner.invoke(cli, ["store", "init"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "xdg-state" / "wsmon" / "state.db").exists()


def test_store_info_on_a_missing_store_fails_cleanly(runner: CliRunner, tmp_path: Path) -> None:
    path = tmp_path / "missing.db"
    result = runner.invoke(cli, ["--store", url_for(path), "store", "info"])
    assert result.exit_code != 0
    assert "wsmon store init" in result.output and "Traceback" not in result.output
    assert not path.exists()


def test_store_commands_on_a_corrupt_file_fail_cleanly(runner: CliRunner, tmp_path: Path) -> None:
    path = tmp_path / "junk.db"
    path.write_text("not sqlite\n" * 100)
    for args in (["store", "init"], ["store", "info"]):
        result = runner.invoke(cli, ["--store", url_for(path), *args])
        assert result.exit_code != 0
        assert str(path) in result.output and "not a SQLite database" in result.output
        assert "Traceback" not in result.output


def test_store_with_an_unknown_scheme_fails_cleanly(runner: CliRunner) -> None:
    result = runner.invoke(cli, ["--store", "redis://localhost/0", "store", "init"])
    assert result.exit_code != 0 and "unknown store URL" in result.output
