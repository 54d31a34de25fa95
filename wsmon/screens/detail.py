"""Everything about one workset: fields, timeline, lease, steps, diagnosis, findings, log tail."""

from __future__ import annotations

import os
from typing import Any

from rich.table import Table
from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.widgets import Static

from wsmon.core.models import Event, Workset, WorksetState
from wsmon.screens.base import WsmonScreen
from wsmon.screens.shared import WORKSET_ACTION_BINDINGS
from wsmon.screens.snapshot import Snapshot
from wsmon.core.textsafe import strip_control, truncate
from wsmon.engine.diagnostics import remediation
from wsmon.engine.progress.operator_argv import (
    NothingToOpen,
    attach_argv,
    pager_argv,
    s3_console_url,
    s3_uri,
)
from wsmon.widgets.format import STATE_ROLES, clock_time, duration, relative, state_label
from wsmon.widgets.progress_view import run_section
from wsmon.widgets.styles import role_style

LOG_TAIL_BYTES = 8192
LOG_TAIL_LINES = 40


def remediation_for(code: str | None) -> str | None:
    """Remediation text for a diagnostics code (a pure lookup in the engine's catalogue)."""
    if not code:
        return None
    return remediation(code)


def read_log_tail(ws: Workset) -> tuple[str, str] | None:
    """(source, text): the record's log tail, else the tail of the current or failed step's log."""
    if ws.log_tail:
        return "log tail recorded by the engine", ws.log_tail
    step = next((s for s in reversed(ws.steps) if s.status in ("running", "failed", "timed_out")),
                None) or (ws.steps[-1] if ws.steps else None)
    if step is None or not step.log_path:
        return None
    try:
        with open(step.log_path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - LOG_TAIL_BYTES))
            data = fh.read(LOG_TAIL_BYTES)
    except OSError as exc:
        return f"{step.name} log {step.log_path}", f"(not readable here: {exc.strerror})"
    text = data.decode("utf-8", errors="replace")
    return f"{step.name} log {step.log_path}", text


# the key column ("lease expires", "state since") and the grid's padding
DETAIL_KEY_WIDTH = 16


def _kv(table: Table, key: str, value: Any, style: Any = "") -> None:
    if value is None or value == "":
        value = "-"
    cell = value if isinstance(value, Text) else Text(strip_control(value), style=style)
    table.add_row(Text(key, style="dim"), cell)


class DetailScreen(WsmonScreen):
    SCREEN_NAME = "workset"
    BINDINGS = [
        Binding("escape", "back", "Back", id="back"),
        *WORKSET_ACTION_BINDINGS,
        Binding("o", "open_log", "Log", id="open-log", show=False,
                tooltip="The whole run log in $PAGER (on the head node for the SSH runner)"),
        Binding("a", "attach", "Attach", id="attach", show=False,
                tooltip="Watch the pipeline's tmux session read-only; detach (ctrl+b d) to return"),
        Binding("c", "copy_id", "Copy id", id="copy-id", show=False,
                tooltip="Copy the workset id to the clipboard (OSC 52: works over SSH and tmux)"),
        Binding("u", "copy_s3_uri", "Copy S3 URI", id="copy-s3-uri", show=False,
                tooltip="Copy the workset's s3:// URI to the clipboard"),
    ]
    DEFAULT_CSS = """
    DetailScreen #detail-body { height: 1fr; padding: 0 1; }
    DetailScreen .section { margin-bottom: 1; }
    """

    def __init__(self, workset_id: str) -> None:
        super().__init__()
        self.workset_id = workset_id
        self.record: Workset | None = None
        self.events: list[Event] = []
        self.log_tail: tuple[str, str] | None = None
        self.load_error: str | None = None

    def compose(self) -> ComposeResult:
        yield from self.compose_header()
        with VerticalScroll(id="detail-body"):
            yield Static(Text("loading…"), id="detail-content")
        yield from self.compose_footer()

    def on_mount(self) -> None:
        self.wsmon.snapshot_signal.subscribe(self, self._on_snapshot, immediate=True)
        self.wsmon.action_done_signal.subscribe(self, lambda _: self.load(), immediate=True)
        self.load()
        # relative times ("state since … (25s ago)") tick; from the record in hand, no store read
        self.set_interval(1.0, self._tick)

    def _tick(self) -> None:
        if self.record is not None and self.is_current:
            self.query_one("#detail-content", Static).update(self.render_detail())

    def _s3_location(self, ws: Workset) -> str | Text:
        """The URI on one line when it fits; else the folder on a line of its own, so a narrow
        terminal never cuts the folder name in two."""
        uri = f"s3://{ws.bucket}/{ws.prefix}"
        room = self.query_one("#detail-content", Static).size.width - DETAIL_KEY_WIDTH
        folder = ws.prefix.rstrip("/").rsplit("/", 1)[-1]
        if len(uri) <= room or not folder or room <= 0:
            return uri
        return Text("\n").join([Text(strip_control(uri[:len(uri) - len(folder) - 1])),
                                Text(strip_control(f"{folder}/"))])

    def _on_snapshot(self, snap: Snapshot) -> None:
        if self.workset_id in snap.changed_records or snap.full:
            self.load()

    @work(thread=True, exit_on_error=False, group="detail-load", exclusive=True)
    def load(self) -> None:
        store = self.wsmon.store
        try:
            record = store.get_workset(self.workset_id)
            events = store.events(self.workset_id) if record is not None else []
            tail = read_log_tail(record) if record is not None else None
            error = None
        except Exception as exc:
            from wsmon.screens.shared import describe_error

            record, events, tail, error = self.record, self.events, self.log_tail, describe_error(exc)
        self.app.call_from_thread(self._show, record, events, tail, error)

    def _show(self, record: Workset | None, events: list[Event], tail: tuple[str, str] | None,
              error: str | None) -> None:
        self.record, self.events, self.log_tail, self.load_error = record, events, tail, error
        self.query_one("#detail-content", Static).update(self.render_detail())

    def render_detail(self) -> Any:
        from rich.console import Group

        app = self.wsmon
        now = app.clock.now()
        ws = self.record
        parts: list[Any] = []
        if self.load_error:
            parts.append(Text(f"✗ could not refresh: {self.load_error}",
                              style=role_style(app, "error", bold=True)))
        if ws is None:
            parts.append(Text(f"{strip_control(self.workset_id)} is not in the store.",
                              style="bold"))
            return Group(*parts)
        title = Text()
        title.append(strip_control(ws.workset_id), style="bold")
        title.append("  ")
        title.append(state_label(ws.state), style=role_style(app, STATE_ROLES[ws.state], bold=True))
        title.append(f"  {ws.priority.value}")
        parts.append(title)

        fields = Table.grid(padding=(0, 2))
        fields.add_column(no_wrap=True)
        fields.add_column()
        _kv(fields, "S3 location", self._s3_location(ws))
        _kv(fields, "customer", ws.customer_id)
        _kv(fields, "cluster", ws.cluster_name)
        # "registered" is when wsmon registered the workset, the same instant the queue's
        # registered column and the timeline's registration row show
        _kv(fields, "registered", f"{clock_time(ws.created_at)} "
                                  f"({relative(ws.created_at, now)})")
        _kv(fields, "state since", f"{clock_time(ws.state_changed_at)} "
                                   f"({relative(ws.state_changed_at, now)})")
        _kv(fields, "updated", clock_time(ws.updated_at))
        max_retries = "-" if ws.max_retries is None else str(ws.max_retries)
        _kv(fields, "attempts", f"{ws.attempts} (max retries {max_retries})")
        if ws.retry_after is not None:
            _kv(fields, "next retry", f"{clock_time(ws.retry_after)} ({relative(ws.retry_after, now)})")
        if ws.state.holds_lease or ws.lock_owner:
            _kv(fields, "lease holder", ws.lock_owner)
            _kv(fields, "fence", str(ws.fence))
            if ws.lock_acquired_at:
                _kv(fields, "held for", duration((now - ws.lock_acquired_at).total_seconds()))
            if ws.lock_expires_at:
                expired = ws.lock_expires_at < now
                _kv(fields, "lease expires", f"{relative(ws.lock_expires_at, now)}"
                    f"{' (EXPIRED)' if expired else ''}",
                    style=role_style(app, "warning", bold=True) if expired else "")
        else:
            _kv(fields, "fence", str(ws.fence))
        _kv(fields, "pipeline dir", ws.pipeline_dir)
        _kv(fields, "schedule", ws.schedule_reason)
        if ws.s3_missing:
            _kv(fields, "S3", "folder missing from S3", style=role_style(app, "warning", bold=True))
        if ws.estimate:
            est = ws.estimate
            _kv(fields, "estimate", ", ".join(f"{k} {v}" for k, v in est.items()))
        work = ws.metadata.get("work") if isinstance(ws.metadata, dict) else None
        if isinstance(work, dict):
            for key in ("export_uri", "workdir_name", "budget", "notes"):
                if work.get(key) not in (None, ""):
                    _kv(fields, key.replace("_", " "), str(work.get(key)))
        parts.append(fields)
        parts.extend(run_section(ws, now, console_url=s3_console_url(ws, app.settings.aws.region),
                                 warning_style=role_style(app, "warning", bold=True)))

        if ws.error_code or ws.error_details:
            diag = Table.grid(padding=(0, 2))
            diag.add_column(no_wrap=True)
            diag.add_column()
            _kv(diag, "diagnosis", ws.error_code, style=role_style(app, "error", bold=True))
            _kv(diag, "details", truncate(strip_control(ws.error_details or ""), 600))
            _kv(diag, "remediation", remediation_for(ws.error_code) or "(no remediation on file)")
            parts.append(Text("\nDiagnosis", style="bold underline"))
            parts.append(diag)

        if ws.findings:
            parts.append(Text("\nValidation findings", style="bold underline"))
            findings = Table(box=None, show_edge=False, pad_edge=False, expand=False)
            for col in ("severity", "code", "where", "message", "remediation"):
                findings.add_column(col, style="" if col != "severity" else "bold")
            for f in ws.findings:
                where = strip_control(f.get("file") or "")
                if f.get("line"):
                    where += f":{f.get('line')}"
                findings.add_row(*(Text(strip_control(v or "")) for v in (
                    f.get("severity"), f.get("code"), where, f.get("message"), f.get("remediation"))))
            parts.append(findings)

        parts.append(Text("\nSteps", style="bold underline"))
        if ws.steps:
            steps = Table(box=None, show_edge=False, pad_edge=False)
            for col in ("step", "try", "status", "started", "duration", "exit", "detail"):
                steps.add_column(col)
            for s in ws.steps:
                end = s.finished_at or (now if s.started_at else None)
                took = duration((end - s.started_at).total_seconds()) if s.started_at and end else "-"
                role = {"succeeded": "success", "failed": "error", "timed_out": "error",
                        "running": "primary"}.get(s.status, "muted")
                steps.add_row(Text(strip_control(s.name)), str(s.attempt),
                              Text(s.status, style=role_style(app, role)),
                              s.started_at.strftime("%H:%M:%S") if s.started_at else "-", took,
                              "-" if s.exit_code is None else str(s.exit_code),
                              Text(truncate(strip_control(s.detail or ""), 80)))
            parts.append(steps)
        else:
            parts.append(Text("no steps yet", style="dim"))

        parts.append(Text("\nTimeline", style="bold underline"))
        timeline = Table(box=None, show_edge=False, pad_edge=False)
        for col in ("when", "ago", "from", "to", "actor", "reason"):
            timeline.add_column(col)
        for ev in self.events or ws.recent_events:
            at, reason = ev.at, truncate(strip_control(ev.reason), 120)
            if ev.from_state is None and abs((ev.at - ws.created_at).total_seconds()) >= 1:
                # The registration event carries the state's start from its S3 sentinel (a
                # folder marked ready before wsmon saw it); the row says when wsmon registered
                # it, as "registered" does everywhere, and names the sentinel's time.
                at = ws.created_at
                reason = (f"{reason} · {ev.to_state.value} in S3 since "
                          f"{ev.at.strftime('%Y-%m-%d %H:%M:%S')}")
            timeline.add_row(
                at.strftime("%Y-%m-%d %H:%M:%S"), relative(at, now),
                ev.from_state.value if ev.from_state else "-",
                Text(ev.to_state.value, style=role_style(app, STATE_ROLES[ev.to_state])),
                Text(strip_control(ev.actor)), Text(reason))
        parts.append(timeline)

        if self.log_tail:
            source, text = self.log_tail
            lines = strip_control(text, keep_newlines=True).splitlines()[-LOG_TAIL_LINES:]
            parts.append(Text(f"\nLog: {strip_control(source)}", style="bold underline"))
            parts.append(Text("\n".join(lines), style="dim"))
        return Group(*parts)

    # -- actions ---------------------------------------------------------------------------
    def action_back(self) -> None:
        self.dismiss()

    def action_release(self) -> None:
        self.wsmon.request_workset_action("release", [self.workset_id])

    def action_retry(self) -> None:
        self.wsmon.request_workset_action("retry", [self.workset_id])

    def action_rerun(self) -> None:
        self.wsmon.request_workset_action("rerun", [self.workset_id])

    def action_stop(self) -> None:
        self.wsmon.request_workset_action("stop", [self.workset_id])

    def action_toggle_ignore(self) -> None:
        ignored = self.record is not None and self.record.state == WorksetState.IGNORED
        self.wsmon.request_workset_action("unignore" if ignored else "ignore", [self.workset_id])

    def action_priority(self) -> None:
        self.wsmon.request_workset_action("priority", [self.workset_id])

    def action_open_log(self) -> None:
        self._hand_over_terminal("log", lambda s, ws: pager_argv(s, ws, os.environ))

    def action_attach(self) -> None:
        self._hand_over_terminal("tmux session", attach_argv)

    def _hand_over_terminal(self, what: str, build: Any) -> None:
        """Run a pager or tmux with the terminal (App.suspend), and come back when it ends."""
        import subprocess

        from textual.app import SuspendNotSupported

        if self.record is None:
            return
        try:
            argv = build(self.wsmon.settings, self.record)
        except NothingToOpen as exc:
            self.notify(str(exc), severity="warning")
            return
        try:
            with self.app.suspend():
                code = subprocess.call(argv)
        except SuspendNotSupported:
            self.notify(f"this terminal cannot hand over to the {what}; run: "
                        f"{strip_control(' '.join(argv))}", severity="warning", timeout=15)
            return
        except OSError as exc:
            self.notify(f"could not open the {what}: {strip_control(str(exc))}", severity="error")
            return
        if code:
            self.notify(f"the {what} ended with exit status {code}", severity="warning")
        self.load()

    def action_copy_id(self) -> None:
        self.app.copy_to_clipboard(self.workset_id)
        self.notify("workset id copied")

    def action_copy_s3_uri(self) -> None:
        if self.record is not None:
            self.app.copy_to_clipboard(s3_uri(self.record))
            self.notify("S3 URI copied")

