"""The status header every screen shows, and the banner that says the store is failing."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.text import Text
from textual.widgets import Static

from wsmon.core.textsafe import strip_control
from wsmon.widgets.format import STATE_KEYS, STATE_SYMBOLS, age_since
from wsmon.widgets.styles import role_style

if TYPE_CHECKING:
    from wsmon.app import WsmonApp


class StatusHeader(Static):
    """Screen name, engine status, last refresh, paused marker, counts per state, the store."""

    DEFAULT_CSS = """
    StatusHeader { height: 3; background: $panel; color: $foreground; padding: 0 1;
        text-wrap: nowrap; text-overflow: ellipsis; }
    """

    def __init__(self, screen_title: str, **kwargs) -> None:
        super().__init__(**kwargs)
        self.screen_title = screen_title

    def on_mount(self) -> None:
        app: WsmonApp = self.app  # type: ignore[assignment]
        app.status_signal.subscribe(self, self._on_status, immediate=True)
        self._shown: Text | None = None
        self._on_status(None)

    def _on_status(self, _: object) -> None:
        status = self.render_status()
        if status != self._shown:
            self._shown = status
            # the height is fixed (CSS), so new text never needs the screen laid out again
            self.update(status, layout=False)

    def render_status(self) -> Text:
        app: WsmonApp = self.app  # type: ignore[assignment]
        wide = self.size.width >= 110 or self.size.width == 0
        line = Text()
        line.append("wsmon ", style=role_style(app, "primary", bold=True))
        line.append(self.screen_title, style="bold")
        # markers first, so a narrow terminal never cuts them off
        if app.paused:
            line.append(" ")
            line.append("⏸ PAUSED", style=role_style(app, "warning", bold=True, reverse=True))
        if app.read_only:
            line.append(" ")
            line.append("READ-ONLY", style=role_style(app, "accent", bold=True, reverse=True))
        engine = app.engine_status
        if engine.kind == "none" and app.engine_starting:
            # this process is still preparing the engine it runs: not news, not an error
            line.append(" │ engine ")
            line.append("◌ starting…", style=role_style(app, "warning"))
        elif engine.kind == "starting":
            line.append(" │ starting…", style=role_style(app, "warning"))
        else:
            # every engine stale means nothing polls, schedules or alerts anywhere: loud
            role = {"alive": "success", "stale": "error", "none": "error"}
            symbol = {"alive": "●", "stale": "✗", "none": "✗"}.get(engine.kind, "?")
            line.append(" │ engine ")
            line.append(f"{symbol} {engine.text}",
                        style=role_style(app, role.get(engine.kind, "foreground"),
                                         bold=engine.kind == "stale"))
        if app.paused:
            at = app.paused_at or app.last_refresh_at
            line.append(f" │ paused at {at.strftime('%H:%M:%S') if at else '-'}")
        elif app.last_refresh_at is not None:
            line.append(f" │ {app.last_refresh_at.strftime('%H:%M:%S')}")
        counts = Text()
        stats = app.stats
        if stats is None:
            # no snapshot yet: zero counts would be a claim about the store
            counts.append("reading the store…", style="dim")
        for state in STATE_KEYS if stats is not None else ():
            n = stats.total(state)
            label = f"{STATE_SYMBOLS[state]} {state.value} {n}" if wide else f"{STATE_SYMBOLS[state]} {n}"
            counts.append(label, style="dim" if n == 0 else "")
            counts.append("  ")
        if stats is not None:
            counts.append(f"total {stats.total()}", style="bold")
        firing = app.firing_count
        if firing:
            counts.append("  ")
            counts.append(f"🔔 {firing} firing", style=role_style(app, "error", bold=True))
            top = app.most_severe_firing()
            if top is not None:
                # what is firing, not only how many: the most severe, the newest among equals
                counts.append(f": {strip_control(top.summary)}",
                              style=role_style(app, "error"))
        store = Text()
        store.append("store ", style="dim")
        store.append(strip_control(app.store_url))
        if app.engine_mode_text:
            store.append(f" │ {strip_control(app.engine_mode_text)}", style="dim")
        return Text("\n").join([line, counts, store])

    def on_resize(self) -> None:
        self._shown = None
        self._on_status(None)


class StoreBanner(Static):
    """Shown while the store is failing; the screens keep the last data they had."""

    DEFAULT_CSS = """
    StoreBanner { height: auto; background: $error; color: $text; padding: 0 1; display: none; }
    StoreBanner.failing { display: block; }
    """

    def on_mount(self) -> None:
        app: WsmonApp = self.app  # type: ignore[assignment]
        app.status_signal.subscribe(self, self._on_status, immediate=True)
        self._on_status(None)

    def _on_status(self, _: object) -> None:
        app: WsmonApp = self.app  # type: ignore[assignment]
        error = app.store_error
        self.set_class(error is not None, "failing")
        if error is None:
            return
        since = (f"showing data from {app.last_refresh_at.strftime('%H:%M:%S')}"
                 if app.last_refresh_at else "no data yet")
        ago = age_since(app.store_error_since, app.clock.now()) if app.store_error_since else ""
        self.update(Text(f"✗ store unavailable for {ago}: {strip_control(error)}; {since}; "
                         f"retrying every {app.refresh_interval:g}s", no_wrap=False))
