"""Pilot tests of how the dashboard behaves: navigation, filter/sort, refresh and diffing, alerts,
store failures, keymap, palette, engine modes, and untrusted text shown literally."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from datetime import timedelta

import pytest
from app_seed import (
    ESCAPE_ID,
    MARKUP_ID,
    make_app,
    refresh,
    screen_text,
    seed_store,
    settle,
    wait_for,
)

from wsmon.app import WsmonCommands, decide_engine
from wsmon.core.clock import SystemClock
from wsmon.config.settings import Settings
from wsmon.engine.store import open_store
from wsmon.engine.store.base import StoreUnavailable
from wsmon.core.models import Alert, AlertState, Severity, WorksetState

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def _screen_text(app) -> str:
    return screen_text(app)


async def test_jump_help_and_back(tmp_path):
    app = make_app(tmp_path)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot, app)
        await pilot.press("colon", *"al", "enter")
        await wait_for(pilot, lambda: app.current_mode == "alerts", what="alerts")
        await pilot.press("colon", *"clusters", "enter")
        await wait_for(pilot, lambda: app.current_mode == "clusters", what="clusters")
        await pilot.press("question_mark")
        await wait_for(pilot, lambda: type(app.screen).__name__ == "HelpScreen", what="help")
        ids = {row[2] for row in app.screen.rows}
        assert {"jump", "help", "pause"} <= ids
        await pilot.press("escape", "colon", *"qu", "enter")
        await wait_for(pilot, lambda: app.current_mode == "queue", what="queue")
        await pilot.press("question_mark")
        await wait_for(pilot, lambda: type(app.screen).__name__ == "HelpScreen", what="help")
        ids = {row[2] for row in app.screen.rows}
        assert {"release", "retry", "ignore", "priority", "filter", "sort", "select",
                "state-error"} <= ids
        await pilot.press("escape")
        await pilot.press("enter")
        await wait_for(pilot, lambda: type(app.screen).__name__ == "DetailScreen", what="detail")
        await pilot.press("escape")
        await wait_for(pilot, lambda: type(app.screen).__name__ == "QueueScreen", what="back")


async def test_filter_state_keys_and_sort(tmp_path):
    app = make_app(tmp_path)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot, app)
        queue = app.screen
        await pilot.press("5")  # error
        assert queue.table.keys == {"ws-error-06"}
        await pilot.press("0")
        assert len(queue.table.keys) == 12
        await pilot.press("slash", *"oncology")  # matches the customer column
        await pilot.pause()
        assert queue.table.keys == {"ws-urgent-tumor-01", "ws-retrying-07"}
        await pilot.press("escape")
        assert len(queue.table.keys) == 12
        order = queue.table.ordered_keys()
        assert order[:2] == ["ws-urgent-tumor-01", "ws-running-05"]  # priority, then oldest
        await pilot.press("s")  # next column after priority: customer
        assert queue.sort_column == "customer"
        customers = [app.rows[k].cells[3] for k in queue.table.ordered_keys()]
        assert customers == sorted(customers)
        await pilot.press("S")
        customers = [app.rows[k].cells[3] for k in queue.table.ordered_keys()]
        assert customers == sorted(customers, reverse=True)


async def test_refresh_applies_diff_and_keeps_cursor(tmp_path):
    app = make_app(tmp_path)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot, app)
        table = app.screen.table
        table.move_to_key("ws-retrying-07")
        await pilot.pause()
        app.store.update_state("ws-urgent-tumor-01", "ignored", "x", "other@host")
        app.store.register_workset("ws-new-99", "daylily-ws", "worksets/ws-new-99/",
                                   priority="urgent", actor="discovery")
        await refresh(pilot, app)
        assert table.cursor_key() == "ws-retrying-07"
        assert "ws-new-99" in table.keys and len(table.keys) == 13
        assert "ignored" in str(table.get_cell("ws-urgent-tumor-01", "state"))
        assert app.stats.total() == 13


async def test_a_changed_row_is_drawn_on_screen_and_when_scrolled_back_to(tmp_path):
    """A refresh repaints only the on-screen lines whose cells changed; a row that changed while
    scrolled out of view shows its new text when scrolled back to (no stale line from before)."""
    store, clock = seed_store(str(tmp_path / "s.db"))
    for i in range(40):
        store.register_workset(f"ws-bulk-{i:02d}", "daylily-ws", f"worksets/ws-bulk-{i:02d}/",
                               priority="low", actor="discovery")
    app = make_app(tmp_path, store=store, clock=clock)
    async with app.run_test(size=(160, 24)) as pilot:
        await settle(pilot, app)
        table = app.screen.table
        order = table.ordered_keys()
        top, bottom = order[0], order[-1]
        table.move_cursor(row=len(order) - 1)  # draw the bottom rows once, then back to the top
        await pilot.pause()
        assert bottom in _screen_text(app)
        table.move_cursor(row=0)
        await pilot.pause()
        assert bottom not in _screen_text(app)
        clock.advance(1)
        assert store.acquire_lock(top, "engine-top") and store.acquire_lock(bottom, "engine-end")
        await refresh(pilot, app)
        assert table.ordered_keys() == order  # a state change: cells only, the order stays
        line = next(t for t in _screen_text(app).splitlines() if top in t)
        assert "engine-top" in line and "locked" in line
        table.move_cursor(row=len(order) - 1)
        await pilot.pause()
        line = next(t for t in _screen_text(app).splitlines() if bottom in t)
        assert "engine-end" in line and "locked" in line


async def test_rows_moved_by_a_refresh_are_drawn_with_their_own_cells(tmp_path):
    """A refresh that re-sorts (the sort column changed) draws every line with the cells of the
    row now at that place, none left from the row that was there before: here one row moves up
    and the rows it passes, unchanged themselves, each move down a line."""
    app = make_app(tmp_path)
    async with app.run_test(size=(160, 48)) as pilot:
        await settle(pilot, app)
        table = app.screen.table
        before = table.ordered_keys()
        await pilot.pause()
        app.clock.advance(1)
        app.store.set_priority(before[-1], "urgent", "op@host")
        await refresh(pilot, app)
        after = table.ordered_keys()
        assert after[0] == before[0] == table.cursor_key() and table.cursor_row == 0
        moved = after.index(before[-1])
        assert moved < len(before) - 1 and after[moved + 1:] == before[moved:-1]
        lines = _screen_text(app).splitlines()[5:5 + len(after)]
        for key, line in zip(after, lines):
            row = app.rows[key]
            assert row.cells[0][:10] in line and f" {row.priority} " in line, (key, line)


async def test_pause_stops_refresh(tmp_path):
    app = make_app(tmp_path)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot, app)
        await pilot.press("p")
        assert app.paused and "PAUSED" in _screen_text(app)
        app.store.register_workset("ws-new-99", "daylily-ws", "p/", actor="discovery")
        generation = app.refresh_generation
        app._wake.set()  # a timer tick while paused reads nothing
        await pilot.pause(0.5)
        assert app.refresh_generation == generation and "ws-new-99" not in app.rows
        await pilot.press("p")
        await settle(pilot, app, generation + 1)
        assert "ws-new-99" in app.rows


async def test_new_firing_alert_toasts_and_rings_on_any_screen(tmp_path):
    app = make_app(tmp_path, bell=True)
    rings = []
    app.bell = lambda: rings.append(1)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot, app)
        assert not rings  # alerts already firing at start are not news
        app.switch_mode("clusters")
        await pilot.pause()
        now = app.clock.now()
        app.store.put_alert(Alert(alert_id="al-9", rule="engine_heartbeat", subject=MARKUP_ID,
                                  severity=Severity.CRITICAL, state=AlertState.FIRING,
                                  summary="no heartbeat [b]3 intervals[/b]", pending_since=now,
                                  fired_at=now, updated_at=now))
        await refresh(pilot, app)
        assert rings == [1]
        messages = [n.message for n in app._notifications]
        assert any(MARKUP_ID in m and "[b]3 intervals[/b]" in m for m in messages)
        # the toast says how to get to the alerts; the header names the most severe one
        assert any(": alerts opens the alerts screen" in m for m in messages), messages
        header = _screen_text(app).splitlines()[1]
        assert "2 firing" in header and "no heartbeat" in header, header
        assert app.return_code is None and app.is_running


async def test_bell_off_in_settings(tmp_path):
    app = make_app(tmp_path, bell=False)
    rings = []
    app.bell = lambda: rings.append(1)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot, app)
        now = app.clock.now()
        app.store.put_alert(Alert(alert_id="al-9", rule="r", subject="s", severity=Severity.WARNING,
                                  state=AlertState.FIRING, summary="x", pending_since=now,
                                  fired_at=now, updated_at=now))
        await refresh(pilot, app)
        assert not rings and any("x" in n.message for n in app._notifications)


async def test_store_failure_keeps_data_shows_banner_and_recovers(tmp_path):
    app = make_app(tmp_path)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot, app)
        real = app.store.worksets_changed_since

        def broken(*_a, **_k):
            raise StoreUnavailable("connection refused")

        app.store.worksets_changed_since = broken
        await refresh(pilot, app)
        assert app.store_error and "connection refused" in _screen_text(app)
        assert len(app.screen.table.keys) == 12  # the last data stays
        app.store.worksets_changed_since = real
        await refresh(pilot, app)
        assert app.store_error is None and "connection refused" not in _screen_text(app)


async def test_keymap_rebinds_by_id(tmp_path):
    app = make_app(tmp_path, keymap={"release": "x", "jump": "g"})
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot, app)
        app.screen.table.move_to_key("ws-locked-04")
        await pilot.press("l")
        await pilot.pause(0.2)
        assert type(app.screen).__name__ == "QueueScreen"
        await pilot.press("x")
        await wait_for(pilot, lambda: type(app.screen).__name__ == "WorksetActionDialog",
                       what="release dialog on x")
        await pilot.press("escape", "g")
        await wait_for(pilot, lambda: type(app.screen).__name__ == "JumpDialog", what="jump on g")


async def test_unknown_keymap_id_is_reported(tmp_path):
    app = make_app(tmp_path, keymap={"relase": "x"})
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot, app)
        assert any("relase" in n.message for n in app._notifications)


async def test_palette_lists_actions_and_read_only_refuses_them_out_loud(tmp_path):
    for read_only in (False, True):
        app = make_app(tmp_path / str(read_only), read_only=read_only)
        async with app.run_test(size=(80, 24)) as pilot:
            await settle(pilot, app)
            provider = WsmonCommands(app.screen)
            commands = {text: callback for text, callback, _ in provider._commands()}
            assert any(t.startswith("Release") for t in commands)
            assert any(t.startswith("Stop") for t in commands)
            assert "Go to alerts" in commands and "Theme: wsmon-ansi" in commands
            if read_only:  # chosen from the palette: refused with a toast, not silently
                retry = next(cb for t, cb in commands.items() if t.startswith("Retry"))
                await retry()
                await pilot.pause()
                assert any("read-only: retry is disabled" in str(n.message)
                           for n in app._notifications)


async def test_markup_and_escape_sequences_render_literally(tmp_path):
    app = make_app(tmp_path)
    async with app.run_test(size=(160, 48)) as pilot:
        await settle(pilot, app)
        table = app.screen.table
        shot = _screen_text(app)
        assert "[@click=app.quit]x" in shot and "[bold red" in shot
        assert "evil-title" in shot and "\x1b]0;pwned" not in shot and "pwned" not in shot
        cell = str(table.get_cell(ESCAPE_ID, "id"))
        assert "\x1b" not in cell and "\x07" not in cell
        # clicking the row that carries the @click markup must do nothing but select it
        table.move_to_key(MARKUP_ID)
        await pilot.pause()
        row = table.cursor_row
        await pilot.click("#queue-table", offset=(8, row + 1 - int(table.scroll_y)))
        await pilot.pause(0.2)
        assert app.is_running and app.return_code is None
        await pilot.press("enter")
        await wait_for(pilot, lambda: type(app.screen).__name__ == "DetailScreen", what="detail")
        await wait_for(pilot, lambda: app.screen.record is not None, what="detail loaded")
        shot = _screen_text(app)
        assert "[@click=app.quit]x" in shot
        await pilot.click("#detail-content", offset=(2, 0))
        await pilot.pause(0.2)
        assert app.is_running and app.return_code is None


async def test_detail_shows_every_part(tmp_path):
    app = make_app(tmp_path)
    async with app.run_test(size=(160, 48)) as pilot:
        await settle(pilot, app)
        app.screen.table.move_to_key("ws-error-06")
        await pilot.press("enter")
        await wait_for(pilot, lambda: getattr(app.screen, "record", None) is not None, what="load")
        shot = _screen_text(app)
        for expected in ("s3://daylily-ws/worksets/ws-error-06/", "WS-RES-001", "remediation",
                         "Validation findings", "WS-DAT-002", "Timeline", "step run failed",
                         "attempts", "1 (max retries 3)"):
            assert expected in shot, expected


async def test_registered_is_one_instant_in_the_queue_the_detail_and_the_timeline(tmp_path):
    """A folder marked ready in S3 90 minutes before wsmon saw it: the queue's registered
    column, the detail's registered line and the timeline's registration row all show when wsmon
    registered it; the timeline names the sentinel's earlier time as what it is."""
    store, clock = seed_store(str(tmp_path / "s.db"))
    in_s3_since = clock.now() - timedelta(minutes=90)
    store.register_workset("ws-seen-late", "daylily-ws", "worksets/ws-seen-late/",
                           priority="urgent", state_at=in_s3_since, actor="discovery",
                           reason="registered from daylily.ready")
    registered = store.get_workset("ws-seen-late").created_at
    clock.advance(75)
    app = make_app(tmp_path, store=store, clock=clock)
    async with app.run_test(size=(160, 48)) as pilot:
        await settle(pilot, app)
        table = app.screen.table
        header = _screen_text(app).splitlines()[4]
        column = header.index(" reg ") + 1
        row = _screen_text(app).splitlines()[5 + table.ordered_keys().index("ws-seen-late")]
        assert row[column:column + 4].split() == ["1m"], row
        table.move_to_key("ws-seen-late")
        await pilot.press("enter")
        await wait_for(pilot, lambda: getattr(app.screen, "record", None) is not None, what="load")
        lines = _screen_text(app).splitlines()
        at = registered.strftime("%Y-%m-%d %H:%M:%S")
        detail = next(line for line in lines if line.strip().startswith("registered"))
        assert f"{at} UTC (1m15s ago)" in detail, detail
        timeline = next(line for line in lines if "registered from daylily.ready" in line)
        assert timeline.split()[:4] == [*at.split(), "1m15s", "ago"], timeline
        assert f"ready in S3 since {in_s3_since.strftime('%Y-%m-%d %H:%M:%S')}" in timeline


async def test_theme_choice_is_remembered(tmp_path):
    from wsmon.themes import remembered_theme

    app = make_app(tmp_path)
    app._remember_theme = True
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot, app)
        assert app.theme == "wsmon-dark"
        app.theme = "wsmon-high-contrast"
        await pilot.pause(0.2)
    assert remembered_theme(tmp_path / "state") == "wsmon-high-contrast"
    again = make_app(tmp_path / "again", store=app.store, clock=app.clock)
    again.settings.state_dir = tmp_path / "state"
    async with again.run_test(size=(80, 24)) as pilot:
        await settle(pilot, again)
        assert again.theme == "wsmon-high-contrast"
    explicit = make_app(tmp_path / "explicit", store=app.store, clock=app.clock, theme="wsmon-light")
    explicit.settings.state_dir = tmp_path / "state"
    async with explicit.run_test(size=(80, 24)) as pilot:
        await settle(pilot, explicit)
        assert explicit.theme == "wsmon-light"  # --theme / config beat the remembered one


HEARTBEAT = textwrap.dedent("""
    import sys
    from wsmon.engine.store import open_store
    store = open_store(sys.argv[1])
    store.record_monitor_heartbeat("engine-other-proc", host="other-host", pid=999,
                                   version="0.1.0", role="engine")
    store.close()
""")


@pytest.mark.slow
async def test_attach_to_engine_heartbeating_from_another_process(tmp_path):
    path = tmp_path / "shared.db"
    url = f"sqlite:///{path}"
    seed = open_store(url, clock=SystemClock())
    seed.register_workset("ws-1", "b", "p/ws-1/", actor="discovery")
    settings = Settings(state_dir=tmp_path / "state", store={"url": url})
    now = SystemClock().now()
    assert decide_engine(settings, seed, "auto", now) == (True, "engine in this process")
    subprocess.run([sys.executable, "-c", HEARTBEAT, url], check=True, timeout=60)
    start, text = decide_engine(settings, seed, "auto", SystemClock().now())
    assert start is False and "other-host" in text and "999" in text
    assert decide_engine(settings, seed, "attach", now)[0] is False
    assert decide_engine(settings, seed, "engine", now)[0] is True
    later = SystemClock().now() + timedelta(seconds=3 * 60 + 31)
    assert decide_engine(settings, seed, "auto", later)[0] is True  # stale: start our own

    app = make_app(tmp_path, store=seed, clock=SystemClock())
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot, app)
        assert app.engine_status.kind == "alive"
        assert "alive on other-host pid 999" in _screen_text(app)


def test_seeded_world_is_stable(tmp_path):
    """The snapshots rely on the seed being deterministic."""
    store_a, clock_a = seed_store(str(tmp_path / "a.db"))
    store_b, clock_b = seed_store(str(tmp_path / "b.db"))
    assert clock_a.now() == clock_b.now()
    a = {(w.workset_id, w.state, w.updated_at) for w in store_a.iter_worksets()}
    b = {(w.workset_id, w.state, w.updated_at) for w in store_b.iter_worksets()}
    assert a == b and len(a) == 12
    assert WorksetState.FAILED in {w.state for w in store_a.iter_worksets()}


async def test_ctrl_c_copies_the_selection_and_q_or_ctrl_q_quit(tmp_path):
    """Ctrl-C copies, as in every Textual app; with nothing selected it says how to quit."""
    app = make_app(tmp_path)
    copied: list[str] = []
    app.copy_to_clipboard = copied.append  # OSC 52 goes nowhere under the pilot
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot, app)
        await pilot.press("slash", *"oncology")
        app.screen.focused.selection = type(app.screen.focused.selection)(0, 8)
        await pilot.press("ctrl+c")
        await pilot.pause()
        assert copied == ["oncology"] and app.return_code is None
        await pilot.press("escape")
        await pilot.press("ctrl+c")  # nothing selected: a hint, not an exit
        await wait_for(pilot, lambda: any("quit" in str(n.message) for n in app._notifications),
                       what="the how-to-quit toast")
        assert app.return_code is None
        await pilot.press("ctrl+q")
        await wait_for(pilot, lambda: app.return_code is not None, what="exit on ctrl+q")
    (tmp_path / "again").mkdir()
    app = make_app(tmp_path / "again")
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot, app)
        await pilot.press("q")
        await wait_for(pilot, lambda: app.return_code is not None, what="exit on q")


async def test_header_says_starting_until_the_first_snapshot(tmp_path):
    """No red "engine ✗" beside zero counts before the store has answered."""
    import threading

    app = make_app(tmp_path)
    gate = threading.Event()
    reader = app.reader

    class HeldReader:
        def __getattr__(self, name):
            return getattr(reader, name)

        def read_preview(self):
            gate.wait(10)
            return reader.read_preview()

        def read(self, **kw):
            gate.wait(10)
            return reader.read(**kw)

    app.reader = HeldReader()
    async with app.run_test(size=(80, 24)) as pilot:
        await pilot.pause()
        before = _screen_text(app)
        assert "starting…" in before and "reading the store…" in before, before
        assert "✗" not in before and "unknown" not in before and "total" not in before, before
        gate.set()
        await settle(pilot, app)
        after = _screen_text(app)
        assert "starting…" not in after and "total 12" in after, after


@pytest.mark.parametrize("size", [(80, 24), (160, 48)])
async def test_every_queue_column_is_visible(tmp_path, size):
    app = make_app(tmp_path)
    async with app.run_test(size=size) as pilot:
        await settle(pilot, app)
        table = app.screen.table
        shown = sum(c.get_render_width(table) for c in table.columns.values())
        assert shown <= size[0] - 1  # nothing needs horizontal scrolling
        header = _screen_text(app).splitlines()[4]
        labels = (["workset", "state", "prio", "cust", "clust", "reg", "try", "lease",
                   "event/why"] if size[0] == 80 else
                  ["workset", "state", "prio", "customer", "cluster", "reg", "try",
                   "lease holder", "last event / why waiting"])
        for label in labels:
            assert label in header, (label, header)
        locked = _screen_text(app).splitlines()[4 + 1 + table.ordered_keys().index("ws-locked-04")]
        if size[0] == 80:  # symbol and word, long values cut with an ellipsis
            assert "◔ locked" in locked and "head…" in locked and "20m claimed" in locked
        else:
            assert "head-node-1-wsmon 20m claimed · head-node-1-wsmon" in " ".join(locked.split())


async def test_queue_shows_why_a_ready_workset_waits_and_folders_gone_from_s3(tmp_path):
    app = make_app(tmp_path)
    async with app.run_test(size=(160, 48)) as pilot:
        await settle(pilot, app)
        table = app.screen.table
        rows = _screen_text(app).splitlines()
        ordered = table.ordered_keys()
        waiting = rows[5 + ordered.index("ws-normal-cohort-02")]
        # at 160 columns the reason is read up to the cell's end; Enter shows it whole
        assert "waiting: cluster-a full 3/3, cluster-b full" in waiting
        gone = rows[5 + ordered.index("ws-low-reanalysis-03")]
        assert "⚠ gone from S3 · 1h registered · discovery" in gone
        # once claimed, the row tells what happened instead of the stale reason
        app.store.acquire_lock("ws-normal-cohort-02", "engine-x")
        await refresh(pilot, app)
        from wsmon.screens.snapshot import QUEUE_COLUMNS

        event_cell = [c.key for c in QUEUE_COLUMNS if c.key != "sel"].index("last_event")
        assert "claimed · engine-x" in app.rows["ws-normal-cohort-02"].cells[event_cell]
        await pilot.press("slash", *"gone from s3")
        await pilot.pause()
        assert table.keys == {"ws-low-reanalysis-03"}


async def test_palette_and_ctrl_q_have_ids_and_can_be_rebound(tmp_path):
    app = make_app(tmp_path, keymap={"palette": "ctrl+k", "quit-ctrl-q": "ctrl+o"})
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot, app)
        assert {"palette", "quit-ctrl-q"} <= app.binding_ids()
        await pilot.press("ctrl+p")
        await pilot.pause(0.2)
        assert type(app.screen).__name__ == "QueueScreen"
        await pilot.press("ctrl+k")
        await wait_for(pilot, lambda: type(app.screen).__name__ == "CommandPalette", what="palette")
        await pilot.press("escape")
        await wait_for(pilot, lambda: type(app.screen).__name__ == "QueueScreen", what="closed")
        await pilot.press("question_mark")
        await wait_for(pilot, lambda: type(app.screen).__name__ == "HelpScreen", what="help")
        rows = {row[2]: row[0] for row in app.screen.rows}
        assert rows["palette"] == "^k" and rows["quit-ctrl-q"] == "^o"
        await pilot.press("escape", "ctrl+o")
        await wait_for(pilot, lambda: app.return_code is not None, what="quit on the new key")


async def test_unknown_theme_warns_and_names_the_available_ones(tmp_path):
    app = make_app(tmp_path, theme="solarized-night")
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot, app)
        assert app.theme == "wsmon-dark"
        (message,) = [n.message for n in app._notifications if "theme" in n.message]
        assert "'solarized-night'" in message and "wsmon-high-contrast" in message


async def test_columns_follow_a_terminal_resize(tmp_path):
    app = make_app(tmp_path)
    async with app.run_test(size=(160, 48)) as pilot:
        await settle(pilot, app)
        assert "▶ in_progress" in _screen_text(app) and "lease holder" in _screen_text(app)
        await pilot.resize_terminal(80, 24)
        await wait_for(pilot, lambda: "▶ running" in _screen_text(app), what="compact layout")
        assert "lease" in _screen_text(app) and "event/why" in _screen_text(app)
        await pilot.resize_terminal(160, 48)
        await wait_for(pilot, lambda: "▶ in_progress" in _screen_text(app), what="roomy again")


@pytest.mark.parametrize("size", [(80, 24), (160, 48)])
async def test_ids_are_cut_in_the_middle_and_error_codes_stay_visible(tmp_path, size):
    """The id identifies a row: at 80 columns it is cut in the middle (both ends readable); the
    event column leads with the error code of a failing workset at any width."""
    store, clock = seed_store(str(tmp_path / "s.db"))
    for name in ("flaky-network-timeouts-04", "flaky-network-timeouts-05"):
        store.register_workset(name, "daylily-ws", f"worksets/{name}/", actor="discovery",
                               state="error", reason="validation failed: WS-VAL-003: no samples",
                               error_code="WS-VAL-003")
    app = make_app(tmp_path, store=store, clock=clock)
    async with app.run_test(size=size) as pilot:
        await settle(pilot, app)
        table = app.screen.table
        lines = _screen_text(app).splitlines()

        def line_of(key: str) -> str:
            return lines[4 + 1 + table.ordered_keys().index(key)]

        four, five = line_of("flaky-network-timeouts-04"), line_of("flaky-network-timeouts-05")
        if size[0] == 80:
            assert "flaky-n…outs-04" in four and "flaky-n…outs-05" in five, (four, five)
        else:
            assert "flaky-network-timeouts-05" in five, five
        for line in (four, five):
            assert "WS-VAL-003" in line, line
        assert "WS-NET-001" in line_of("ws-retrying-07")
        assert "WS-RES-001" in line_of("ws-error-06")


async def test_detail_times_tick_and_a_long_s3_location_keeps_the_folder_whole(tmp_path):
    """At 80 columns a long S3 location puts the folder on its own line, never cut in two;
    "state since … ago" moves with the clock, without a store refresh."""
    store, clock = seed_store(str(tmp_path / "s.db"))
    name = "flaky-network-timeouts-05"
    prefix = f"daylily_monitoring/active_worksets/{name}/"
    store.register_workset(name, "daylily-demo-worksets", prefix, actor="discovery")
    app = make_app(tmp_path, store=store, clock=clock)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot, app)
        assert app.screen.table.move_to_key(name)
        await pilot.press("enter")
        await wait_for(pilot, lambda: "S3 location" in _screen_text(app), what="detail")
        shot = _screen_text(app)
        assert f"{name}/" in shot, shot
        assert "(in 0s)" in shot.split("state since", 1)[1].splitlines()[0], shot
        clock.advance(seconds=95)
        await wait_for(pilot, lambda: "(1m35s ago)" in _screen_text(app), what="a ticking time")


async def test_release_dialog_says_whether_the_holders_engine_is_alive(tmp_path):
    """Before releasing a lock the operator sees whether its holder still beats, and when it was
    last heard from."""
    store, clock = seed_store(str(tmp_path / "s.db"))
    store.register_workset("ws-stale", "daylily-ws", "worksets/ws-stale/", actor="discovery")
    lease = store.acquire_lock("ws-stale", "crashed-monitor", lease_seconds=10.0)
    store.update_state("ws-stale", "in_progress", "pipeline started", "crashed-monitor", lease=lease)
    store.record_monitor_heartbeat("crashed-monitor", "old-headnode", 31337, "0", role="engine")
    clock.advance(seconds=600)  # beyond the heartbeat's staleness (3 heartbeats + skew)
    app = make_app(tmp_path, store=store, clock=clock)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot, app)
        assert app.screen.table.move_to_key("ws-stale")
        await pilot.press("l")
        await wait_for(pilot, lambda: type(app.screen).__name__ == "WorksetActionDialog",
                       what="release dialog")
        await pilot.pause()
        text = str(app.screen.query_one("#dialog-text").render())
        assert "crashed-monitor on old-headnode pid 31337: engine gone" in text, text
        assert "last heard from 10m00s ago" in text, text
