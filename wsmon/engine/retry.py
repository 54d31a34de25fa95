"""Retry policy: a failure's text → retry later (with full-jitter backoff) or dead letter.

Classification is ``diagnostics.classify``: resource and transient errors retry, configuration,
data and permanent errors do not. Backoff is "full jitter" (AWS architecture blog): the delay
before retry number ``n`` (0-based) is ``uniform(0, min(cap, base * 2**n))``, so a burst of
failures does not come back as a burst. The earlier monitor retried after 1, 2 and 4 seconds,
which turned every throttling incident into three more.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from wsmon.core.models import Workset, WorksetState

if TYPE_CHECKING:
    from wsmon.config.settings import RetrySettings


@dataclass(frozen=True)
class RetryDecision:
    """What to do with a failed attempt."""

    state: WorksetState  # RETRYING or FAILED
    reason: str  # one line for the event and the dashboard
    error_code: str | None
    retryable: bool
    attempt: int  # attempts made so far (the failed one included)
    max_retries: int
    retry_after: datetime | None = None
    delay_seconds: float | None = None
    remediation: str | None = None
    category: str | None = None

    @property
    def will_retry(self) -> bool:
        return self.state is WorksetState.RETRYING

    @property
    def dead_lettered(self) -> bool:
        return self.state is WorksetState.FAILED


def _as_int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    try:
        number = int(value)
    except (TypeError, ValueError):
        return None
    return number if number >= 0 else None


class RetryPolicy:
    def __init__(self, settings: RetrySettings, rng: random.Random | None = None) -> None:
        self.base = settings.base_seconds
        self.cap = settings.cap_seconds
        self.default_max_retries = settings.max_retries
        # SystemRandom is fine for jitter but not reproducible; tests pass a seeded Random
        self._rng = rng or random.Random()

    def backoff(self, retry_number: int) -> float:
        """Delay before retry ``retry_number`` (0 for the first retry)."""
        ceiling = min(self.cap, self.base * (2 ** max(0, min(retry_number, 62))))
        return self._rng.uniform(0, ceiling)

    def max_retries_for(self, workset: Workset) -> int:
        """Per-workset override (``workset.max_retries``, then daylily_info.yaml), else config."""
        if workset.max_retries is not None and workset.max_retries >= 0:
            return workset.max_retries
        info = (workset.metadata or {}).get("info") or {}
        override = _as_int(info.get("max_retries")) if isinstance(info, dict) else None
        return self.default_max_retries if override is None else override

    def decide(self, workset: Workset, error_text: str, now: datetime, *,
               error_code: str | None = None, retryable: bool | None = None) -> RetryDecision:
        """Decide for a workset whose attempt number ``workset.attempts`` just failed.

        ``retryable``/``error_code`` override the classification when the caller knows better
        (e.g. a step killed because it hung past its timeout is retryable whatever it printed).
        """
        from wsmon.engine.diagnostics import classify

        diagnosis = classify(error_text or "")
        code = error_code or getattr(diagnosis, "code", None)
        can_retry = bool(getattr(diagnosis, "retryable", False)) if retryable is None else retryable
        category = getattr(diagnosis, "category", None)
        category = getattr(category, "value", category)
        remediation = getattr(diagnosis, "remediation", None)
        attempt = max(1, workset.attempts)
        limit = self.max_retries_for(workset)
        retries_used = attempt - 1
        label = f"{code}" if code else "unclassified error"
        if not can_retry:
            return RetryDecision(
                WorksetState.FAILED, f"failed: {label} is not retryable (attempt {attempt})",
                code, False, attempt, limit, remediation=remediation, category=category)
        if retries_used >= limit:
            return RetryDecision(
                WorksetState.FAILED,
                f"failed: {label} after {attempt} attempt{'s' if attempt != 1 else ''} "
                f"(max_retries {limit} used up)",
                code, True, attempt, limit, remediation=remediation, category=category)
        delay = self.backoff(retries_used)
        return RetryDecision(
            WorksetState.RETRYING,
            f"retrying: {label}, retry {retries_used + 1} of {limit} in {delay:.0f}s",
            code, True, attempt, limit, retry_after=now + timedelta(seconds=delay),
            delay_seconds=delay, remediation=remediation, category=category)
