"""Snapshots of every screen and dialog from a seeded store and a fixed clock, at 80x24 and 160x48.

Regenerate after an intended change with ``pytest tests/test_app_snapshots.py --snapshot-update``
and look at the report before accepting it.
"""

from __future__ import annotations

import pytest
from app_seed import make_app, settle, wait_for

from wsmon.engine.store.base import StoreUnavailable

SIZES = [pytest.param((80, 24), id="80x24"), pytest.param((160, 48), id="160x48")]


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


CASES = {
    "queue": _goto("queue"),
    "clusters": _goto("clusters"),
    "alerts": _goto("alerts"),
    "detail": _dialog("ws-error-06", ("enter",), "DetailScreen"),
    "help": _dialog(None, ("question_mark",), "HelpScreen"),
    "jump": _dialog(None, ("colon",), "JumpDialog"),
    "release": _dialog("ws-locked-04", ("l",), "WorksetActionDialog"),
    "retry": _dialog("ws-error-06", ("r",), "WorksetActionDialog"),
    "ignore": _dialog("ws-normal-cohort-02", ("i",), "WorksetActionDialog"),
    "priority": _dialog("ws-low-reanalysis-03", ("P",), "PriorityDialog"),
    "ack": _dialog(None, ("a",), "AckDialog", mode="alerts"),
    "silence": _dialog(None, ("s",), "SilenceDialog", mode="alerts"),
}


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("case", list(CASES))
def test_screen(snap_compare, tmp_path, case, size):
    assert snap_compare(make_app(tmp_path), terminal_size=size, run_before=CASES[case])


def test_detail_of_running_workset_with_log_tail(snap_compare, tmp_path):
    assert snap_compare(make_app(tmp_path), terminal_size=(100, 48),
                        run_before=_dialog("ws-running-05", ("enter",), "DetailScreen"))


def test_bulk_release_dialog(snap_compare, tmp_path):
    async def run(pilot):
        app = pilot.app
        await settle(pilot, app)
        for key in ("ws-locked-04", "ws-running-05", "ws-urgent-tumor-01"):
            await _to_row(pilot, app, key)
            await pilot.press("space")
        await pilot.press("l")
        await wait_for(pilot, lambda: type(app.screen).__name__ == "WorksetActionDialog")
        await pilot.pause(0.1)

    assert snap_compare(make_app(tmp_path), terminal_size=(80, 24), run_before=run)


def test_dialog_after_record_changed_meanwhile(snap_compare, tmp_path):
    async def run(pilot):
        app = pilot.app
        await _dialog("ws-error-06", ("r",), "WorksetActionDialog")(pilot)
        app.store.update_state("ws-error-06", "retrying", "engine retry", "engine-x")
        await pilot.press("y")
        await wait_for(pilot, lambda: "changed meanwhile" in str(
            app.screen.query_one("#dialog-warning").render()), what="conflict shown")

    assert snap_compare(make_app(tmp_path), terminal_size=(80, 24), run_before=run)


def test_store_failure_banner(snap_compare, tmp_path):
    async def run(pilot):
        app = pilot.app
        await settle(pilot, app)

        def broken(*_a, **_k):
            raise StoreUnavailable("database is locked (retrying)")

        app.store.worksets_changed_since = broken
        target = app.refresh_generation + 1
        app.refresh_now()
        await settle(pilot, app, target)

    assert snap_compare(make_app(tmp_path), terminal_size=(80, 24), run_before=run)


def test_read_only_queue(snap_compare, tmp_path):
    assert snap_compare(make_app(tmp_path, read_only=True), terminal_size=(80, 24),
                        run_before=_goto("queue"))


@pytest.mark.parametrize("theme", ["wsmon-light", "wsmon-high-contrast", "wsmon-ansi"])
def test_theme(snap_compare, tmp_path, theme):
    assert snap_compare(make_app(tmp_path, theme=theme), terminal_size=(80, 24),
                        run_before=_goto("queue"))
