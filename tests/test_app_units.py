"""Pure parts of the dashboard: themes (files and built-ins agree), operator ops against the store,
the snapshot reader's incremental diff, formatting."""

from __future__ import annotations

from datetime import timedelta

from app_seed import seed_store

from wsmon.core.models import WorksetState
from wsmon.screens import ops
from wsmon.screens.snapshot import SnapshotReader, engine_status
from wsmon.themes import BUILTIN_THEMES, REPO_THEMES_DIR, build_themes, choose_theme, read_theme_file
from wsmon.themes import remember_theme
from wsmon.widgets.format import bar, compact_age, duration


def test_theme_files_match_the_built_in_definitions():
    files = {p.stem: read_theme_file(p) for p in REPO_THEMES_DIR.glob("*.toml")}
    assert set(files) == set(BUILTIN_THEMES) == {
        "wsmon-dark", "wsmon-light", "wsmon-high-contrast", "wsmon-ansi"}
    for name, spec in files.items():
        assert spec == BUILTIN_THEMES[name], name


def test_every_theme_builds_and_ansi_uses_the_terminal_palette():
    themes = {t.name: t for t in build_themes()}
    assert {"wsmon-dark", "wsmon-light", "wsmon-high-contrast", "wsmon-ansi"} <= set(themes)
    assert themes["wsmon-ansi"].ansi and not themes["wsmon-dark"].ansi
    assert themes["wsmon-light"].dark is False


def test_theme_choice_order(tmp_path):
    available = {"wsmon-dark", "wsmon-light", "wsmon-ansi"}
    assert choose_theme(None, tmp_path, available) == "wsmon-dark"
    remember_theme(tmp_path, "wsmon-ansi")
    assert choose_theme(None, tmp_path, available) == "wsmon-ansi"
    assert choose_theme("wsmon-light", tmp_path, available) == "wsmon-light"
    assert choose_theme("no-such", tmp_path, available) == "wsmon-ansi"
    (tmp_path / "ui.json").write_text("{broken")
    assert choose_theme(None, tmp_path, available) == "wsmon-dark"


def test_ops_refuse_stale_records(tmp_path):
    store, _ = seed_store(str(tmp_path / "s.db"))
    shown = store.get_workset("ws-error-06")
    store.update_state("ws-error-06", "retrying", "engine", "engine-x")
    outcome = ops.retry(store, shown, "op@host")
    assert outcome.conflict and "now retrying (was error)" in outcome.conflict
    assert store.get_workset("ws-error-06").state == WorksetState.RETRYING
    outcome = ops.retry(store, outcome.current, "op@host")
    assert outcome.done and store.events("ws-error-06")[-1].actor == "op@host"
    assert ops.release(store, store.get_workset("ws-urgent-tumor-01"), "op@host").error


def test_release_never_frees_a_lease_that_changed_hands_after_the_re_read(tmp_path):
    """The lease moves between the dialog's re-read and the write: the fence the operator saw
    no longer matches, so nothing is released and the operator is told."""
    store, _ = seed_store(str(tmp_path / "s.db"))
    shown = store.get_workset("ws-locked-04")
    real_get = store.get_workset
    reads = []

    def re_read_then_lease_moves(workset_id):
        reads.append(workset_id)
        if len(reads) == 1:
            current = real_get(workset_id)
            store.force_release(workset_id, "someone@else", "manual")
            store.acquire_lock(workset_id, "other-engine")
            return current
        return real_get(workset_id)

    store.get_workset = re_read_then_lease_moves
    outcome = ops.release(store, shown, "op@host")
    store.get_workset = real_get
    assert outcome.conflict and "changed meanwhile" in outcome.conflict
    assert store.get_workset("ws-locked-04").lock_owner == "other-engine"
    assert store.events("ws-locked-04")[-1].actor != "op@host"


def test_release_records_the_holder_once(tmp_path):
    store, _ = seed_store(str(tmp_path / "s.db"))
    shown = store.get_workset("ws-locked-04")
    assert ops.release(store, shown, "op@host").done
    reason = store.events("ws-locked-04")[-1].reason
    assert reason.count(shown.lock_owner) == 1 and "op@host" in reason


def test_reader_sends_only_what_changed(tmp_path):
    store, clock = seed_store(str(tmp_path / "s.db"))
    reader = SnapshotReader(store, clock, stale_after=210)
    first = reader.read()
    assert first.full and len(first.changed) == 12
    second = reader.read()
    assert not second.changed and not second.removed
    clock.advance(1)
    store.set_priority("ws-done-10", "urgent", "op@host")
    third = reader.read()
    assert set(third.changed) == {"ws-done-10"}
    assert third.changed["ws-done-10"].priority == "urgent"


def test_engine_status_alive_stale_none(tmp_path):
    store, clock = seed_store(str(tmp_path / "s.db"))
    monitors = store.list_monitors()
    assert engine_status(monitors, clock.now(), 210).kind == "alive"
    assert engine_status(monitors, clock.now() + timedelta(minutes=10), 210).kind == "stale"
    assert engine_status([], clock.now(), 210).kind == "none"


def test_formatting_reads_without_colour():
    assert compact_age(59) == "59s" and compact_age(3600 * 5) == "5h" and compact_age(86400 * 3) == "3d"
    assert duration(3725) == "1h02m" and duration(65) == "1m05s"
    assert bar(1, 4, 8) == "██░░░░░░  25%"


def test_log_tail_comes_from_the_failed_step_and_is_size_capped(tmp_path):
    from wsmon.core.models import StepRecord
    from wsmon.screens.detail import LOG_TAIL_BYTES, read_log_tail

    store, _ = seed_store(str(tmp_path / "s.db"))
    log = tmp_path / "run.log"
    log.write_bytes(b"x" * (LOG_TAIL_BYTES * 3) + b"\nlast line \x1b[31mred\x1b[0m\n")
    ws = store.get_workset("ws-error-06").model_copy(update={"steps": [
        StepRecord(name="stage", status="succeeded"),
        StepRecord(name="run", status="failed", log_path=str(log)),
    ], "log_tail": None})
    source, text = read_log_tail(ws)
    assert "run log" in source and len(text) <= LOG_TAIL_BYTES and text.endswith("[0m\n")
    gone = ws.model_copy(update={"steps": [StepRecord(name="run", status="failed",
                                                      log_path=str(tmp_path / "missing.log"))]})
    assert "not readable" in read_log_tail(gone)[1]


def test_columns_fit_the_width_compact_below_the_roomy_total():
    from wsmon.screens.snapshot import QUEUE_COLUMNS
    from wsmon.widgets.difftable import ColumnSpec, fit_columns

    gaps = sum(s.gap for s in QUEUE_COLUMNS)
    narrow = fit_columns(QUEUE_COLUMNS, 79)
    assert narrow.compact and sum(narrow.widths) + gaps == 79
    assert "cust" in narrow.labels and "customer" not in narrow.labels
    wide = fit_columns(QUEUE_COLUMNS, 159)
    assert not wide.compact and sum(wide.widths) + gaps == 159
    assert all(w >= s.width for w, s in zip(wide.widths, QUEUE_COLUMNS))
    specs = [ColumnSpec("a", "a", 5, grow=1, max=6), ColumnSpec("b", "b", 5, grow=1)]
    assert fit_columns(specs, 22).widths == (6, 14)  # a stops at its max, b takes the rest
