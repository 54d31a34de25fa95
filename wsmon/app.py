"""WsmonApp: the dashboard. Screens read and change only the store.

A thread worker reads a snapshot from the store every ``ui.refresh_interval`` seconds
(incrementally, with a periodic full reconcile), posts it as a ``SnapshotReady`` message, and the
screens apply the diff. Operator actions run in thread workers too, so the UI never waits on I/O.
``run_dashboard`` decides whether this process also runs the engine (see its docstring).
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime
from functools import partial
from typing import TYPE_CHECKING, Any

import structlog
from textual import work
from textual.app import App
from textual.binding import Binding
from textual.command import DiscoveryHit, Hit, Hits, Provider
from textual.content import Content
from textual.markup import escape as escape_markup
from textual.message import Message
from textual.signal import Signal
from textual.worker import get_current_worker

from wsmon.core.clock import Clock, SystemClock
from wsmon.engine.health import engine_stale_after
from wsmon.engine.store.base import Store, StoreError
from wsmon.core.exit_codes import EXIT_STORE, EXIT_USAGE
from wsmon.core.models import (
    Alert,
    AlertState,
    ClusterStatus,
    MonitorInfo,
    QueueStats,
    Severity,
    Silence,
    Workset,
)
from wsmon.operations import (
    ACTIONS,
    ALERT_ACTIONS,
    Operations,
    Outcome,
    Validator,
    s3_validator,
)
from wsmon.screens.shared import MUTATING_ACTIONS, describe_error
from wsmon.screens.snapshot import EngineStatus, QueueRow, Snapshot, SnapshotReader, live_engine
from wsmon.core.textsafe import strip_control, truncate

if TYPE_CHECKING:
    from wsmon.config.settings import Settings

log = structlog.get_logger(__name__)

SCREEN_NAMES = ("queue", "clusters", "alerts")
# what a read-only refusal calls an action that is not named after its operation
READ_ONLY_LABELS = {"toggle_ignore": "ignore / un-ignore", "ack": "acknowledge",
                    "toggle_select": "selecting", "select_all": "selecting",
                    "clear_selection": "selecting", "priority": "change priority"}

APP_CSS = """
Screen { layers: base overlay; }
DiffTable { scrollbar-size-vertical: 1; }
DiffTable > .datatable--header { text-style: bold; }
#filter-bar { height: 1; padding: 0 1; background: $surface; color: $text-muted; }
#filter-input { display: none; height: 1; border: none; padding: 0 1; }
#filter-input.active { display: block; }
"""


class SnapshotReady(Message):
    def __init__(self, snapshot: Snapshot) -> None:
        super().__init__()
        self.snapshot = snapshot


class StoreFailed(Message):
    def __init__(self, error: str) -> None:
        super().__init__()
        self.error = error


class WsmonCommands(Provider):
    """Every action of the current screen, screen jumps and themes, in the command palette."""

    def _commands(self) -> Iterator[tuple[str, Any, str]]:
        app: WsmonApp = self.app  # type: ignore[assignment]
        screen = self.screen
        seen: set[tuple[int, str]] = set()
        for active in screen.active_bindings.values():
            binding = active.binding
            # wsmon's own actions carry ids; widget navigation (cursor keys) is not an action
            if binding.system or not active.enabled or not binding.id:
                continue
            ident = (id(active.node), binding.action)
            if ident in seen:
                continue
            seen.add(ident)
            key = app.get_key_display(binding)
            label = binding.description or binding.action
            yield (f"{label} ({key})", partial(app.run_action, binding.action, active.node),
                   binding.tooltip or f"binding id: {binding.id or '-'}")
        for name in SCREEN_NAMES:
            yield (f"Go to {name}", partial(app.switch_mode, name), f"show the {name} screen")
        yield ("Go to events", app.open_events, "operator actions across all worksets (audit trail)")
        yield ("Pause or resume refresh", app.action_toggle_pause, "stop reading the store")
        for name in sorted(app.available_themes):
            if name.startswith("wsmon-"):
                yield (f"Theme: {strip_control(name)}", partial(setattr, app, "theme", name),
                       "remembered")

    # The palette parses a str prompt (and Matcher.highlight's input, and help) as markup; theme
    # names come from user files, so prompts are built as plain Content and help is escaped.
    async def discover(self) -> Hits:
        for text, callback, help_text in self._commands():
            yield DiscoveryHit(Content(text), callback, text=text, help=escape_markup(help_text))

    async def search(self, query: str) -> Hits:
        matcher = self.matcher(query)
        for text, callback, help_text in self._commands():
            score, offsets = matcher.fuzzy_search.match(matcher.query, text)
            if score > 0:
                prompt = Content(text)
                for offset in offsets:
                    if not text[offset].isspace():
                        prompt = prompt.stylize(matcher.match_style, offset, offset + 1)
                yield Hit(score, prompt, callback, text=text, help=escape_markup(help_text))


class WsmonApp(App[int]):
    CSS = APP_CSS
    TITLE = "wsmon"
    COMMANDS = App.COMMANDS | {WsmonCommands}
    BINDINGS = [
        Binding("colon", "jump", "Jump", id="jump", tooltip="Jump to a screen by name"),
        Binding("question_mark", "help", "Keys", id="help", tooltip="Every key of this screen"),
        Binding("p", "toggle_pause", "Pause", id="pause", show=False,
                tooltip="Pause or resume refresh"),
        Binding("ctrl+r", "refresh_now", "Refresh", id="refresh", show=False),
        Binding("q", "quit", "Quit", id="quit", show=False),
        # Textual's own ctrl+p and ctrl+q carry no id, so they could not be rebound (tmux and
        # terminals often claim them); defined here with ids they go through [keymap] too.
        Binding("ctrl+p", "command_palette", "Palette", id="palette", show=False, priority=True,
                tooltip="Command palette: every action, screen and theme"),
        Binding("ctrl+q", "quit", "Quit", id="quit-ctrl-q", show=False, priority=True,
                tooltip="Quit (also from an input)"),
        # Ctrl-C is Textual's: it copies the selected text (the screen's and an input's own
        # binding), and with nothing selected a toast says which key quits.
    ]

    def __init__(self, store: Store, settings: Settings, *, clock: Clock | None = None,
                 actor: str | None = None, engine_mode_text: str = "",
                 refresh_interval: float | None = None, stale_after: float | None = None,
                 remember_theme: bool = True, validator: Validator | None = None) -> None:
        super().__init__()
        from wsmon.screens.alerts import AlertsScreen
        from wsmon.screens.clusters import ClustersScreen
        from wsmon.screens.queue import QueueScreen

        for name, screen_class in (("queue", QueueScreen), ("clusters", ClustersScreen),
                                   ("alerts", AlertsScreen)):
            self.add_mode(name, screen_class)
        self.store = store
        self.settings = settings
        self.clock: Clock = clock or SystemClock()
        if actor is None:
            from wsmon.core.identity import operator_actor as default_actor

            actor = default_actor()
        self.actor = actor
        # every operator action goes through here; retries re-validate the workset's S3 folder
        self.operations = Operations(store, actor, validator=validator or s3_validator(settings),
                                     engine_stale_after=engine_stale_after(settings))
        self.read_only = settings.ui.read_only
        self.refresh_interval = refresh_interval or settings.ui.refresh_interval
        self.engine_mode_text = engine_mode_text
        self.store_url = store.url
        self._remember_theme = remember_theme
        if stale_after is None:
            stale_after = engine_stale_after(settings).total_seconds()
        self.reader = SnapshotReader(store, self.clock, stale_after=stale_after)
        # what the screens show; replaced or updated only on the UI thread
        self.rows: dict[str, QueueRow] = {}
        self.stats: QueueStats | None = None
        # "starting" until the first snapshot says otherwise (the header shows "starting…")
        self.engine_status = EngineStatus("starting", "starting…")
        # set while this process is still preparing the engine it will run (the demo seeds first)
        self.engine_starting = False
        self.clusters: list[ClusterStatus] = []
        self.monitors: list[MonitorInfo] = []  # heartbeats: whose engine is alive, and since when
        self.alerts: list[Alert] = []
        self.silences: list[Silence] = []
        self.charts: dict[str, list[tuple[datetime, float]]] = {}
        self.last_refresh_at: datetime | None = None
        self.store_error: str | None = None
        self.store_error_since: datetime | None = None
        self.paused = False
        self.paused_at: datetime | None = None  # the data's time when the operator paused
        self._held: list[Snapshot] = []  # snapshots read while paused, applied on resume
        self.refresh_generation = 0
        self.loaded = False  # the first full read has been applied
        self.last_apply_seconds = 0.0
        self.last_apply_cpu_seconds = 0.0
        self.reader_last_seconds = 0.0
        self.want_charts = False
        self._seen_firing: set[str] | None = None
        self._wake = threading.Event()
        self._manual = False
        self.snapshot_signal: Signal[Snapshot] = Signal(self, "snapshot")
        self.status_signal: Signal[None] = Signal(self, "status")
        self.action_done_signal: Signal[str] = Signal(self, "action-done")

    # -- lifecycle -------------------------------------------------------------------------
    def on_mount(self) -> None:
        from wsmon.themes import build_themes, choose_theme

        for theme in build_themes():
            self.register_theme(theme)
        explicit = self.settings.ui.theme if "theme" in self.settings.ui.model_fields_set else None
        available = set(self.available_themes)
        self.theme = choose_theme(explicit, self.settings.state_dir, available)
        if explicit and explicit not in available:
            ours = sorted(name for name in available if name.startswith("wsmon-"))
            self.notify(f"unknown theme {strip_control(explicit)!r} (from --theme or config); "
                        f"using {self.theme}. Available: {', '.join(ours)}",
                        severity="warning", markup=False, timeout=10)
        self.theme_changed_signal.subscribe(self, self._on_theme_changed)
        self._apply_keymap()
        self.switch_mode("queue")
        self._refresh_loop()

    def _apply_keymap(self) -> None:
        keymap = dict(self.settings.keymap)
        if not keymap:
            return
        known = self.binding_ids()
        unknown = sorted(set(keymap) - known)
        if unknown:
            self.notify(f"unknown binding id(s) in [keymap]: "
                        f"{', '.join(strip_control(u) for u in unknown)}; "
                        f"known: {', '.join(sorted(known))}", severity="warning", markup=False,
                        timeout=10)
        self.set_keymap({k: v for k, v in keymap.items() if k in known})

    def binding_ids(self) -> set[str]:
        from wsmon.screens import all_screen_classes

        ids = {b.id for b in self._bindings_of(type(self)) if b.id}
        for cls in all_screen_classes():
            ids |= {b.id for b in self._bindings_of(cls) if b.id}
        return ids

    @staticmethod
    def _bindings_of(cls: type) -> list[Binding]:
        out = []
        for base in cls.__mro__:
            for b in base.__dict__.get("BINDINGS", []):
                if isinstance(b, Binding):
                    out.append(b)
        return out

    def _on_theme_changed(self, theme: Any) -> None:
        self.status_signal.publish(None)
        if self._remember_theme:
            from wsmon.themes import remember_theme

            remember_theme(self.settings.state_dir, theme.name)

    # -- refresh ---------------------------------------------------------------------------
    @work(thread=True, exit_on_error=False, group="refresh", exclusive=True, name="store refresh")
    def _refresh_loop(self) -> None:
        worker = get_current_worker()
        first = True
        try:
            self.post_message(SnapshotReady(self.reader.read_preview()))
        except Exception as exc:  # the full read below reports it
            log.info("store_preview_failed", error=str(exc))
        while not worker.is_cancelled:
            if first or not self.paused or self._manual:
                self._manual = False
                try:
                    snapshot = self.reader.read(want_charts=self.want_charts)
                except Exception as exc:  # any failure: keep the last data, say so, retry
                    self.reader.reset()
                    log.warning("store_read_failed", error=str(exc))
                    self.post_message(StoreFailed(describe_error(exc)))
                else:
                    self.post_message(SnapshotReady(snapshot))
            first = False
            # short waits so an exiting app never waits a whole interval for this thread
            deadline = time.monotonic() + self.refresh_interval
            while not worker.is_cancelled and not self._wake.is_set():
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    break
                self._wake.wait(min(remaining, 0.2))
            self._wake.clear()

    def refresh_now(self) -> None:
        """Read the store now (also while paused)."""
        self._manual = True
        self._wake.set()

    def on_snapshot_ready(self, message: SnapshotReady) -> None:
        if self.paused and self.loaded:
            # paused freezes everything read from the store; snapshots are diffs, so keep them
            self._held.append(message.snapshot)
            return
        self._apply_snapshot(message)

    def _apply_snapshot(self, message: SnapshotReady) -> None:
        started = time.perf_counter()
        started_cpu = time.thread_time()
        snap = message.snapshot
        self.rows.update(snap.changed)
        for key in snap.removed:
            self.rows.pop(key, None)
        self.stats = snap.stats
        self.engine_status = snap.engine
        self.clusters = snap.clusters
        self.monitors = snap.monitors
        self.alerts = snap.alerts
        self.silences = snap.silences
        if snap.charts is not None:
            self.charts = snap.charts
        self.last_refresh_at = snap.at
        if not snap.preview:
            self.loaded = True
        self.reader_last_seconds = snap.read_seconds
        self.store_error = None
        self.store_error_since = None
        self._announce_new_alerts(snap)
        self.refresh_generation += 1
        self.snapshot_signal.publish(snap)
        self.status_signal.publish(None)
        self.last_apply_seconds = time.perf_counter() - started
        self.last_apply_cpu_seconds = time.thread_time() - started_cpu

    def on_store_failed(self, message: StoreFailed) -> None:
        if self.store_error is None:
            self.store_error_since = self.clock.now()
        self.store_error = message.error
        self.refresh_generation += 1
        self.status_signal.publish(None)

    def _announce_new_alerts(self, snap: Snapshot) -> None:
        firing = {a.alert_id: a for a in snap.alerts if a.state == AlertState.FIRING}
        previous = self._seen_firing
        self._seen_firing = set(firing)
        if previous is None:
            return  # the first snapshot is the baseline, not news
        new = [a for key, a in firing.items() if key not in previous
               and not any(s.matches(a, snap.at) for s in snap.silences)]
        for alert in new:
            severity = "error" if alert.severity == Severity.CRITICAL else "warning"
            self.notify(
                truncate(f"{strip_control(alert.summary)} ({strip_control(alert.subject)})", 200)
                + f"\n{self.alerts_key_hint()}",
                title=f"{alert.severity.value} alert firing: {strip_control(alert.rule)}",
                severity=severity, markup=False, timeout=8,
            )
        if new and self.settings.ui.bell:
            self.bell()

    @property
    def firing_count(self) -> int:
        return sum(1 for a in self.alerts if a.state == AlertState.FIRING)

    def most_severe_firing(self) -> Alert | None:
        """The firing alert the header names: the most severe, the newest among equals."""
        rank = {Severity.CRITICAL: 2, Severity.WARNING: 1, Severity.INFO: 0}
        firing = [a for a in self.alerts if a.state == AlertState.FIRING]
        if not firing:
            return None
        return max(firing, key=lambda a: (rank.get(a.severity, 0),
                                          a.fired_at or a.updated_at))

    def alerts_key_hint(self) -> str:
        """How to open the alerts screen with the keys in effect (the jump key may be rebound)."""
        for active in self.active_bindings.values():
            if active.binding.id == "jump":
                return f"{self.get_key_display(active.binding)} alerts opens the alerts screen"
        return ":alerts opens the alerts screen"

    # -- app actions -----------------------------------------------------------------------
    def action_toggle_pause(self) -> None:
        self.paused = not self.paused
        if self.paused:
            self.paused_at = self.last_refresh_at
        else:
            self.paused_at = None
            held, self._held = self._held, []
            for snap in held:
                self._apply_snapshot(SnapshotReady(snap))
            self.refresh_now()
        self.status_signal.publish(None)

    def action_refresh_now(self) -> None:
        if self.paused:
            self.notify("paused: the screens stay as they were; press p to resume",
                        severity="warning", markup=False)
            return
        self.refresh_now()

    def action_jump(self) -> None:
        from wsmon.screens.dialogs import JumpDialog

        def go(name: str | None) -> None:
            if name == "help":
                self.action_help()
            elif name == "events":
                self.open_events()
            elif name in SCREEN_NAMES:
                self.switch_mode(name)

        self.push_screen(JumpDialog([*SCREEN_NAMES, "events", "help"]), go)

    def open_events(self) -> None:
        """``:events``: every operator action (the audit trail), refused ones included."""
        from wsmon.screens.events import EventsScreen

        if not isinstance(self.screen, EventsScreen):
            self.push_screen(EventsScreen())

    def action_help(self) -> None:
        from wsmon.screens.help import HelpScreen

        if isinstance(self.screen, HelpScreen):
            return
        self.push_screen(HelpScreen(self.screen))

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        return True  # read-only refusals are said out loud in run_action, never a dead key

    async def run_action(self, action: str | Any, default_namespace: Any = None) -> bool:
        """Every key, palette entry and mouse click on a binding comes through here: in
        read-only mode a store-changing action is refused with a toast naming it."""
        if self.read_only and isinstance(action, str):
            from textual.actions import parse

            _, name, _ = parse(action)
            if name in MUTATING_ACTIONS:
                self.refuse_read_only(name)
                return True
        return await super().run_action(action, default_namespace)

    def refuse_read_only(self, action: str) -> None:
        label = READ_ONLY_LABELS.get(action, action.replace("_", " "))
        self.notify(f"read-only: {label} is disabled (this dashboard was started read-only)",
                    severity="warning", markup=False)

    # -- operator actions (screens call these; dialogs do the store writes) -----------------
    def request_workset_action(self, kind: str, keys: list[str]) -> None:
        if self.read_only:
            self.refuse_read_only(kind)
            return
        if keys:
            self._load_for_action(kind, list(keys))

    @work(thread=True, exit_on_error=False, group="action-load")
    def _load_for_action(self, kind: str, keys: list[str]) -> None:
        ops = self.operations
        try:
            records = [self.store.get_workset(k) for k in keys]
            found = [r for r in records if r is not None]
            # what the rules refuse is refused (and audited) by the operation itself, at once
            options = {"stop": {"to": "error"}}.get(kind, {})
            refused = [ops.run(kind, r, **options) for r in found if ops.check(kind, r)]
        except Exception as exc:
            self.call_from_thread(self.notify, f"cannot read the store: {describe_error(exc)}",
                                  severity="error", markup=False)
            return
        refused_keys = {o.key for o in refused}
        allowed = [r for r in found if r.workset_id not in refused_keys]
        missing = [k for k, r in zip(keys, records) if r is None]
        self.call_from_thread(self._open_workset_dialog, kind, allowed, refused, missing)

    def _open_workset_dialog(self, kind: str, records: list[Workset], refused: list[Outcome],
                             missing: list[str]) -> None:
        from wsmon.screens.dialogs import (
            PriorityDialog,
            StopDialog,
            WorksetActionDialog,
            outcome_text,
        )

        if missing:
            self.notify(f"no longer in the store: {', '.join(strip_control(m) for m in missing)}",
                        severity="warning", markup=False)
        if not records:
            # nothing to confirm: the refusal is the answer (k9s style, a toast)
            for outcome in refused[:5]:
                self.notify(outcome_text(outcome, 60), title=f"{ACTIONS[kind].label}: refused",
                            severity="warning", markup=False, timeout=8)
            if len(refused) > 5:
                self.notify(f"… and {len(refused) - 5} more refused", severity="warning",
                            markup=False)
            return
        if kind == "priority":
            dialog: Any = PriorityDialog(records[0])
        elif kind == "stop":
            dialog = StopDialog(records[0])
        else:
            dialog = WorksetActionDialog(kind, records, refused)
        self.push_screen(dialog, self._after_action)

    def request_alert_action(self, kind: str, alert_id: str) -> None:
        if self.read_only:
            self.refuse_read_only(kind)
            return
        self._load_alert(kind, alert_id)

    @work(thread=True, exit_on_error=False, group="action-load")
    def _load_alert(self, kind: str, alert_id: str) -> None:
        ops = self.operations
        refused = None
        if kind == "unsilence":
            self._unsilence(alert_id)
            return
        try:
            alert = self.store.get_alert(alert_id)
            if alert is not None and kind in ALERT_ACTIONS and ops.check(kind, alert):
                # refused by the rules before asking anything: through the operation, audited
                refused = (ops.acknowledge(alert) if kind == "ack"
                           else ops.resolve(alert, "(refused before a reason was asked)"))
        except Exception as exc:
            self.call_from_thread(self.notify, f"cannot read the store: {describe_error(exc)}",
                                  severity="error", markup=False)
            return
        self.call_from_thread(self._open_alert_dialog, kind, alert, refused)

    def _unsilence(self, alert_id: str) -> None:
        """End every silence covering the alert now (no dialog: nothing is lost by it)."""
        from wsmon.screens.dialogs import outcome_text

        try:
            alert = self.store.get_alert(alert_id)
            covering = [] if alert is None else [
                s for s in self.store.list_silences(active_at=self.clock.now())
                if s.matches(alert, self.clock.now())]
            outcomes = [self.operations.unsilence(s.silence_id, "ended from the dashboard")
                        for s in covering]
        except Exception as exc:  # noqa: BLE001 - said on screen
            self.call_from_thread(self.notify, f"cannot read the store: {describe_error(exc)}",
                                  severity="error", markup=False)
            return
        if not outcomes:
            self.call_from_thread(self.notify, "Unsilence: refused: no silence covers this alert",
                                  severity="warning", markup=False)
            return
        for outcome in outcomes:
            self.call_from_thread(self.notify, outcome_text(outcome, 60), markup=False,
                                  severity="information" if outcome.done else "warning")
        self.call_from_thread(self.refresh_now)

    def _open_alert_dialog(self, kind: str, alert: Alert | None, refused: Outcome | None) -> None:
        from wsmon.screens.dialogs import AckDialog, ResolveDialog, SilenceDialog

        if alert is None:
            self.notify("that alert is no longer in the store", severity="warning", markup=False)
            return
        if refused is not None:
            self.notify(strip_control(refused.message), title=f"{ACTIONS[kind].label}: refused",
                        severity="warning", markup=False)
            return
        dialog = {"ack": AckDialog, "resolve": ResolveDialog}.get(kind, SilenceDialog)(alert)
        self.push_screen(dialog, self._after_action)

    def _after_action(self, summary: str | None) -> None:
        if summary:
            self.notify(summary, markup=False)
            self.action_done_signal.publish(summary)
            self.refresh_now()


def run_dashboard(settings: Settings, engine_mode: str = "auto",
                  prepare: Callable[[Callable[[], None]], None] | None = None) -> int:
    """Open the store and run the dashboard; returns the exit code.

    ``auto``: run the engine in this process unless a live engine (role engine, fresh heartbeat)
    already serves this store, in which case attach to it (the header says which).
    ``attach``: never run an engine here. ``engine``: always run one here.

    ``prepare`` (the demo's seeding) runs in a background thread while the dashboard is already
    on screen; the engine starts once it has finished, so rows appear as they are written. It is
    given a callable that makes the dashboard read the store now (the first rows are in).
    """
    import click

    from wsmon.engine.store.from_settings import open_store_from_settings
    from wsmon.logging import configure_logging

    configure_logging(settings, "tui")
    try:
        store = open_store_from_settings(settings)
    except StoreError as exc:
        click.echo(f"wsmon: cannot open the store: {exc}", err=True)
        return EXIT_STORE
    try:
        start_engine, mode_text = decide_engine(settings, store, engine_mode, SystemClock().now())
    except StoreError as exc:
        click.echo(f"wsmon: cannot read monitors from the store: {exc}", err=True)
        store.close()
        return EXIT_STORE
    engine = None
    if start_engine and prepare is None:
        engine, problem = _start_engine(settings, store)
        if engine is not None:
            mode_text = f"engine in this process (pid {os.getpid()})"
        elif engine_mode == "engine":
            click.echo(f"wsmon: cannot start the engine: {problem}", err=True)
            store.close()
            return EXIT_USAGE
        else:
            mode_text = f"no engine: {problem}"
    app = WsmonApp(store, settings, engine_mode_text=mode_text)
    starter = None
    if start_engine and prepare is not None:
        starter = _DeferredEngine(app, settings, store, prepare)
        starter.start()
    restore_hangup = _close_on_hangup(app)
    try:
        result = app.run()
    finally:
        restore_hangup()
        if starter is not None:
            engine = starter.finish()
        if engine is not None:
            # the dashboard is gone at once; the engine's stop (its grace period) is said, not silent
            click.echo("wsmon: stopping the engine…", err=True)
            try:
                engine.stop(settings.runner.shutdown_grace_seconds)
            except Exception as exc:
                log.error("engine_stop_failed", error=str(exc))
        store.close()
    return int(result or app.return_code or 0)


def _close_on_hangup(app: WsmonApp) -> Callable[[], None]:
    """A closed SSH session (SIGHUP) closes the dashboard the way ``q`` does, so the engine
    stops and the caller cleans up, instead of the process dying where it stands. The terminal
    is gone by then: what is still written to it goes to /dev/null. Returns the undo."""
    import signal

    def on_hangup(signum: int, frame: Any) -> None:
        devnull = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):
            os.dup2(devnull, fd)
        os.close(devnull)
        log.warning("terminal_hung_up", detail="closing the dashboard")
        # a handler runs between two steps of the event loop: hand the exit to the loop
        threading.Thread(target=app.call_from_thread, args=(app.exit,), daemon=True).start()

    try:
        previous = signal.signal(signal.SIGHUP, on_hangup)
    except ValueError:  # not the main thread (in-process tests): nothing to undo
        return lambda: None
    return lambda: signal.signal(signal.SIGHUP, previous)


class _DeferredEngine(threading.Thread):
    """Runs ``prepare`` then starts the engine, while the dashboard is already on screen."""

    def __init__(self, app: WsmonApp, settings: Settings, store: Store,
                 prepare: Callable[[Callable[[], None]], None]) -> None:
        super().__init__(name="wsmon-engine-start", daemon=True)
        self._app = app
        self._settings = settings
        self._store = store
        self._prepare = prepare
        self._quitting = threading.Event()
        self._lock = threading.Lock()
        self.engine: Any = None
        app.engine_starting = True

    def run(self) -> None:
        problem = ""
        try:
            # refresh_now only sets an Event: safe from this thread
            self._prepare(self._app.refresh_now)
        except Exception as exc:  # said in the header; the dashboard still shows the store
            log.error("engine_prepare_failed", error=str(exc))
            problem = describe_error(exc)
        with self._lock:
            if self._quitting.is_set():
                return
            if not problem:
                self.engine, problem = _start_engine(self._settings, self._store)
        text = (f"engine in this process (pid {os.getpid()})" if self.engine is not None
                else f"no engine: {problem}")
        try:
            self._app.call_from_thread(self._started, text)
        except Exception:  # the dashboard already closed
            pass

    def _started(self, text: str) -> None:
        self._app.engine_starting = False
        self._app.engine_mode_text = text
        self._app.refresh_now()
        self._app.status_signal.publish(None)

    def finish(self) -> Any:
        """After the dashboard closed: no engine starts any more; returns the one that did."""
        self._quitting.set()
        with self._lock:
            return self.engine


def decide_engine(settings: Settings, store: Store, engine_mode: str,
                  now: datetime) -> tuple[bool, str]:
    """(run an engine in this process?, what the header says about it)."""
    if engine_mode == "attach":
        return False, "attach mode: no engine here"
    if engine_mode == "engine":
        return True, "engine in this process"
    stale_after = engine_stale_after(settings).total_seconds()
    live = live_engine(store.list_monitors(), now, stale_after)
    if live is not None:
        return False, f"attached to engine on {strip_control(live.host)} pid {live.pid}"
    return True, "engine in this process"


def _start_engine(settings: Settings, store: Store) -> tuple[Any, str]:
    from wsmon.engine.service import Engine

    try:
        engine = Engine(settings, store=store, clock=None)
        engine.start()
    except Exception as exc:
        log.error("engine_start_failed", error=str(exc))
        return None, describe_error(exc)
    return engine, ""
