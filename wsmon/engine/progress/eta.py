"""ETA from the recent rate of finished steps.

Every time the number of steps done changes, the engine records (time seen, steps done). The
reference record is the last one from before the window (default 30 minutes), or the first one
when the run is younger than that, or the one before the latest when nothing finished inside the
window (a slow pipeline). The rate is the steps finished since the reference divided by the time
from the reference to *now*, so a run that stops making progress sees its rate fall and its ETA
grow instead of staying frozen. The ETA is the steps remaining divided by that rate. With no
total, or fewer than two records, there is no ETA ("unknown"), never a made-up figure.
"""

from __future__ import annotations

from collections import deque
from datetime import datetime, timedelta

MAX_SAMPLES = 512


class RateEstimator:
    def __init__(self, window: timedelta = timedelta(minutes=30)) -> None:
        self.window = window
        self._samples: deque[tuple[datetime, int]] = deque(maxlen=MAX_SAMPLES)

    def record(self, at: datetime, done: int) -> None:
        if self._samples and self._samples[-1][1] == done:
            return
        if self._samples and done < self._samples[-1][1]:
            self._samples.clear()  # a new run restarted the count
        self._samples.append((at, done))

    @property
    def last_change(self) -> datetime | None:
        return self._samples[-1][0] if self._samples else None

    def rate_per_hour(self, now: datetime) -> float | None:
        if len(self._samples) < 2:
            return None
        latest_done = self._samples[-1][1]
        ref_at, ref_done = self._samples[0]
        for at, done in self._samples:
            if at >= now - self.window:
                break
            ref_at, ref_done = at, done
        if ref_done == latest_done:
            ref_at, ref_done = self._samples[-2]
        elapsed = (now - ref_at).total_seconds()
        steps = latest_done - ref_done
        if elapsed <= 0 or steps <= 0:
            return None
        return steps * 3600.0 / elapsed

    def eta(self, now: datetime, done: int, total: int | None) -> datetime | None:
        if not total or done >= total:
            return None
        rate = self.rate_per_hour(now)
        if not rate:
            return None
        return now + timedelta(hours=(total - done) / rate)
