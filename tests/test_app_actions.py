"""Pilot tests: every operator action changes the store and names the operator; read-only;
actions on rows the filter hides; records that changed while a dialog was open."""

from __future__ import annotations

from datetime import timedelta

import pytest
from app_seed import make_app, settle, wait_for

from wsmon.core.models import AlertState, Priority, WorksetState
from wsmon.screens.dialogs import AckDialog, PriorityDialog, SilenceDialog, WorksetActionDialog

ACTOR = "tester@host"
pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


async def _at(pilot, app, key: str) -> None:
    assert app.screen.table.move_to_key(key), f"{key} not shown"
    await pilot.pause()


async def _open(pilot, app, keys: tuple[str, ...], dialog: type) -> None:
    await pilot.press(*keys)
    await wait_for(pilot, lambda: isinstance(app.screen, dialog), what=dialog.__name__)


async def _closed(pilot, app, dialog: type) -> None:
    await wait_for(pilot, lambda: not isinstance(app.screen, dialog), what="dialog closed")


def _last_event(app, key: str):
    return app.store.events(key)[-1]


@pytest.mark.parametrize("key,press,expected_state", [
    ("ws-locked-04", "l", WorksetState.READY),
    ("ws-error-06", "r", WorksetState.READY),
    ("ws-normal-cohort-02", "i", WorksetState.IGNORED),
    ("ws-ignored-09", "i", WorksetState.READY),
])
async def test_workset_action_changes_store_and_names_operator(tmp_path, key, press, expected_state):
    app = make_app(tmp_path)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot, app)
        await _at(pilot, app, key)
        await _open(pilot, app, (press,), WorksetActionDialog)
        await pilot.press("y")
        await _closed(pilot, app, WorksetActionDialog)
        record = app.store.get_workset(key)
        assert record.state == expected_state
        assert _last_event(app, key).actor == ACTOR
        await wait_for(pilot, lambda: app.rows[key].state == expected_state, what="row refreshed")
        assert app.return_code is None


async def test_release_bumps_the_fence_so_the_holder_is_fenced_out(tmp_path):
    app = make_app(tmp_path)
    before = app.store.get_workset("ws-locked-04").fence
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot, app)
        await _at(pilot, app, "ws-locked-04")
        await _open(pilot, app, ("l",), WorksetActionDialog)
        text = str(app.screen.query_one("#dialog-text").render())
        assert "head-node-1-wsmon" in text and "20m00s" in text and "fence" in text
        await pilot.press("y")
        await _closed(pilot, app, WorksetActionDialog)
    after = app.store.get_workset("ws-locked-04")
    assert after.fence > before and after.lock_owner is None


async def test_retry_dialog_shows_attempts_so_far(tmp_path):
    app = make_app(tmp_path)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot, app)
        await _at(pilot, app, "ws-failed-08")
        await _open(pilot, app, ("r",), WorksetActionDialog)
        assert "Attempts so far: 1" in str(app.screen.query_one("#dialog-text").render())
        await pilot.press("escape")
        await _closed(pilot, app, WorksetActionDialog)
    assert app.store.get_workset("ws-failed-08").state == WorksetState.FAILED  # cancelled


async def test_change_priority(tmp_path):
    app = make_app(tmp_path)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot, app)
        await _at(pilot, app, "ws-low-reanalysis-03")
        await _open(pilot, app, ("P",), PriorityDialog)
        await pilot.press("up", "up", "enter")  # low -> normal -> urgent
        await _closed(pilot, app, PriorityDialog)
    assert app.store.get_workset("ws-low-reanalysis-03").priority == Priority.URGENT
    assert _last_event(app, "ws-low-reanalysis-03").actor == ACTOR


async def test_acknowledge_alert_with_note(tmp_path):
    app = make_app(tmp_path)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot, app)
        app.switch_mode("alerts")
        await pilot.pause()
        await _open(pilot, app, ("a",), AckDialog)
        await pilot.press(*"on it", "enter")
        await _closed(pilot, app, AckDialog)
    alert = app.store.get_alert("al-1")
    assert alert.state == AlertState.ACKNOWLEDGED
    assert alert.acknowledged_by == ACTOR and alert.ack_note == "on it"


async def test_acknowledge_alert_with_an_expiry(tmp_path):
    app = make_app(tmp_path)
    now = app.clock.now()
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot, app)
        app.switch_mode("alerts")
        await pilot.pause()
        await _open(pilot, app, ("a",), AckDialog)
        await pilot.press("tab", *"soon", "enter")
        warning = app.screen.query_one("#dialog-warning")
        await wait_for(pilot, lambda: "not a duration" in str(warning.render()), what="refused")
        assert app.store.get_alert("al-1").state == AlertState.FIRING
        await pilot.press(*["backspace"] * 4, *"4h", "enter")
        await _closed(pilot, app, AckDialog)
    alert = app.store.get_alert("al-1")
    assert alert.state == AlertState.ACKNOWLEDGED and alert.acknowledged_by == ACTOR
    assert alert.ack_expires_at == now + timedelta(hours=4)


async def test_silence_alert_for_a_duration(tmp_path):
    app = make_app(tmp_path)
    now = app.clock.now()
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot, app)
        app.switch_mode("alerts")
        await pilot.pause()
        await _open(pilot, app, ("s",), SilenceDialog)
        await pilot.press("down", "enter")  # 1 hour -> 4 hours
        await _closed(pilot, app, SilenceDialog)
    (silence,) = app.store.list_silences()
    assert silence.created_by == ACTOR
    assert (silence.rule, silence.subject) == ("urgent_waiting", "ws-urgent-tumor-01")
    assert silence.ends_at == now + timedelta(hours=4)


@pytest.mark.parametrize("press,keys,expected", [
    ("r", ("ws-error-06", "ws-failed-08"), WorksetState.READY),
    ("l", ("ws-locked-04", "ws-running-05"), WorksetState.READY),
])
async def test_bulk_action_on_selection(tmp_path, press, keys, expected):
    app = make_app(tmp_path)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot, app)
        for key in keys:
            await _at(pilot, app, key)
            await pilot.press("space")
        assert app.screen.selected == set(keys)
        await _open(pilot, app, (press,), WorksetActionDialog)
        assert len(app.screen.records) == 2
        await pilot.press("y")
        await _closed(pilot, app, WorksetActionDialog)
        await wait_for(pilot, lambda: not app.screen.selected, what="selection cleared")
    for key in keys:
        assert app.store.get_workset(key).state == expected
        assert _last_event(app, key).actor == ACTOR


async def test_bulk_dialog_leaves_out_what_it_cannot_do(tmp_path):
    app = make_app(tmp_path)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot, app)
        for key in ("ws-locked-04", "ws-urgent-tumor-01"):
            await _at(pilot, app, key)
            await pilot.press("space")
        await _open(pilot, app, ("l",), WorksetActionDialog)
        assert [w.workset_id for w in app.screen.records] == ["ws-locked-04"]
        assert "no lock to release" in str(app.screen.query_one("#dialog-warning").render())
        await pilot.press("y")
        await _closed(pilot, app, WorksetActionDialog)
    assert app.store.get_workset("ws-urgent-tumor-01").state == WorksetState.READY
    assert _last_event(app, "ws-urgent-tumor-01").actor == "discovery"  # untouched


def _toasts(app) -> list[str]:
    return [str(n.message) for n in app._notifications]


async def test_read_only_says_so_on_every_key_palette_entry_and_click(tmp_path):
    """Regression (issue 12, observation 5): read-only keys used to do nothing, silently."""
    app = make_app(tmp_path, read_only=True)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot, app)
        await _at(pilot, app, "ws-running-05")
        for key, label in (("l", "release"), ("r", "retry"), ("R", "rerun"), ("x", "stop"),
                           ("i", "ignore / un-ignore"), ("P", "change priority"),
                           ("space", "selecting")):
            await pilot.press(key)
            await wait_for(pilot, lambda label=label: f"read-only: {label} is disabled"
                           in " ".join(_toasts(app)), what=f"toast for {key}")
            assert type(app.screen).__name__ == "QueueScreen"
        app.clear_notifications()
        await app.run_action("stop", app.screen)  # what a palette entry or a footer click runs
        await pilot.pause()
        assert any("read-only: stop is disabled" in t for t in _toasts(app))
        app.switch_mode("alerts")
        await pilot.pause()
        for key, label in (("a", "acknowledge"), ("s", "silence"), ("x", "resolve")):
            await pilot.press(key)
            await wait_for(pilot, lambda label=label: f"read-only: {label} is disabled"
                           in " ".join(_toasts(app)), what=f"toast for {key}")
            assert type(app.screen).__name__ == "AlertsScreen"
    assert app.store.get_workset("ws-running-05").state == WorksetState.IN_PROGRESS
    assert app.store.get_alert("al-1").state == AlertState.FIRING


async def test_action_on_workset_hidden_by_filter_uses_current_record(tmp_path):
    """Selected, then hidden by the filter, then changed by an engine: the dialog shows and acts
    on what the store holds now, not the stale row."""
    app = make_app(tmp_path)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot, app)
        await _at(pilot, app, "ws-error-06")
        await pilot.press("space")
        await pilot.press("slash", *"cohort", "enter")
        await pilot.pause()
        assert app.screen.table.keys == {"ws-normal-cohort-02"}
        app.store.update_state("ws-error-06", "retrying", "engine retry", "engine-x",
                               retry_after=app.clock.now() + timedelta(minutes=5))
        await _open(pilot, app, ("r",), WorksetActionDialog)
        (shown,) = app.screen.records
        assert shown.workset_id == "ws-error-06" and shown.state == WorksetState.RETRYING
        assert "retrying" in str(app.screen.query_one("#dialog-text").render())
        await pilot.press("y")
        await _closed(pilot, app, WorksetActionDialog)
    assert app.store.get_workset("ws-error-06").state == WorksetState.READY
    event = _last_event(app, "ws-error-06")
    assert event.actor == ACTOR and event.from_state == WorksetState.RETRYING


async def test_dialog_says_when_record_changed_meanwhile(tmp_path):
    app = make_app(tmp_path)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot, app)
        await _at(pilot, app, "ws-error-06")
        await _open(pilot, app, ("r",), WorksetActionDialog)
        app.store.update_state("ws-error-06", "retrying", "engine retry", "engine-x")
        await pilot.press("y")
        warning = app.screen.query_one("#dialog-warning")
        await wait_for(pilot, lambda: "changed meanwhile" in str(warning.render()), what="warning")
        assert "now retrying (was error)" in str(warning.render())
        assert app.store.get_workset("ws-error-06").state == WorksetState.RETRYING  # untouched
        await pilot.press("y")  # confirm again: acts on the record as it is now
        await _closed(pilot, app, WorksetActionDialog)
    assert app.store.get_workset("ws-error-06").state == WorksetState.READY


async def test_release_refused_when_lease_changed_hands(tmp_path):
    app = make_app(tmp_path)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot, app)
        await _at(pilot, app, "ws-locked-04")
        await _open(pilot, app, ("l",), WorksetActionDialog)
        app.store.force_release("ws-locked-04", "someone@else", "manual")
        app.store.acquire_lock("ws-locked-04", "other-engine")
        await pilot.press("y")
        warning = app.screen.query_one("#dialog-warning")
        await wait_for(pilot, lambda: "changed meanwhile" in str(warning.render()), what="warning")
        assert "other-engine" in str(warning.render())
    assert app.store.get_workset("ws-locked-04").lock_owner == "other-engine"


async def test_priority_conflict_is_reported(tmp_path):
    app = make_app(tmp_path)
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot, app)
        await _at(pilot, app, "ws-low-reanalysis-03")
        await _open(pilot, app, ("P",), PriorityDialog)
        app.store.set_priority("ws-low-reanalysis-03", "normal", "other@host")
        await pilot.press("up", "up", "enter")
        warning = app.screen.query_one("#dialog-warning")
        await wait_for(pilot, lambda: "changed meanwhile" in str(warning.render()), what="warning")
    assert app.store.get_workset("ws-low-reanalysis-03").priority == Priority.NORMAL


async def test_unsilence_ends_the_silence_covering_the_alert_and_is_audited(tmp_path):
    from wsmon.operations import parse_duration

    app = make_app(tmp_path)
    app.operations.silence("urgent_waiting", None, parse_duration("4h"), "maintenance")
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot, app)
        app.switch_mode("alerts")
        await pilot.pause()
        await pilot.press("u")
        await wait_for(pilot, lambda: not app.store.list_silences(active_at=app.clock.now()),
                       what="silence ended")
        await pilot.press("u")  # nothing covers it any more: said, not silent
        await wait_for(pilot, lambda: any("no silence covers" in str(n.message)
                                          for n in app._notifications), what="refusal")
    assert [(e.action, e.outcome) for e in app.store.list_operator_actions()][0] == (
        "unsilence", "done")
