"""The CLI companion against a seeded SQLite store: what an operator or a script sees.

Each test seeds its own store file; the CLI opens it by URL exactly as a user would.
"""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from click.testing import CliRunner

from wsmon.cli.main import cli
from wsmon.core.identity import operator_actor as actor
from wsmon.core.clock import ManualClock, SystemClock
from wsmon.engine.store import open_store
from wsmon.core.models import Alert, AlertState, Severity, WorksetState

from ops_world import S3Folders, s3_folders

ROOT = Path(__file__).resolve().parents[1]
WEIRD_ID = "run [bold]x[/bold] \x1b[31mred\x1b]52;c;aGk=\x07 ünï"
EXIT_REFUSED, EXIT_USAGE, EXIT_NOT_FOUND, EXIT_STORE = 1, 2, 3, 4


pytestmark = pytest.mark.usefixtures("no_user_config")


@pytest.fixture
def folders(moto_endpoint: str, unique_name: str, monkeypatch: pytest.MonkeyPatch) -> S3Folders:
    """The worksets' S3 bucket, which the commands that re-validate read (via the settings)."""
    monkeypatch.setenv("WSMON_AWS__ENDPOINT_URL", moto_endpoint)
    monkeypatch.setenv("WSMON_AWS__REGION", "us-west-2")
    return s3_folders(moto_endpoint, unique_name)


@pytest.fixture
def store_url(tmp_path: Path, folders: S3Folders) -> str:
    """A store seeded with one workset per interesting situation; the folders of the ones that
    may go back to ready are valid in S3."""
    for name in ("ws-error", "ws-failed", "ws-complete", "ws-ignored"):
        folders.put(name)
    url = f"sqlite:///{tmp_path / 'ops.db'}"
    real = open_store(url, clock=SystemClock(), max_clock_skew=5)
    real.init_schema()
    now = SystemClock().now()
    past = ManualClock(now - timedelta(hours=3))
    old = open_store(url, clock=past, max_clock_skew=5)

    real.register_workset("ws-ready", folders.bucket, "src/ws-ready/", "normal", customer_id="acme")
    real.register_workset("ws-urgent", folders.bucket, "src/ws-urgent/", "urgent", customer_id="beta")
    real.register_workset(
        "ws-error", folders.bucket, "src/ws-error/", "normal", customer_id="acme", state="error",
        error_code="WS-DAT-003", error_details="R1_FQ missing\nsecond line \x1b[2J",
        findings=[{"code": "WS-DAT-003", "severity": "error", "message": "R1_FQ not found",
                   "file": "stage_samples.tsv", "line": 2, "column": 11,
                   "remediation": "upload the FASTQ or fix the path"}],
        attempts=2,
    )
    real.register_workset("ws-failed", folders.bucket, "src/ws-failed/", "low", customer_id="beta",
                          state="failed", attempts=4)
    real.register_workset("ws-complete", folders.bucket, "src/ws-complete/", "normal", state="complete")
    real.register_workset("ws-ignored", folders.bucket, "src/ws-ignored/", "low", state="ignored")
    real.register_workset("ws-live", folders.bucket, "src/ws-live/", "urgent", customer_id="acme")
    assert real.acquire_lock("ws-live", "engine-1", lease_seconds=3600) is not None
    # a claim made three hours ago by a monitor that then died: its lease is long expired
    old.register_workset("ws-stale", folders.bucket, "src/ws-stale/", "normal")
    assert old.acquire_lock("ws-stale", "crashed-monitor", lease_seconds=60) is not None
    real.register_workset(WEIRD_ID, folders.bucket, f"src/{WEIRD_ID}/", "normal", state="error")

    real.put_alert(Alert(
        alert_id="al-1", rule="urgent_waiting", subject="ws-urgent", severity=Severity.CRITICAL,
        state=AlertState.FIRING, summary="urgent workset waiting 45m", pending_since=now,
        fired_at=now, updated_at=now,
    ))
    real.put_alert(Alert(
        alert_id="al-old", rule="queue_depth", subject="normal", severity=Severity.WARNING,
        state=AlertState.RESOLVED, summary="queue depth 30 > 20", pending_since=now - timedelta(hours=2),
        fired_at=now - timedelta(hours=2), resolved_at=now - timedelta(hours=1), updated_at=now,
    ))
    real.record_monitor_heartbeat("engine-1", "head-1", 4242, "0.1.0", role="engine")
    old.record_monitor_heartbeat("engine-gone", "head-2", 99, "0.1.0", role="engine")
    real.close()
    old.close()
    return url


def run(url: str, *args: str, input: str | None = None):
    return CliRunner().invoke(cli, ["--store", url, *args], input=input, catch_exceptions=False)


def reopen(url: str):
    return open_store(url, create=False)


# -- list --------------------------------------------------------------------------------------

def test_list_shows_every_workset_in_queue_order(store_url: str) -> None:
    result = run(store_url, "list")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].split()[:3] == ["ID", "STATE", "PRIORITY"]
    ids = [line.split()[0] for line in lines[1:]]
    assert ids.index("ws-urgent") < ids.index("ws-ready") < ids.index("ws-failed")
    assert "engine-1" in result.output
    assert "crashed-monitor (stale)" in result.output


def test_list_filters_and_json(store_url: str) -> None:
    result = run(store_url, "list", "--state", "error", "--state", "failed", "--json")
    assert result.exit_code == 0
    rows = json.loads(result.output)
    assert {r["workset_id"] for r in rows} == {"ws-error", "ws-failed", WEIRD_ID}
    assert {r["state"] for r in rows} == {"error", "failed"}

    rows = json.loads(run(store_url, "list", "--priority", "urgent", "--json").output)
    assert {r["workset_id"] for r in rows} == {"ws-urgent", "ws-live"}
    rows = json.loads(run(store_url, "list", "--customer", "beta", "--json").output)
    assert {r["workset_id"] for r in rows} == {"ws-urgent", "ws-failed"}
    assert len(json.loads(run(store_url, "list", "--limit", "3", "--json").output)) == 3
    assert run(store_url, "list", "--state", "complete", "--customer", "nobody").output.strip() == "no worksets match"


def test_list_rejects_an_unknown_state_as_usage(store_url: str) -> None:
    result = run(store_url, "list", "--state", "running")
    assert result.exit_code == EXIT_USAGE
    assert "in_progress" in result.output  # click lists the allowed values


def test_untrusted_ids_print_without_escapes_but_json_keeps_them_exact(store_url: str) -> None:
    text = run(store_url, "list", "--state", "error").output
    assert "\x1b" not in text and "\x07" not in text
    assert "run [bold]x[/bold]" in text  # markup shown literally, not interpreted
    raw = run(store_url, "list", "--state", "error", "--json").output
    assert "\x1b" not in raw  # json.dumps escapes it ...
    assert WEIRD_ID in {r["workset_id"] for r in json.loads(raw)}  # ... and it round-trips


# -- show / events -----------------------------------------------------------------------------

def test_show_text_has_diagnosis_findings_and_lease(store_url: str) -> None:
    result = run(store_url, "show", "ws-error")
    assert result.exit_code == 0
    out = result.output
    assert "WS-DAT-003" in out and "R1_FQ missing" in out and "second line" in out
    assert "stage_samples.tsv:2:11" in out and "upload the FASTQ" in out
    assert "\x1b" not in out
    live = run(store_url, "show", "ws-live").output
    assert "held by engine-1" in live and "fence 1" in live
    stale = run(store_url, "show", "ws-stale").output
    assert "STALE" in stale and "crashed-monitor" in stale


def test_show_and_list_say_registered_for_the_instant_the_dashboard_calls_registered(
        store_url: str) -> None:
    """One meaning everywhere: when wsmon registered the workset (its created_at), as the
    dashboard's queue column, detail line and timeline say it."""
    from wsmon.cli.ops_cmd import _stamp

    store = reopen(store_url)
    try:
        record = store.get_workset("ws-live")
    finally:
        store.close()
    shown = [line for line in run(store_url, "show", "ws-live").output.splitlines()
             if line.startswith("registered ")]
    assert len(shown) == 1 and _stamp(record.created_at) in shown[0]
    assert "created" not in run(store_url, "show", "ws-live").output
    assert "REGISTERED" in run(store_url, "list").output.splitlines()[0].split()


def test_show_json_is_the_store_record(store_url: str) -> None:
    result = run(store_url, "show", "--json", "ws-live")
    data = json.loads(result.output)
    assert data["workset_id"] == "ws-live"
    assert data["state"] == "locked"
    assert data["lock_owner"] == "engine-1"


def test_events_lists_history(store_url: str) -> None:
    out = run(store_url, "events", "ws-live").output
    assert "ready" in out and "locked" in out and "engine-1" in out
    events = json.loads(run(store_url, "events", "ws-live", "--json").output)
    assert [e["to_state"] for e in events] == ["ready", "locked"]


def test_a_refused_action_shows_in_the_worksets_own_history(store_url: str) -> None:
    refused = run(store_url, "ignore", "ws-live", "--yes", "--reason", "duplicate upload")
    assert refused.exit_code == EXIT_REFUSED
    out = " ".join(run(store_url, "events", "ws-live").output.split())  # reasons wrap
    # after the two transitions, in time order, with who and why; the JSON history stays
    # transitions only
    assert f"{actor()} ignore refused duplicate upload;" in out, out
    refusal = out.index("ignore refused")
    assert out.index(" locked ") < refusal and "use stop to end the run" in out[refusal:], out
    assert len(json.loads(run(store_url, "events", "ws-live", "--json").output)) == 2
    assert "ignore refused" not in run(store_url, "events", "ws-ready").output


def test_events_actions_since_lists_only_that_window(store_url: str) -> None:
    run(store_url, "ignore", "ws-live", "--yes", "--reason", "duplicate upload")
    recent = json.loads(run(store_url, "events", "--actions", "--since", "1h", "--json").output)
    assert [(e["action"], e["target"], e["outcome"]) for e in recent] == [
        ("ignore", "ws-live", "refused")]
    assert "ws-live" in run(store_url, "events", "--actions", "--since", "30m").output
    bad = run(store_url, "events", "--actions", "--since", "90")
    assert bad.exit_code == EXIT_USAGE and "--since" in bad.output
    alone = run(store_url, "events", "ws-live", "--since", "1h")
    assert alone.exit_code == EXIT_USAGE and "--since goes with --actions" in alone.output


@pytest.mark.parametrize("command", [["show"], ["events"], ["release", "--yes"], ["retry", "--yes"],
                                     ["ignore", "--yes"], ["stop", "--to", "error", "--yes"],
                                     ["priority", "{id}", "urgent"]])
def test_unknown_workset_is_exit_3_with_a_clear_message(store_url: str, command: list[str]) -> None:
    args = [a.replace("{id}", "nope") for a in command]
    if "{id}" not in command:
        args.append("nope")
    result = run(store_url, *args)
    assert result.exit_code == EXIT_NOT_FOUND
    assert "no workset 'nope'" in result.output
    assert "Traceback" not in result.output


# -- release -----------------------------------------------------------------------------------

def test_release_needs_yes_when_not_on_a_terminal(store_url: str) -> None:
    result = run(store_url, "release", "ws-stale")
    assert result.exit_code == EXIT_USAGE
    assert "--yes" in result.output
    assert reopen(store_url).get_workset("ws-stale").state is WorksetState.LOCKED


def test_release_asks_on_a_terminal_naming_holder_and_duration(
        store_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from wsmon.cli import ops_cmd

    monkeypatch.setattr(ops_cmd, "_stdin_is_tty", lambda: True)
    declined = run(store_url, "release", "ws-stale", input="n\n")
    assert declined.exit_code == EXIT_REFUSED
    assert "held by crashed-monitor for 3h00m" in declined.output
    assert "ago" in declined.output  # the lease expired hours ago
    assert reopen(store_url).get_workset("ws-stale").state is WorksetState.LOCKED

    accepted = run(store_url, "release", "ws-stale", input="y\n")
    assert accepted.exit_code == 0, accepted.output
    after = reopen(store_url).get_workset("ws-stale")
    assert after.state is WorksetState.READY and after.lock_owner is None


def test_release_of_a_live_holder_is_refused_and_points_to_stop(store_url: str) -> None:
    result = run(store_url, "release", "ws-live", "--yes")
    assert result.exit_code == EXIT_REFUSED
    assert "engine-1 is alive" in result.output and "use stop" in result.output
    after = reopen(store_url).get_workset("ws-live")
    assert after.state is WorksetState.LOCKED and after.fence == 1


def test_release_with_yes_force_releases_and_records_the_operator(store_url: str) -> None:
    result = run(store_url, "release", "ws-stale", "--yes", "--reason", "monitor crashed")
    assert result.exit_code == 0, result.output
    assert "crashed-monitor" in result.output
    store = reopen(store_url)
    after = store.get_workset("ws-stale")
    assert after.state is WorksetState.READY
    assert after.fence > 1  # the old holder is fenced out
    last = store.events("ws-stale")[-1]
    assert last.actor == actor()
    assert last.reason == (f"force release by {actor()}: monitor crashed "
                           "(was held by crashed-monitor, fence 1)")


def test_release_refuses_when_the_lock_changed_hands_while_asking(
        store_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    import click

    from wsmon.cli import ops_cmd

    def someone_else_takes_it_meanwhile(*_args: object, **_kwargs: object) -> bool:
        other = reopen(store_url)
        other.force_release("ws-stale", "other@host", "mine now")
        assert other.acquire_lock("ws-stale", "engine-2", lease_seconds=3600) is not None
        return True

    monkeypatch.setattr(ops_cmd, "_stdin_is_tty", lambda: True)
    monkeypatch.setattr(click, "confirm", someone_else_takes_it_meanwhile)
    result = run(store_url, "release", "ws-stale")
    assert result.exit_code == EXIT_REFUSED
    assert "changed meanwhile" in result.output and "now engine-2" in result.output
    after = reopen(store_url).get_workset("ws-stale")
    assert after.state is WorksetState.LOCKED and after.lock_owner == "engine-2"


def test_release_of_an_unlocked_workset_is_refused(store_url: str) -> None:
    result = run(store_url, "release", "ws-ready", "--yes")
    assert result.exit_code == EXIT_REFUSED
    assert "no lock to release" in result.output


# -- stop --------------------------------------------------------------------------------------

@pytest.mark.parametrize("to", ["ignored", "error"])
def test_stop_ends_a_live_run_in_the_state_chosen_with_actor_and_reason(store_url: str,
                                                                       to: str) -> None:
    result = run(store_url, "stop", "ws-live", "--to", to, "--reason", "wrong reference", "--yes")
    assert result.exit_code == 0, result.output
    store = reopen(store_url)
    after = store.get_workset("ws-live")
    assert after.state.value == to and after.lock_owner is None
    assert store.acquire_lock("ws-live", "engine-2") is None  # nobody can claim it meanwhile
    last = store.events("ws-live")[-1]
    assert last.actor == actor() and "wrong reference" in last.reason
    assert "was held by engine-1, fence 1" in last.reason


def test_stop_needs_a_target_and_yes_and_a_running_workset(store_url: str) -> None:
    assert run(store_url, "stop", "ws-live", "--yes").exit_code == EXIT_USAGE  # --to missing
    assert run(store_url, "stop", "ws-live", "--to", "error").exit_code == EXIT_USAGE  # no --yes
    not_running = run(store_url, "stop", "ws-error", "--to", "ignored", "--yes")
    assert not_running.exit_code == EXIT_REFUSED and "no pipeline is running" in not_running.output
    assert run(store_url, "stop", "nope", "--to", "error", "--yes").exit_code == EXIT_NOT_FOUND


# -- retry / ignore / priority -------------------------------------------------------------------

@pytest.mark.parametrize("workset_id", ["ws-error", "ws-failed", "ws-ignored"])
def test_retry_sends_back_to_ready_as_the_operator(store_url: str, workset_id: str) -> None:
    result = run(store_url, "retry", workset_id, "--yes")
    assert result.exit_code == 0, result.output
    assert "sent to ready" in result.output
    store = reopen(store_url)
    assert store.get_workset(workset_id).state is WorksetState.READY
    assert store.events(workset_id)[-1].actor == actor()


def test_retry_of_a_still_invalid_folder_stays_in_error_with_the_new_findings(
        store_url: str, folders: S3Folders) -> None:
    folders.put("ws-error", defect="shell")
    result = run(store_url, "retry", "ws-error", "--yes")
    assert result.exit_code == EXIT_REFUSED
    assert "still invalid" in result.output and "WS-CFG" in result.output
    after = reopen(store_url).get_workset("ws-error")
    assert after.state is WorksetState.ERROR
    assert after.error_code.startswith("WS-CFG")
    assert all(f["code"] != "WS-DAT-003" for f in after.findings)  # the old findings replaced


def test_retry_asks_on_a_terminal_with_attempts_so_far(store_url: str,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    from wsmon.cli import ops_cmd

    assert run(store_url, "retry", "ws-error").exit_code == EXIT_USAGE  # not a tty, no --yes
    monkeypatch.setattr(ops_cmd, "_stdin_is_tty", lambda: True)
    declined = run(store_url, "retry", "ws-error", input="n\n")
    assert "Attempts so far: 2" in declined.output and declined.exit_code == EXIT_REFUSED
    assert reopen(store_url).get_workset("ws-error").state is WorksetState.ERROR


def test_retry_of_a_locked_workset_points_at_stop(store_url: str) -> None:
    for workset_id in ("ws-stale", "ws-live"):
        result = run(store_url, "retry", workset_id, "--yes")
        assert result.exit_code == EXIT_REFUSED and "use stop" in result.output
    assert reopen(store_url).get_workset("ws-stale").state is WorksetState.LOCKED


def test_retry_of_complete_needs_rerun_and_ready_is_refused(store_url: str) -> None:
    complete = run(store_url, "retry", "ws-complete", "--yes")
    assert complete.exit_code == EXIT_REFUSED and "re-run" in complete.output
    assert run(store_url, "retry", "ws-complete", "--rerun", "--yes").exit_code == 0
    ready = run(store_url, "retry", "ws-ready", "--yes")
    assert ready.exit_code == EXIT_REFUSED and "already ready" in ready.output


def test_retry_refuses_when_the_record_changed_after_it_was_read(
        store_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from wsmon.cli import ops_cmd

    real = ops_cmd._require_workset

    def read_then_someone_else_acts(store, workset_id):
        seen = real(store, workset_id)
        other = reopen(store_url)
        other.update_state(workset_id, "ignored", reason="someone else", actor="bob@elsewhere")
        other.close()
        return seen

    monkeypatch.setattr(ops_cmd, "_require_workset", read_then_someone_else_acts)
    result = run(store_url, "retry", "ws-error", "--yes")
    assert result.exit_code == EXIT_REFUSED
    assert "changed meanwhile" in result.output
    assert reopen(store_url).get_workset("ws-error").state is WorksetState.IGNORED


def test_ignore_and_undo(store_url: str, folders: S3Folders) -> None:
    folders.put("ws-ready")
    assert run(store_url, "ignore", "ws-ready", "--reason", "duplicate upload",
               "--yes").exit_code == 0
    store = reopen(store_url)
    assert store.get_workset("ws-ready").state is WorksetState.IGNORED
    last = store.events("ws-ready")[-1]
    assert last.actor == actor() and last.reason == "duplicate upload"
    assert run(store_url, "ignore", "ws-ready", "--undo", "--yes").exit_code == 0
    assert reopen(store_url).get_workset("ws-ready").state is WorksetState.READY
    not_ignored = run(store_url, "ignore", "ws-ready", "--undo", "--yes")
    assert not_ignored.exit_code == EXIT_REFUSED and "already ready" in not_ignored.output


def test_ignore_of_a_running_workset_is_refused_even_when_its_lease_is_stale(store_url: str) -> None:
    for workset_id in ("ws-live", "ws-stale"):
        result = run(store_url, "ignore", workset_id, "--yes")
        assert result.exit_code == EXIT_REFUSED and "use stop" in result.output
        assert reopen(store_url).get_workset(workset_id).state is WorksetState.LOCKED


def test_priority_change_is_recorded(store_url: str) -> None:
    result = run(store_url, "priority", "ws-ready", "urgent")
    assert result.exit_code == 0
    assert "normal -> urgent" in result.output
    store = reopen(store_url)
    assert store.get_workset("ws-ready").priority.value == "urgent"
    assert store.events("ws-ready")[-1].actor == actor()
    assert run(store_url, "priority", "ws-ready", "highest").exit_code == EXIT_USAGE


# -- alerts ------------------------------------------------------------------------------------

def test_alerts_text_json_and_all(store_url: str) -> None:
    text = run(store_url, "alerts").output
    assert "al-1" in text and "urgent_waiting" in text and "al-old" not in text
    rows = json.loads(run(store_url, "alerts", "--json").output)
    assert [r["alert_id"] for r in rows] == ["al-1"]
    rows = json.loads(run(store_url, "alerts", "--all", "--json").output)
    assert {r["alert_id"] for r in rows} == {"al-1", "al-old"}


def test_ack_records_operator_note_and_expiry(store_url: str) -> None:
    result = run(store_url, "ack", "al-1", "--note", "looking", "--expires", "30m")
    assert result.exit_code == 0, result.output
    alert = reopen(store_url).get_alert("al-1")
    assert alert.state is AlertState.ACKNOWLEDGED
    assert alert.acknowledged_by == actor() and alert.ack_note == "looking"
    assert alert.ack_expires_at is not None
    assert timedelta(minutes=29) < alert.ack_expires_at - datetime.now(timezone.utc) <= timedelta(minutes=30)
    missing = run(store_url, "ack", "al-nope")
    assert missing.exit_code == EXIT_NOT_FOUND and "al-nope" in missing.output


def test_ack_of_a_resolved_alert_is_refused(store_url: str) -> None:
    result = run(store_url, "ack", "al-old")
    assert result.exit_code == EXIT_REFUSED
    assert "resolved" in result.output
    assert reopen(store_url).get_alert("al-old").state is AlertState.RESOLVED


def test_silence_creates_a_silence_and_alerts_lists_it(store_url: str) -> None:
    result = run(store_url, "silence", "--rule", "queue_depth", "--for", "1h30m", "--reason", "maintenance")
    assert result.exit_code == 0, result.output
    active = reopen(store_url).list_silences(active_at=datetime.now(timezone.utc))
    assert len(active) == 1
    assert active[0].rule == "queue_depth" and active[0].subject is None
    assert active[0].created_by == actor()
    assert timedelta(minutes=89) < active[0].ends_at - datetime.now(timezone.utc) <= timedelta(minutes=90)
    assert "queue_depth / * until" in run(store_url, "alerts").output


def test_silence_rejects_an_unreadable_duration(store_url: str) -> None:
    result = run(store_url, "silence", "--for", "soon")
    assert result.exit_code == EXIT_USAGE and "30m" in result.output


# -- monitors ----------------------------------------------------------------------------------

def test_monitors_alive_and_stale(store_url: str) -> None:
    text = run(store_url, "monitors").output
    rows = {line.split()[0]: line for line in text.splitlines()[1:]}
    assert "alive" in rows["engine-1"] and "stale" in rows["engine-gone"]
    data = {m["monitor_id"]: m for m in json.loads(run(store_url, "monitors", "--json").output)}
    assert data["engine-1"]["alive"] is True and data["engine-gone"]["alive"] is False


# -- the store cannot be used ------------------------------------------------------------------

def test_unreachable_dynamodb_is_exit_4_without_traceback() -> None:
    url = "dynamodb://wsmon-ops?region=us-west-2&endpoint_url=http://127.0.0.1:9"
    result = CliRunner().invoke(cli, ["--store", url, "list"])
    assert result.exit_code == EXIT_STORE, result.output
    assert "Traceback" not in result.output
    assert "127.0.0.1:9" in result.output or "reach" in result.output.lower()


def test_unknown_scheme_is_a_clear_error() -> None:
    result = CliRunner().invoke(cli, ["--store", "postgres://db/wsmon", "show", "x"])
    assert result.exit_code == EXIT_STORE
    assert "unknown store URL" in result.output and "sqlite:///" in result.output


def test_missing_sqlite_file_is_not_created_by_a_read(tmp_path: Path) -> None:
    path = tmp_path / "typo.db"
    result = CliRunner().invoke(cli, ["--store", f"sqlite:///{path}", "list"])
    assert result.exit_code == EXIT_STORE, result.output
    assert "store init" in result.output
    assert not path.exists()


def test_real_process_prints_no_traceback(store_url: str) -> None:
    proc = subprocess.run([sys.executable, "-m", "wsmon.cli", "--store", store_url, "show", "nope"],
                          capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert proc.returncode == EXIT_NOT_FOUND
    assert "no workset 'nope'" in proc.stderr and "Traceback" not in proc.stderr
    proc = subprocess.run([sys.executable, "-m", "wsmon.cli", "--store", store_url, "list", "--json"],
                          capture_output=True, text=True, cwd=ROOT, timeout=60)
    assert proc.returncode == 0
    assert len(json.loads(proc.stdout)) == 9


def test_help_documents_exit_codes() -> None:
    result = CliRunner().invoke(cli, ["retry", "--help"])
    assert "Exit codes:" in result.output and "3 workset or alert not found" in result.output


# -- completion --------------------------------------------------------------------------------

def test_completion_script_and_workset_id_completion(store_url: str) -> None:
    from click.shell_completion import BashComplete

    script = CliRunner().invoke(cli, ["completion", "bash"])
    assert script.exit_code == 0 and "_WSMON_COMPLETE" in script.output
    assert "compdef" in CliRunner().invoke(cli, ["completion", "zsh"]).output

    complete = BashComplete(cli, {}, "wsmon", "_WSMON_COMPLETE")
    found = [c.value for c in complete.get_completions(["--store", store_url, "show"], "ws-r")]
    assert found == ["ws-ready"]
    commands = [c.value for c in complete.get_completions([], "re")]
    assert {"release", "retry"} <= set(commands)


# -- the production backend --------------------------------------------------------------------

def test_same_commands_against_dynamodb(moto_endpoint: str, unique_name: str,
                                        folders: S3Folders) -> None:
    url = f"dynamodb://{unique_name}?region=us-west-2&endpoint_url={moto_endpoint}"
    store = open_store(url)
    store.init_schema()
    store.register_workset("ws-a", folders.bucket, "src/ws-a/", "low", state="error", attempts=1)
    store.close()
    folders.put("ws-a")

    rows = json.loads(run(url, "list", "--json").output)
    assert [r["workset_id"] for r in rows] == ["ws-a"]
    assert run(url, "retry", "ws-a", "--yes").exit_code == 0
    assert run(url, "priority", "ws-a", "urgent").exit_code == 0
    shown = json.loads(run(url, "show", "ws-a", "--json").output)
    assert shown["state"] == "ready" and shown["priority"] == "urgent"
    assert run(url, "show", "nope").exit_code == EXIT_NOT_FOUND
    assert [e["actor"] for e in json.loads(run(url, "events", "ws-a", "--json").output)][-1] == actor()


def test_dynamodb_tables_missing_is_exit_4(moto_endpoint: str, unique_name: str) -> None:
    url = f"dynamodb://{unique_name}?region=us-west-2&endpoint_url={moto_endpoint}"
    result = CliRunner().invoke(cli, ["--store", url, "list"])
    assert result.exit_code == EXIT_STORE, result.output
    assert "store init" in result.output
