"""One table of cases, run through the dashboard (Pilot) and through the CLI: each front end
refuses exactly what wsmon.operations refuses, and does what it allows (issue 12, observation 2).
Also the dashboard-side regressions of observations 5 (pause) and 6 (events cut reasons)."""

from __future__ import annotations

from datetime import timedelta

import pytest
from app_seed import make_app, settle, wait_for
from click.testing import CliRunner
from ops_world import S3Folders, s3_folders, validator_for

from wsmon.cli.main import cli
from wsmon.core.clock import ManualClock, SystemClock
from wsmon.core.models import WorksetState
from wsmon.engine.store import open_store
from wsmon.operations import Operations

S = WorksetState
STATES = ("ready", "error", "failed", "complete", "ignored", "live", "stale")
# action -> (dashboard key, CLI arguments after the id)
ACTIONS = {
    "retry": ("r", ["retry", "{id}", "--yes"]),
    "rerun": ("R", ["retry", "{id}", "--rerun", "--yes"]),
    "stop": ("x", ["stop", "{id}", "--to", "error", "--yes"]),
    "release": ("l", ["release", "{id}", "--yes"]),
    "ignore": ("i", ["ignore", "{id}", "--yes"]),  # i on an ignored workset is un-ignore
}
CASES = [(state, action) for state in STATES for action in ACTIONS]


@pytest.fixture
def folders(moto_endpoint: str, unique_name: str, monkeypatch: pytest.MonkeyPatch) -> S3Folders:
    monkeypatch.setenv("WSMON_AWS__ENDPOINT_URL", moto_endpoint)
    monkeypatch.setenv("WSMON_AWS__REGION", "us-west-2")
    return s3_folders(moto_endpoint, unique_name)


def one_workset(tmp_path, folders: S3Folders, state: str) -> tuple[str, str]:
    """A store (on the real clock, like the CLI's) holding one workset in ``state``; its S3
    folder is valid. ``live``: in_progress with a fresh lease, its engine heard from; ``stale``: locked by a monitor
    whose lease expired hours ago."""
    url = f"sqlite:///{tmp_path / 'fe.db'}"
    wid = f"ws-{state}"
    folders.put(wid)
    store = open_store(url, clock=SystemClock(), max_clock_skew=5)
    store.init_schema()
    if state == "stale":
        past = open_store(url, clock=ManualClock(SystemClock().now() - timedelta(hours=3)),
                          max_clock_skew=5)
        past.register_workset(wid, folders.bucket, f"src/{wid}/")
        assert past.acquire_lock(wid, "crashed-monitor", lease_seconds=60) is not None
        past.close()
    elif state == "live":
        store.register_workset(wid, folders.bucket, f"src/{wid}/")
        store.record_monitor_heartbeat("engine-1", "headnode", 4242, "0", role="engine")
        lease = store.acquire_lock(wid, "engine-1", lease_seconds=3600)
        store.update_state(wid, "in_progress", "started", "engine-1", lease=lease,
                           cluster_name="cluster-a")
    else:
        store.register_workset(wid, folders.bucket, f"src/{wid}/", state=state)
    store.close()
    return url, wid


def module_allows(url: str, wid: str, action: str, folders: S3Folders) -> bool:
    store = open_store(url, clock=SystemClock(), max_clock_skew=5)
    try:
        ws = store.get_workset(wid)
        if action == "ignore" and ws.state is S.IGNORED:
            action = "unignore"
        return Operations(store, "x", validator=validator_for(folders)).check(action, ws) is None
    finally:
        store.close()


def test_the_table_is_not_degenerate():
    allowed = {("ready", "ignore"), ("error", "retry"), ("complete", "rerun"), ("live", "stop"),
               ("stale", "release")}
    refused = {("live", "release"), ("live", "ignore"), ("complete", "retry"), ("ready", "stop")}
    assert allowed <= set(CASES) and refused <= set(CASES)


@pytest.mark.parametrize("state,action", CASES)
def test_cli_refuses_exactly_what_the_module_refuses(tmp_path, folders, state, action):
    url, wid = one_workset(tmp_path, folders, state)
    expected = module_allows(url, wid, action, folders)
    args = [a.replace("{id}", wid) for a in ACTIONS[action][1]]
    if action == "ignore" and state == "ignored":
        args.append("--undo")
    result = CliRunner().invoke(cli, ["--store", url, *args], catch_exceptions=False)
    assert result.exit_code == (0 if expected else 1), result.output
    store = open_store(url, create=False)
    try:
        after = store.get_workset(wid)
        assert (after.state.value != (state if state not in ("live", "stale") else
                                      ("in_progress" if state == "live" else "locked"))) is expected
        assert store.list_operator_actions(limit=1)[0].outcome == ("done" if expected else "refused")
    finally:
        store.close()


@pytest.mark.parametrize("state,action", CASES)
async def test_dashboard_refuses_exactly_what_the_module_refuses(tmp_path, folders, state, action):
    from wsmon.screens.dialogs import StopDialog, WorksetActionDialog

    url, wid = one_workset(tmp_path, folders, state)
    expected = module_allows(url, wid, action, folders)
    store = open_store(url, clock=SystemClock(), max_clock_skew=5)
    before = store.get_workset(wid).state
    app = make_app(tmp_path, store=store, clock=SystemClock(), validator=validator_for(folders))
    async with app.run_test(size=(120, 30)) as pilot:
        await settle(pilot, app)
        assert app.screen.table.move_to_key(wid)
        await pilot.pause()
        await pilot.press(ACTIONS[action][0])
        if expected:
            dialog = StopDialog if action == "stop" else WorksetActionDialog
            await wait_for(pilot, lambda: isinstance(app.screen, dialog), what="dialog")
            if action == "stop":
                await pilot.click("#stop-error")
            else:
                await pilot.press("y")
            await wait_for(pilot, lambda: not isinstance(app.screen, dialog), what="closed")
        else:
            await wait_for(pilot, lambda: any("refused" in (n.title or "")
                                              for n in app._notifications), what="refusal toast")
            assert type(app.screen).__name__ == "QueueScreen"
    after = store.get_workset(wid)
    assert (after.state is not before) is expected
    assert store.list_operator_actions(limit=1)[0].outcome == ("done" if expected else "refused")
    store.close()


pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


# -- observation 5: pause froze the tables only -------------------------------------------------

async def test_pause_freezes_header_counts_clock_and_tables_until_resumed(tmp_path):
    from app_seed import screen_text

    app = make_app(tmp_path)
    async with app.run_test(size=(160, 48)) as pilot:
        await settle(pilot, app)
        total = app.stats.total()
        shown_at = app.last_refresh_at.strftime("%H:%M:%S")
        await pilot.press("p")
        app.clock.advance(minutes=10)
        app.store.register_workset("ws-new-99", "daylily-ws", "p/", actor="discovery")
        app.refresh_now()  # what an action's completion asks for
        await wait_for(pilot, lambda: app._held, what="a snapshot read while paused")
        text = screen_text(app)
        assert f"paused at {shown_at}" in text
        assert app.stats.total() == total and f"total {total}" in text
        assert "ws-new-99" not in text and "ws-new-99" not in app.screen.table.keys
        await pilot.press("p")
        await wait_for(pilot, lambda: "ws-new-99" in app.screen.table.keys, what="resumed")
        assert app.stats.total() == total + 1 and "paused at" not in screen_text(app)


# -- observation 6: events cut the reason --------------------------------------------------------

def test_events_and_events_actions_print_whole_reasons_wrapped(tmp_path, folders, monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")
    url, wid = one_workset(tmp_path, folders, "stale")
    reason = ("the monitor on head-node-7 crashed during a kernel upgrade and will not come back "
              "before Monday, so the lock is released by hand; ticket OPS-4711 has the details END")
    runner = CliRunner()
    assert runner.invoke(cli, ["--store", url, "release", wid, "--yes", "--reason", reason]).exit_code == 0
    for args in (["events", wid], ["events", "--actions"]):
        out = runner.invoke(cli, ["--store", url, *args]).output
        assert max(len(line) for line in out.splitlines()) <= 80
        assert " ".join(out.split()).count(reason) == 1, out  # whole, not cut
    usage = runner.invoke(cli, ["--store", url, "events"])
    assert usage.exit_code == 2 and "--actions" in usage.output


# -- observation 1 through the dashboard ---------------------------------------------------------

@pytest.mark.parametrize("defect", ["shell", "escape"])
async def test_dashboard_retry_of_an_invalid_folder_shows_the_new_findings_and_stays_in_error(
        tmp_path, folders, defect):
    from wsmon.screens.dialogs import WorksetActionDialog

    url, wid = one_workset(tmp_path, folders, "error")
    folders.put(wid, defect=defect)
    store = open_store(url, clock=SystemClock(), max_clock_skew=5)
    app = make_app(tmp_path, store=store, clock=SystemClock(), validator=validator_for(folders))
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot, app)
        assert app.screen.table.move_to_key(wid)
        await pilot.pause()
        await pilot.press("r")
        await wait_for(pilot, lambda: isinstance(app.screen, WorksetActionDialog), what="dialog")
        await pilot.press("y")
        warning = app.screen.query_one("#dialog-warning")
        await wait_for(pilot, lambda: "still invalid" in str(warning.render()), what="findings")
        after = store.get_workset(wid)
        assert after.state is S.ERROR and after.error_code in str(warning.render())
    store.close()


# -- the :events screen --------------------------------------------------------------------------

async def test_events_screen_lists_operator_actions_refused_ones_included(tmp_path):
    from app_seed import screen_text

    from wsmon.screens.dialogs import WorksetActionDialog
    from wsmon.screens.events import EventsScreen

    app = make_app(tmp_path)
    async with app.run_test(size=(160, 48)) as pilot:
        await settle(pilot, app)
        assert app.screen.table.move_to_key("ws-error-06")
        await pilot.press("r")
        await wait_for(pilot, lambda: isinstance(app.screen, WorksetActionDialog), what="dialog")
        await pilot.press("y")
        await wait_for(pilot, lambda: not isinstance(app.screen, WorksetActionDialog), what="done")
        assert app.screen.table.move_to_key("ws-done-10")
        await pilot.press("r")  # retry of complete work: refused, with a pointer to re-run
        await wait_for(pilot, lambda: [e.outcome for e in app.store.list_operator_actions(
            limit=1)] == ["refused"], what="audited refusal")
        await pilot.press("colon", *"events", "enter")
        await wait_for(pilot, lambda: isinstance(app.screen, EventsScreen)
                       and len(app.screen.entries) == 2, what="events screen")
        text = screen_text(app)
        assert "tester@host" in text and "ws-done-10" in text and "refused" in text
        assert "use re-run" in text and "ws-error-06" in text and "done" in text
        await pilot.press("escape")
        await wait_for(pilot, lambda: type(app.screen).__name__ == "QueueScreen", what="back")
