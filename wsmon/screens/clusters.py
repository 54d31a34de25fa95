"""Clusters: running/slots, vCPU and memory use, cost per hour, AZ, source; this month's usage;
history charts (queue depth, utilisation, throughput and error rate) over 6 h, 2 d or 14 d."""

from __future__ import annotations

from typing import Any

from textual.app import ComposeResult
from rich.text import Text
from textual.binding import Binding
from textual.containers import Horizontal
from textual.widgets import Static

from wsmon.core.models import ClusterStatus
from wsmon.screens.base import WsmonScreen
from wsmon.engine.progress.usage import UsageRow
from wsmon.screens.snapshot import CHART_RANGES, Snapshot
from wsmon.core.textsafe import strip_control
from wsmon.widgets.charts import HistoryChart
from wsmon.widgets.difftable import ColumnLayout, ColumnSpec, DiffTable, text_cell
from wsmon.widgets.format import age_since, bar
from wsmon.widgets.styles import role_style

# Roomy from ~130 columns; compact (every column still shown) at 80, where the vCPU and memory
# bars give way to their percentages and the charts below show the history.
CLUSTER_COLUMNS = [
    ColumnSpec("name", "cluster", 16, narrow=10, grow=1, max=30),
    ColumnSpec("status", "status", 11, narrow=8),
    ColumnSpec("running", "run/slots", 9, narrow=5, short="run"),
    ColumnSpec("vcpu", "vCPU", 13, narrow=4, grow=1, max=25),
    ColumnSpec("memory", "memory", 13, narrow=4, short="mem", grow=1, max=25),
    ColumnSpec("cost", "$/h", 7, narrow=5),
    ColumnSpec("az", "AZ", 10),
    ColumnSpec("source", "source", 8, narrow=7),
    ColumnSpec("seen", "seen", 4),
    ColumnSpec("detail", "detail", 30, narrow=9, grow=3),
]
MIN_BAR_COLUMN = 8  # narrower than this: the percentage alone
STATUS_ROLES = {"ready": "success", "creating": "primary", "unavailable": "error", "unknown": "warning"}


def depth_has(series: dict[str, list[Any]]) -> bool:
    return any(points for points in series.values())


def usage(used: float, total: float, column_width: int) -> str:
    """A bar with its percentage when the column has room for one, else the percentage."""
    if column_width >= MIN_BAR_COLUMN:
        return bar(used, total, column_width - 6)
    if total <= 0:
        return "-"
    return f"{round(max(0.0, min(1.0, used / total)) * 100)}%"


def month_usage_text(rows: list[UsageRow]) -> str:
    """'this month: 12 worksets run, 1,234.5 vCPU-h, $61.70 actual (estimated $70.00), 2 failed ·
    prod $40.00 · spot $21.70' (wsmon usage --by cluster for the table)."""
    if not rows or rows[-1].worksets == 0:
        return "this month: no worksets run yet"
    total = rows[-1]
    text = (f"this month: {total.worksets} worksets run, {total.vcpu_hours:,.1f} vCPU-h, "
            f"${total.actual_cost_usd:,.2f} actual (estimated ${total.estimated_cost_usd:,.2f})")
    if total.failures:
        text += f", {total.failures} failed"
    if total.unmeasured:
        text += f", {total.unmeasured} not measured"
    per_cluster = " · ".join(f"{strip_control(r.group)} ${r.actual_cost_usd:,.2f}" for r in rows[:-1][:6])
    return f"{text} · {per_cluster}" if per_cluster else text


def cluster_plain(c: ClusterStatus, now, bar_column: int = 13) -> tuple[str, ...]:
    cost = c.cost_per_vcpu_hour * c.vcpus_used
    return (strip_control(c.name), strip_control(c.status),
            f"{c.active_worksets}/{c.max_concurrent_worksets}",
            usage(c.vcpus_used, c.max_vcpus, bar_column),
            usage(c.memory_gb_used, c.max_memory_gb, bar_column),
            f"{cost:.2f}", strip_control(c.availability_zone or "-"), strip_control(c.source),
            age_since(c.updated_at, now), strip_control(c.detail or ""))


class ClustersScreen(WsmonScreen):
    SCREEN_NAME = "clusters"
    DEFAULT_CSS = """
    ClustersScreen #clusters-table { height: auto; max-height: 50%; }
    ClustersScreen #charts { height: 1fr; min-height: 8; }
    ClustersScreen #no-charts { height: auto; padding: 1 1; }
    ClustersScreen #month-usage { height: auto; padding: 0 1; }
    """
    BINDINGS = [
        Binding("t", "chart_range", "Range", id="chart-range",
                tooltip="Charts over 6 hours (minutes), 2 days (hourly) or 14 days (daily)"),
    ]

    def compose(self) -> ComposeResult:
        yield from self.compose_header()
        yield DiffTable(id="clusters-table")
        yield Static(id="month-usage")
        yield Static(Text("no metrics history in the last hours yet (the engine samples "
                          "every minute)", style="dim"), id="no-charts")
        with Horizontal(id="charts"):
            yield HistoryChart("queue depth (waiting + running)", id="depth-chart")
            yield HistoryChart("utilisation %", id="util-chart")
            yield HistoryChart("done/h, error %", id="outcome-chart")
        yield from self.compose_footer()

    @property
    def table(self) -> DiffTable:
        return self.query_one("#clusters-table", DiffTable)

    def on_mount(self) -> None:
        self.wire_table(self.table, CLUSTER_COLUMNS)

    def on_screen_resume(self) -> None:
        if not self.wsmon.want_charts:
            self.wsmon.want_charts = True
            self.wsmon.refresh_now()
        self.rebuild()

    def on_screen_suspend(self) -> None:
        self.wsmon.want_charts = False

    def _on_snapshot(self, _: Snapshot) -> None:
        self.rebuild()

    def _columns_fitted(self, _: ColumnLayout) -> None:
        self.rebuild(restyle=True)

    def rebuild(self, restyle: bool = False) -> None:
        app = self.wsmon
        now = app.clock.now()
        clusters = {c.name: c for c in app.clusters}
        table = self.table
        if restyle:
            for key in list(table._plain):
                table._plain[key] = (None,) * len(CLUSTER_COLUMNS)
        upserts: dict[str, list[Any]] = {}
        plain: dict[str, tuple[Any, ...]] = {}
        bar_column = min(table.width_of("vcpu") or 13, table.width_of("memory") or 13)
        for key, c in clusters.items():
            p = cluster_plain(c, now, bar_column)
            if table._plain.get(key) == p:
                continue
            status_style = role_style(app, STATUS_ROLES.get(c.status, "warning"))
            upserts[key] = [text_cell(p[0], "bold"), text_cell(p[1], status_style),
                            *[text_cell(v) for v in p[2:]]]
            plain[key] = p
        removals = [k for k in table._plain if k not in clusters]
        table.apply_diff(upserts, removals, plain, order=lambda k: k, reorder=bool(upserts))
        charts = app.charts
        depth = {k: v for k, v in charts.items() if k == "queue depth"}
        util = {k[5:]: v for k, v in charts.items() if k.startswith("util ")}
        outcomes = {k: v for k, v in charts.items() if k in ("done per hour", "error rate %")}
        span = CHART_RANGES[app.reader.chart_range][1]
        self.query_one("#depth-chart", HistoryChart).set_series(depth, now, span)
        self.query_one("#util-chart", HistoryChart).set_series(util, now, span)
        self.query_one("#outcome-chart", HistoryChart).set_series(outcomes, now, span)
        self.query_one("#no-charts", Static).display = not (depth_has(depth) or depth_has(util)
                                                            or depth_has(outcomes))
        self.query_one("#month-usage", Static).update(Text(month_usage_text(app.reader.month_usage)))

    def action_chart_range(self) -> None:
        reader = self.wsmon.reader
        reader.set_chart_range(reader.chart_range + 1)
        self.notify(f"charts: last {CHART_RANGES[reader.chart_range][0]}")
        self.wsmon.refresh_now()
