"""Retry policy: full-jitter backoff, attempt limits and per-workset overrides, dead letter."""

from __future__ import annotations

import random
from datetime import datetime, timedelta, timezone

import pytest

from wsmon.config.settings import RetrySettings
from wsmon.engine.diagnostics import classify
from wsmon.engine.retry import RetryPolicy
from wsmon.core.models import Workset, WorksetState

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=timezone.utc)


def ws(attempts: int, *, max_retries: int | None = None, info: dict | None = None) -> Workset:
    return Workset(workset_id="w", bucket="b", prefix="p/w/", created_at=NOW, updated_at=NOW,
                   state_changed_at=NOW, attempts=attempts, max_retries=max_retries,
                   metadata={"info": info or {}})


def policy(seed: int = 1, **kw) -> RetryPolicy:
    return RetryPolicy(RetrySettings(**kw), rng=random.Random(seed))


def test_backoff_is_full_jitter_under_the_capped_exponential_ceiling() -> None:
    p = policy(base_seconds=60, cap_seconds=3600)
    for retry_number, ceiling in [(0, 60), (1, 120), (2, 240), (5, 1920), (6, 3600), (40, 3600)]:
        delays = [p.backoff(retry_number) for _ in range(400)]
        assert all(0 <= d <= ceiling for d in delays)
        # jitter spreads over the whole range instead of clustering at the ceiling
        assert min(delays) < ceiling * 0.1 and max(delays) > ceiling * 0.9


def test_backoff_is_reproducible_with_a_seeded_random() -> None:
    assert [policy(7).backoff(3) for _ in range(3)] == [policy(7).backoff(3) for _ in range(3)]
    first, second = policy(7), policy(7)
    assert [first.backoff(n) for n in range(5)] == [second.backoff(n) for n in range(5)]


def test_a_retryable_failure_waits_until_retry_after() -> None:
    decision = policy().decide(ws(1), "boom", NOW, retryable=True, error_code="WS-NET-001")
    assert decision.state is WorksetState.RETRYING and decision.will_retry
    assert decision.retry_after is not None
    assert NOW <= decision.retry_after <= NOW + timedelta(seconds=60)
    assert decision.retry_after == NOW + timedelta(seconds=decision.delay_seconds)
    assert "retry 1 of 3" in decision.reason and "WS-NET-001" in decision.reason


def test_retries_stop_after_max_retries_and_the_workset_is_dead_lettered() -> None:
    p = policy(max_retries=3)
    assert p.decide(ws(3), "x", NOW, retryable=True).will_retry
    last = p.decide(ws(4), "x", NOW, retryable=True)
    assert last.state is WorksetState.FAILED and last.dead_lettered
    assert last.retry_after is None
    assert "after 4 attempts" in last.reason and "max_retries 3" in last.reason


def test_a_permanent_failure_is_dead_lettered_at_once() -> None:
    decision = policy().decide(ws(1), "x", NOW, retryable=False, error_code="WS-CFG-001")
    assert decision.state is WorksetState.FAILED
    assert "not retryable" in decision.reason


@pytest.mark.parametrize(("workset", "expected"), [
    (ws(1, info={"max_retries": 0}), 0),
    (ws(1, info={"max_retries": "5"}), 5),
    (ws(1, info={"max_retries": "lots"}), 3),  # unreadable override: the config default
    (ws(1, max_retries=1, info={"max_retries": 5}), 1),  # the record wins over the file
])
def test_max_retries_can_be_overridden_per_workset(workset: Workset, expected: int) -> None:
    assert policy(max_retries=3).max_retries_for(workset) == expected


def test_daylily_info_max_retries_zero_means_the_first_failure_is_final() -> None:
    decision = policy().decide(ws(1, info={"max_retries": 0}), "x", NOW, retryable=True)
    assert decision.dead_lettered


def test_classification_decides_when_the_caller_does_not() -> None:
    transient = "botocore.exceptions.ReadTimeoutError: Read timeout on endpoint URL"
    diagnosis = classify(transient)
    decision = policy().decide(ws(1), transient, NOW)
    assert decision.retryable == diagnosis.retryable
    assert decision.error_code == diagnosis.code
    assert decision.will_retry is bool(diagnosis.retryable)


def test_a_missing_reference_is_dead_lettered_on_the_first_attempt() -> None:
    text = ("rule align failed\nMissingReferenceError: reference "
            "/fsx/data/genomic_data/organism_references/H_sapiens/hg38/GRCh38.fa not found")
    decision = policy().decide(ws(1), text, NOW)
    assert decision.dead_lettered and decision.error_code == "WS-DAT-022"
    assert "not retryable" in decision.reason
