"""Snapshots of every screen and dialog from a seeded store and a fixed clock, at 80x24 and 160x48.

Regenerate after an intended change with ``pytest tests/test_app_snapshots.py --snapshot-update``
and look at the report before accepting it.
"""

from __future__ import annotations

import pytest
from app_seed import make_app, settle, wait_for
from textual.widgets import Input

from wsmon.engine.store.base import StoreUnavailable

SIZES = [pytest.param((80, 24), id="80x24"), pytest.param((160, 48), id="160x48")]


def steady(run_before):
    """Run ``run_before``, then stop every text cursor blinking.

    A blinking cursor is visible or not depending on how many half seconds the run took, which
    on a loaded CI machine made screenshots of the palette and of dialogs with inputs differ.
    Without blinking the cursor is shown steadily, as a user sees it right after typing.
    """
    async def run(pilot):
        await run_before(pilot)
        for field in pilot.app.screen.query(Input):
            field.cursor_blink = False
        await pilot.pause()
    return run


def snapshot(snap_compare, app, size, run_before) -> bool:
    return snap_compare(app, terminal_size=size, run_before=steady(run_before))


async def _to_row(pilot, app, key: str) -> None:
    assert app.screen.table.move_to_key(key), key
    await pilot.pause()


def _goto(mode: str):
    async def run(pilot):
        app = pilot.app
        await settle(pilot, app)
        if mode != "queue":
            app.switch_mode(mode)
            await pilot.pause()
            if mode == "clusters":
                await wait_for(pilot, lambda: bool(app.charts), what="chart history")
        await pilot.pause()
    return run


def _dialog(key: str | None, press: tuple[str, ...], expect: str, mode: str = "queue"):
    async def run(pilot):
        app = pilot.app
        await settle(pilot, app)
        if mode != "queue":
            app.switch_mode(mode)
            await pilot.pause()
        if key is not None:
            await _to_row(pilot, app, key)
        await pilot.press(*press)
        await wait_for(pilot, lambda: type(app.screen).__name__ == expect, what=expect)
        await pilot.pause(0.1)
    return run


def _bulk(press: str, keys: tuple[str, ...]):
    async def run(pilot):
        app = pilot.app
        await settle(pilot, app)
        for key in keys:
            await _to_row(pilot, app, key)
            await pilot.press("space")
        await pilot.press(press)
        await wait_for(pilot, lambda: type(app.screen).__name__ == "WorksetActionDialog")
        await pilot.pause(0.1)
    return run


async def _changed_meanwhile(pilot):
    app = pilot.app
    await _dialog("ws-error-06", ("r",), "WorksetActionDialog")(pilot)
    app.store.update_state("ws-error-06", "retrying", "engine retry", "engine-x")
    await pilot.press("y")
    await wait_for(pilot, lambda: "changed meanwhile" in str(
        app.screen.query_one("#dialog-warning").render()), what="conflict shown")


async def _store_failing(pilot):
    app = pilot.app
    await settle(pilot, app)

    def broken(*_a, **_k):
        raise StoreUnavailable("database is locked (retrying)")

    app.store.worksets_changed_since = broken
    target = app.refresh_generation + 1
    app.refresh_now()
    await settle(pilot, app, target)


async def _palette(pilot):
    app = pilot.app
    await settle(pilot, app)
    await pilot.press("ctrl+p")
    await wait_for(pilot, lambda: type(app.screen).__name__ == "CommandPalette", what="palette")
    # Textual orders hits of equal score by arrival, and providers race each other, so the
    # query must match commands of one provider only ("re" also hit the system "Screenshot").
    await pilot.press(*"retr")
    await wait_for(pilot, lambda: "retrying" in str(app.export_screenshot()), what="hits")
    await pilot.pause(0.3)


async def _events(pilot):
    app = pilot.app
    await settle(pilot, app)
    app.operations.ignore(app.store.get_workset("ws-running-05"), "duplicate upload")  # refused
    app.operations.set_priority(app.store.get_workset("ws-low-reanalysis-03"), "urgent")
    await pilot.press("colon", *"events", "enter")
    await wait_for(pilot, lambda: type(app.screen).__name__ == "EventsScreen"
                   and len(app.screen.entries) == 2, what="events")
    await pilot.pause(0.1)


# name -> (what to do before the snapshot, make_app options)
CASES = {
    "queue": (_goto("queue"), {}),
    "clusters": (_goto("clusters"), {}),
    "alerts": (_goto("alerts"), {}),
    "detail": (_dialog("ws-error-06", ("enter",), "DetailScreen"), {}),
    "running-detail": (_dialog("ws-running-05", ("enter",), "DetailScreen"), {}),
    "help": (_dialog(None, ("question_mark",), "HelpScreen"), {}),
    "jump": (_dialog(None, ("colon",), "JumpDialog"), {}),
    "palette": (_palette, {}),
    "release": (_dialog("ws-locked-04", ("l",), "WorksetActionDialog"), {}),
    "retry": (_dialog("ws-error-06", ("r",), "WorksetActionDialog"), {}),
    "ignore": (_dialog("ws-normal-cohort-02", ("i",), "WorksetActionDialog"), {}),
    "unignore": (_dialog("ws-ignored-09", ("i",), "WorksetActionDialog"), {}),
    "priority": (_dialog("ws-low-reanalysis-03", ("P",), "PriorityDialog"), {}),
    "bulk-release": (_bulk("l", ("ws-locked-04", "ws-running-05", "ws-urgent-tumor-01")), {}),
    "bulk-retry": (_bulk("r", ("ws-error-06", "ws-failed-08", "ws-retrying-07")), {}),
    "changed-meanwhile": (_changed_meanwhile, {}),
    "ack": (_dialog(None, ("a",), "AckDialog", mode="alerts"), {}),
    "silence": (_dialog(None, ("s",), "SilenceDialog", mode="alerts"), {}),
    "stop": (_dialog("ws-running-05", ("x",), "StopDialog"), {}),
    "rerun": (_dialog("ws-done-10", ("R",), "WorksetActionDialog"), {}),
    "resolve": (_dialog(None, ("x",), "ResolveDialog", mode="alerts"), {}),
    "events": (_events, {}),
    "read-only-queue": (_goto("queue"), {"read_only": True}),
}


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("case", list(CASES))
def test_screen(snap_compare, tmp_path, case, size):
    run_before, options = CASES[case]
    assert snapshot(snap_compare, make_app(tmp_path, **options), size, run_before)


# docs/images/detail.svg and store-banner.svg are copies of these two (tests/test_docs.py)
def test_detail_of_running_workset_with_log_tail(snap_compare, tmp_path):
    assert snapshot(snap_compare, make_app(tmp_path), (100, 48),
                    _dialog("ws-running-05", ("enter",), "DetailScreen"))


def test_store_failure_banner(snap_compare, tmp_path):
    assert snapshot(snap_compare, make_app(tmp_path), (80, 24), _store_failing)


def test_store_failure_banner_160x48(snap_compare, tmp_path):
    assert snapshot(snap_compare, make_app(tmp_path), (160, 48), _store_failing)


# Themes change colours only, never layout, so one size each shows them; the layouts are covered
# at both sizes in the default theme above.
@pytest.mark.parametrize("theme", ["wsmon-light", "wsmon-high-contrast", "wsmon-ansi"])
def test_theme(snap_compare, tmp_path, theme):
    assert snapshot(snap_compare, make_app(tmp_path, theme=theme), (80, 24), _goto("queue"))
