"""Line charts of the local metrics history (textual-plotext), x axis as times before now.

Every series has its own marker symbol as well as its own colour, so the charts read on a
monochrome terminal and for colour-blind operators; the x axis is labelled "-6h … now" (hours, or
days for long ranges), never in fractional minutes."""

from __future__ import annotations

from datetime import datetime, timedelta

from textual_plotext import PlotextPlot

# plotext markers, one per series in order: shapes that stay apart when lines cross
SERIES_MARKERS = ["braille", "+", "x", "*", "o", "#"]
# tick spacings in hours, from fine to coarse; the first that gives at most MAX_TICKS is used
TICK_STEPS_HOURS = [1, 2, 3, 6, 12, 24, 48, 72, 168]
MAX_TICKS = 7


def time_ticks(span: timedelta) -> tuple[list[float], list[str]]:
    """Tick positions (hours before now, negative) and labels: '-6h', …, 'now'; days as '-2d'."""
    hours = max(1.0, span.total_seconds() / 3600)
    step = next((s for s in TICK_STEPS_HOURS if hours / s <= MAX_TICKS - 1), TICK_STEPS_HOURS[-1])
    ticks: list[float] = []
    labels: list[str] = []
    at = 0
    while at <= hours + 1e-9:
        ticks.append(-float(at))
        if at == 0:
            labels.append("now")
        elif step >= 24 and at % 24 == 0:
            labels.append(f"-{at // 24}d")
        else:
            labels.append(f"-{at}h")
        at += step
    return ticks[::-1], labels[::-1]


class HistoryChart(PlotextPlot):
    DEFAULT_CSS = """
    HistoryChart { height: 1fr; min-height: 6; }
    HistoryChart.empty { display: none; }
    """

    def __init__(self, title: str, **kwargs) -> None:
        super().__init__(**kwargs)
        self.chart_title = title
        self._series: dict[str, list[tuple[datetime, float]]] = {}
        self._now: datetime | None = None
        self._span = timedelta(hours=6)
        self.has_data = False

    def on_mount(self) -> None:
        self._draw()

    def set_series(self, series: dict[str, list[tuple[datetime, float]]], now: datetime,
                   span: timedelta | None = None) -> None:
        span = span or self._span
        if series == self._series and now == self._now and span == self._span:
            return
        self._series, self._now, self._span = series, now, span
        self._draw()

    def _draw(self) -> None:
        plt = self.plt
        plt.clear_data()
        plt.clear_figure()
        plt.title(self.chart_title)
        drawn = False
        for i, (label, points) in enumerate(self._series.items()):
            if not points or self._now is None:
                continue
            xs = [-(self._now - at).total_seconds() / 3600 for at, _ in points]
            ys = [value for _, value in points]
            plt.plot(xs, ys, label=label[:20], marker=SERIES_MARKERS[i % len(SERIES_MARKERS)])
            drawn = True
        if drawn:
            ticks, labels = time_ticks(self._span)
            plt.xticks(ticks, labels)
            plt.xlim(ticks[0], 0)
        self.has_data = drawn
        self.set_class(not drawn, "empty")
        self.refresh()
