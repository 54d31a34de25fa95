"""Line charts of the local metrics history (textual-plotext), x axis in minutes before now."""

from __future__ import annotations

from datetime import datetime

from textual_plotext import PlotextPlot


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
        self.has_data = False

    def on_mount(self) -> None:
        self._draw()

    def set_series(self, series: dict[str, list[tuple[datetime, float]]], now: datetime) -> None:
        if series == self._series and now == self._now:
            return
        self._series, self._now = series, now
        self._draw()

    def _draw(self) -> None:
        plt = self.plt
        plt.clear_data()
        plt.clear_figure()
        plt.title(self.chart_title)
        plt.xlabel("minutes ago")
        drawn = False
        for label, points in self._series.items():
            if not points or self._now is None:
                continue
            xs = [-(self._now - at).total_seconds() / 60 for at, _ in points]
            ys = [value for _, value in points]
            plt.plot(xs, ys, label=label[:20], marker="braille")
            drawn = True
        self.has_data = drawn
        self.set_class(not drawn, "empty")
        self.refresh()
