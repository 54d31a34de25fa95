"""Untrusted text (S3 folder names, alert text, lease holders) shows literally and does nothing on
every screen, dialog, toast, the help and the command palette."""

from __future__ import annotations

import pytest
from app_seed import MARKUP_ID, make_app, refresh, screen_text, settle, wait_for

from wsmon.app import WsmonCommands
from wsmon.core.models import Alert, AlertState, Severity

pytestmark = pytest.mark.anyio

BOOM = "[bold red]boom[/]"
OSC = "\x1b]0;pwned\x07"
HOLDER = "[@click=app.quit]holder"
ERROR_ID = "[@click=app.quit]err"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def hostile_world(app) -> None:
    """A hostile alert, a locked workset held by a hostile holder, one failed with hostile text."""
    store, now = app.store, app.clock.now()
    store.put_alert(Alert(alert_id="al-evil", rule=f"{BOOM}{OSC}rule", subject=MARKUP_ID,
                          severity=Severity.CRITICAL, state=AlertState.FIRING,
                          summary=f"{OSC}{BOOM} summary", description=f"{BOOM} described{OSC}",
                          pending_since=now, fired_at=now, updated_at=now))
    assert store.acquire_lock(MARKUP_ID, HOLDER) is not None
    store.register_workset(ERROR_ID, "daylily-ws", "worksets/err/", actor="discovery")
    lease = store.acquire_lock(ERROR_ID, "engine")
    store.update_state(ERROR_ID, "in_progress", "started", "engine", lease=lease)
    store.update_state(ERROR_ID, "error", f"{BOOM}{OSC}", "engine", lease=lease,
                       error_code="WS-RES-001", error_details=f"{BOOM} details{OSC}")


def assert_literal(text: str, *expected: str) -> None:
    for part in expected:
        assert part in text, part
    assert "pwned" not in text and "\x1b" not in text and "\x07" not in text


async def assert_inert(pilot, app, selector: str) -> None:
    """Clicking where the hostile text is shown must not run its @click action."""
    await pilot.click(selector, offset=(2, 0))
    await pilot.pause(0.1)
    assert app.is_running and app.return_code is None


async def test_alerts_screen_table_and_detail_pane(tmp_path):
    app = make_app(tmp_path)
    hostile_world(app)
    async with app.run_test(size=(160, 48), notifications=True) as pilot:
        await settle(pilot, app)
        app.switch_mode("alerts")
        await pilot.pause()
        table = app.screen.table
        assert table.move_to_key("al-evil")
        await pilot.pause()
        shot = screen_text(app)
        assert_literal(shot, "[bold red]boom[/]rule", MARKUP_ID, "[bold red]boom[/] summary",
                       "[bold red]boom[/] described")
        await assert_inert(pilot, app, "#alert-text")
        await pilot.click("#alerts-table", offset=(20, table.cursor_row + 1))
        await pilot.pause(0.1)
        assert app.is_running and app.return_code is None


@pytest.mark.parametrize("key,press", [(MARKUP_ID, "l"), (ERROR_ID, "r")])
async def test_release_and_retry_dialogs_and_success_toast(tmp_path, key, press):
    app = make_app(tmp_path)
    hostile_world(app)
    async with app.run_test(size=(160, 48), notifications=True) as pilot:
        await settle(pilot, app)
        assert app.screen.table.move_to_key(key)
        await pilot.press(press)
        await wait_for(pilot, lambda: type(app.screen).__name__ == "WorksetActionDialog",
                       what="dialog")
        await pilot.pause()
        shot = screen_text(app)
        assert_literal(shot, key, *((HOLDER,) if press == "l" else ("red]boom[/] details",)))
        await assert_inert(pilot, app, "#dialog-text")
        await pilot.press("y")
        await wait_for(pilot, lambda: type(app.screen).__name__ == "QueueScreen", what="done")
        await wait_for(pilot, lambda: key in screen_text(app).split("registered")[-1]
                       or any(key in n.message for n in app._notifications), what="toast")
        assert any(n.message.startswith(key) and not n.markup for n in app._notifications)
        assert_literal(screen_text(app), f"{key} {'released' if press == 'l' else 'sent to ready'}")
        assert app.is_running and app.return_code is None


@pytest.mark.parametrize("press,dialog", [("a", "AckDialog"), ("s", "SilenceDialog")])
async def test_ack_and_silence_dialogs(tmp_path, press, dialog):
    app = make_app(tmp_path)
    hostile_world(app)
    async with app.run_test(size=(160, 48), notifications=True) as pilot:
        await settle(pilot, app)
        app.switch_mode("alerts")
        await pilot.pause()
        assert app.screen.table.move_to_key("al-evil")
        await pilot.press(press)
        await wait_for(pilot, lambda: type(app.screen).__name__ == dialog, what=dialog)
        await pilot.pause()
        assert_literal(screen_text(app), "[bold red]boom[/]rule", f"subject: {MARKUP_ID}",
                       "[bold red]boom[/] summary")
        await assert_inert(pilot, app, "#dialog-text")
        await pilot.press("enter")  # acknowledge without a note / silence for the default hour
        await wait_for(pilot, lambda: type(app.screen).__name__ == "AlertsScreen", what="closed")
        await pilot.pause()
        assert_literal(screen_text(app), "[bold red]boom[/]rule")  # the success toast
        assert app.is_running and app.return_code is None


async def test_new_alert_toast_renders_literally(tmp_path):
    app = make_app(tmp_path)
    async with app.run_test(size=(160, 48), notifications=True) as pilot:
        await settle(pilot, app)
        hostile_world(app)
        await refresh(pilot, app)
        await pilot.pause()
        shot = screen_text(app)
        assert_literal(shot, "critical alert firing: [bold red]boom[/]rule",
                       f"[bold red]boom[/] summary ({MARKUP_ID})")
        await pilot.click("Toast", offset=(2, 1))
        await pilot.pause(0.1)
        assert app.is_running and app.return_code is None


async def test_help_over_a_hostile_detail_screen(tmp_path):
    app = make_app(tmp_path, keymap={MARKUP_ID: "x"})
    hostile_world(app)
    async with app.run_test(size=(160, 48), notifications=True) as pilot:
        await settle(pilot, app)
        assert_literal(screen_text(app), f"unknown binding id(s) in [keymap]: {MARKUP_ID}")
        assert app.screen.table.move_to_key(ERROR_ID)
        await pilot.press("enter")
        await wait_for(pilot, lambda: getattr(app.screen, "record", None) is not None, what="detail")
        await pilot.press("question_mark")
        await wait_for(pilot, lambda: type(app.screen).__name__ == "HelpScreen", what="help")
        await pilot.pause()
        assert_literal(screen_text(app), "Keys on workset", "[keymap]")
        await assert_inert(pilot, app, "#help")
        await pilot.press("escape")
        await wait_for(pilot, lambda: type(app.screen).__name__ == "DetailScreen", what="back")
        assert_literal(screen_text(app), ERROR_ID, "[bold red]boom[/] details")


async def test_command_palette_shows_hostile_text_literally(tmp_path, monkeypatch):
    ran = []
    hostile = f"{MARKUP_ID} {BOOM}"

    def commands(self):
        yield (hostile, lambda: ran.append(1), "[@click=app.quit]help [b]x[/b]")

    monkeypatch.setattr(WsmonCommands, "_commands", commands)
    app = make_app(tmp_path)
    hostile_world(app)
    async with app.run_test(size=(160, 48), notifications=True) as pilot:
        await settle(pilot, app)
        await pilot.press("ctrl+p")
        await wait_for(pilot, lambda: type(app.screen).__name__ == "CommandPalette", what="palette")
        await pilot.press(*"boom")
        await wait_for(pilot, lambda: "boom" in screen_text(app), what="hit")
        await pilot.pause(0.2)
        assert_literal(screen_text(app), hostile, "[@click=app.quit]help [b]x[/b]")
        await pilot.press("down", "enter")
        await wait_for(pilot, lambda: ran == [1], what="the hit's own callback, nothing else")
        assert app.is_running and app.return_code is None


def test_theme_files_with_markup_names_are_refused(tmp_path):
    from wsmon.themes import build_themes

    (tmp_path / "evil.toml").write_text('name = "[@click=app.quit]x"\nprimary = "#ff0000"\n')
    (tmp_path / "fine.toml").write_text('name = "my-theme"\nprimary = "#ff0000"\n')
    names = {t.name for t in build_themes([tmp_path])}
    assert "my-theme" in names and not any("[" in n for n in names)
