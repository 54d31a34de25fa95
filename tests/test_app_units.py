"""Pure parts of the dashboard: themes (files and built-ins agree), operator ops against the store,
the snapshot reader's incremental diff, formatting."""

from __future__ import annotations

from datetime import timedelta

from app_seed import seed_store

from wsmon.screens.snapshot import SnapshotReader, engine_status
from wsmon.themes import (
    BUILTIN_THEMES,
    REPO_THEMES_DIR,
    build_themes,
    choose_theme,
    read_theme_file,
    remember_theme,
)
from wsmon.widgets.format import bar, compact_age, compact_age_changes_at, duration


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


def test_reader_counts_are_the_stores_queue_stats(tmp_path):
    """The header's counts come from the reader's mirror, not a store query per refresh; they
    must be the store's own figures after changes, a new workset and a deletion."""
    import sqlite3

    store, clock = seed_store(str(tmp_path / "s.db"))
    reader = SnapshotReader(store, clock, stale_after=210)
    assert reader.read().stats == store.queue_stats()
    clock.advance(1)
    store.set_priority("ws-done-10", "urgent", "op@host")
    store.acquire_lock("ws-normal-cohort-02", "engine-x")
    store.update_state("ws-failed-08", "ready", "operator retry", "op@host")
    store.register_workset("ws-new-13", "daylily-ws", "worksets/ws-new-13/", priority="low")
    incremental = reader.read()
    assert incremental.stats == store.queue_stats()
    assert incremental.stats.counts["locked"]["normal"] == 2  # ws-locked-04 and the new claim
    with sqlite3.connect(tmp_path / "s.db") as raw:  # the store API has no delete: a retention job
        raw.execute("DELETE FROM worksets WHERE workset_id = 'ws-urgent-tumor-01'")
    full = reader.read(force_full=True)
    assert "ws-urgent-tumor-01" in full.removed
    assert full.stats == store.queue_stats()
    assert full.stats.total() == 12


def test_reader_ages_match_a_fresh_read_as_time_moves(tmp_path):
    """Ages are recomputed only when their text can change; after any step of the clock the
    rows are what a reader reading everything afresh shows."""
    store, clock = seed_store(str(tmp_path / "s.db"))
    reader = SnapshotReader(store, clock, stale_after=210)
    rows = dict(reader.read().changed)
    for step, change in ((1, True), (0.4, False), (0.6, False), (58, False), (3, True),
                         (1800, False), (7 * 3600, False), (2 * 86400, False), (59, False)):
        clock.advance(step)
        if change:
            store.set_priority("ws-done-10", "low" if step == 1 else "urgent", "op@host")
        rows.update(reader.read().changed)
        fresh = SnapshotReader(store, clock, stale_after=210).read().changed
        assert {k: r.cells for k, r in rows.items()} == {k: r.cells for k, r in fresh.items()}, step


def test_an_age_changes_text_exactly_when_the_reader_expects():
    for seconds in (-3.0, 0.0, 0.5, 59.0, 59.9, 60.0, 61.0, 3599.0, 3600.0, 7300.0,
                    2 * 86400 - 1.0, 2 * 86400.0, 5 * 86400 + 3.0):
        at = compact_age_changes_at(seconds)
        assert at > seconds
        assert compact_age(at - 0.001) == compact_age(seconds), seconds
        assert compact_age(at) != compact_age(seconds), seconds


def test_engine_status_alive_stale_none(tmp_path):
    store, clock = seed_store(str(tmp_path / "s.db"))
    monitors = store.list_monitors()
    assert engine_status(monitors, clock.now(), 210).kind == "alive"
    assert engine_status(monitors, clock.now() + timedelta(minutes=10), 210).kind == "stale"
    assert engine_status([], clock.now(), 210).kind == "none"


def test_formatting_reads_without_colour():
    assert compact_age(59) == "50s" and compact_age(3600 * 5) == "5h" and compact_age(86400 * 3) == "3d"
    assert compact_age(9.9) == "0s" and compact_age(10) == "10s" and compact_age(60) == "1m"
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
