"""Scheduler: ranking, placement, backfill and reasons, plus a property test that random mixes
of clusters and worksets never over-commit vCPUs, memory, slots, quotas or the global limit."""

from __future__ import annotations

from collections import Counter
from datetime import datetime, timedelta, timezone

from hypothesis import given, settings
from hypothesis import strategies as st

from wsmon.engine.scheduler import (
    ClusterCapacity,
    RunningWork,
    SchedulingPolicy,
    WorksetRequirements,
    placements,
    schedule,
)
from wsmon.core.models import ClusterStatus, Priority, Workset

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=timezone.utc)


def req(wid: str, priority: str = "normal", *, vcpus: float = 8, mem: float = 16, cost: float = 10,
        waited_min: float = 0, az: str | None = None, customer: str | None = None,
        hours: float | None = None, pinned: str | None = None) -> WorksetRequirements:
    return WorksetRequirements(
        workset_id=wid, priority=Priority(priority), customer_id=customer, vcpus=vcpus,
        memory_gb=mem, estimated_cost_usd=cost, estimated_duration_hours=hours,
        preferred_availability_zone=az, cluster_name=pinned,
        waiting_since=NOW - timedelta(minutes=waited_min))


def cap(name: str, *, az: str | None = "us-west-2d", vcpus: int = 64, used: float = 0,
        mem: float = 256, mem_used: float = 0, slots: int = 3, active: int = 0,
        cost: float = 0.05, status: str = "ready") -> ClusterCapacity:
    return ClusterCapacity(name, az, vcpus, used, mem, mem_used, active, slots, cost, status)


def order(decisions) -> list[str]:
    return [d.workset_id for d in decisions]


def placed(decisions) -> dict[str, str]:
    return {d.workset_id: d.cluster_name for d in placements(decisions)}


def test_urgent_runs_before_normal_before_low_when_one_slot_is_free() -> None:
    decisions = schedule([req("low", "low"), req("normal"), req("urgent", "urgent")],
                         [cap("a", slots=1)], now=NOW)
    assert order(decisions) == ["urgent", "normal", "low"]
    assert placed(decisions) == {"urgent": "a"}
    assert decisions[1].reason == "waiting: a full 1/1; next in line on a"
    assert decisions[2].reason == "waiting: a full 1/1"


def test_a_low_workset_waiting_past_max_age_outranks_newer_normal_work_but_not_urgent() -> None:
    policy = SchedulingPolicy(max_age=timedelta(minutes=240))
    decisions = schedule(
        [req("new-normal", "normal"), req("old-low", "low", waited_min=241),
         req("new-urgent", "urgent")],
        [cap("a", slots=1)], policy=policy, now=NOW)
    assert order(decisions) == ["new-urgent", "old-low", "new-normal"]


def test_a_normal_workset_waiting_past_max_age_outranks_newer_urgent_work() -> None:
    policy = SchedulingPolicy(max_age=timedelta(minutes=60))
    decisions = schedule([req("urgent", "urgent", waited_min=5), req("normal", waited_min=61)],
                         [cap("a", slots=1)], policy=policy, now=NOW)
    assert placed(decisions) == {"normal": "a"}


def test_within_a_priority_the_cheaper_workset_goes_first() -> None:
    decisions = schedule([req("dear", cost=90, waited_min=30), req("cheap", cost=5)],
                         [cap("a", slots=1)], now=NOW)
    assert order(decisions) == ["cheap", "dear"]


def test_reason_names_every_cluster_that_could_not_take_the_workset() -> None:
    decisions = schedule(
        [req("ws", az="us-west-2d")],
        [cap("cluster-a", slots=3, active=3), cap("cluster-b", az="us-west-2c")],
        policy=SchedulingPolicy(az_preference="hard"), now=NOW)
    assert decisions[0].reason == (
        "waiting: cluster-a full 3/3, cluster-b in us-west-2c, needs us-west-2d; next in line on cluster-a")
    assert not decisions[0].placed


def test_vcpus_and_memory_must_fit_and_the_reason_says_how_much_is_free() -> None:
    decisions = schedule(
        [req("big", vcpus=32, mem=16), req("hungry", vcpus=2, mem=200)],
        [cap("a", vcpus=64, used=40, mem=256, mem_used=100)], now=NOW)
    by_id = {d.workset_id: d for d in decisions}
    assert "a 24/64 vCPUs free, needs 32" in by_id["big"].reason
    assert "a 156/256 GB free, needs 200 GB" in by_id["hungry"].reason
    assert placed(decisions) == {}


def test_soft_az_preference_prefers_the_zone_but_uses_another_when_it_is_full() -> None:
    clusters = [cap("west-c", az="us-west-2c", cost=0.01), cap("west-d", az="us-west-2d", slots=1)]
    decisions = schedule([req("first", az="us-west-2d", cost=1), req("second", az="us-west-2d", cost=2)],
                         clusters, now=NOW)
    assert placed(decisions) == {"first": "west-d", "second": "west-c"}
    assert "preferred us-west-2d had no room" in decisions[1].reason


def test_hard_az_preference_never_places_outside_the_zone() -> None:
    decisions = schedule([req("ws", az="us-west-2d")], [cap("west-c", az="us-west-2c")],
                         policy=SchedulingPolicy(az_preference="hard"), now=NOW)
    assert not decisions[0].placed
    assert decisions[0].unschedulable
    assert "west-c in us-west-2c, needs us-west-2d" in decisions[0].reason


def test_default_az_applies_to_worksets_that_state_none(clock) -> None:
    ws = Workset(workset_id="w", bucket="b", prefix="p/w/", created_at=NOW, updated_at=NOW,
                 state_changed_at=NOW, estimate={"vcpus": 4, "memory_gb": 8, "cost_usd": 1.0})
    decisions = schedule([ws], [cap("c", az="us-west-2c"), cap("d", az="us-west-2d", cost=9)],
                         now=NOW, default_az="us-west-2d")
    assert placed(decisions) == {"w": "d"}


def test_customer_quota_holds_and_other_customers_still_run() -> None:
    policy = SchedulingPolicy(customer_quotas={"acme": 2})
    decisions = schedule(
        [req("acme-1", customer="acme"), req("acme-2", customer="acme"), req("other", customer="zed")],
        [cap("a", vcpus=1000, mem=4000, slots=10)], {"acme": 1}, policy=policy, now=NOW)
    assert set(placed(decisions)) == {"acme-1", "other"} or set(placed(decisions)) == {"acme-2", "other"}
    waiting = [d for d in decisions if not d.placed][0]
    assert waiting.reason == "waiting: customer acme quota 2/2 running"


def test_global_limit_counts_what_is_already_running() -> None:
    decisions = schedule([req("a"), req("b"), req("c")], [cap("x", vcpus=1000, mem=9999, slots=10)],
                         {None: 8}, policy=SchedulingPolicy(max_concurrent_worksets=9), now=NOW)
    assert len(placed(decisions)) == 1
    assert decisions[-1].reason == "waiting: global limit 9/9 running"


def test_a_workset_too_big_for_every_cluster_is_unschedulable_and_blocks_nobody() -> None:
    decisions = schedule([req("huge", "urgent", vcpus=5000), req("small")], [cap("a", vcpus=64)],
                         policy=SchedulingPolicy(backfill=False), now=NOW)
    huge = decisions[0]
    assert huge.unschedulable and "cannot run on any cluster as configured" in huge.reason
    assert "a has 64 vCPUs, needs 5000" in huge.reason
    assert placed(decisions) == {"small": "a"}


def test_pinned_cluster_is_the_only_place_a_workset_runs() -> None:
    decisions = schedule([req("pinned", pinned="b", cost=1), req("free", cost=2)],
                         [cap("a", cost=0.01), cap("b", cost=1.0)], now=NOW)
    assert placed(decisions) == {"pinned": "b", "free": "a"}
    unknown = schedule([req("p", pinned="gone")], [cap("a")], now=NOW)[0]
    assert unknown.unschedulable and "pinned cluster gone is not known" in unknown.reason


def test_unavailable_clusters_take_nothing() -> None:
    decisions = schedule([req("w")], [cap("a", status="unavailable")], now=NOW)
    assert not decisions[0].placed
    assert "a unavailable" in decisions[0].reason


def test_backfill_uses_other_clusters_and_short_work_on_the_reserved_one() -> None:
    # "big" needs all of cluster a, which is half used until a running workset ends in 2h.
    clusters = [cap("a", vcpus=64, used=32, slots=3, active=1), cap("b", vcpus=8, slots=3)]
    running = [RunningWork("a", vcpus=32, memory_gb=0, expected_end=NOW + timedelta(hours=2))]
    decisions = schedule(
        [req("big", "urgent", vcpus=64, mem=1),
         req("long", vcpus=8, mem=1, hours=5, cost=1),
         req("short", vcpus=8, mem=1, hours=1, cost=2),
         req("other", vcpus=16, mem=1, hours=9, cost=3)],
        clusters, running=running, now=NOW)
    by_id = {d.workset_id: d for d in decisions}
    assert not by_id["big"].placed and by_id["big"].reason.endswith("next in line on a")
    assert by_id["long"].cluster_name == "b"  # would still hold a's vCPUs at 2h: not on a
    assert by_id["short"].cluster_name == "a" and by_id["short"].backfilled
    assert "backfilled ahead of big" in by_id["short"].reason
    assert not by_id["other"].placed
    assert "a held for big" in by_id["other"].reason


def test_without_backfill_nothing_passes_a_blocked_workset() -> None:
    decisions = schedule([req("big", "urgent", vcpus=64), req("small", vcpus=1)],
                         [cap("a", vcpus=64, used=8, active=1)],
                         policy=SchedulingPolicy(backfill=False), now=NOW)
    assert placed(decisions) == {}
    assert "behind big" in decisions[1].reason


def test_cluster_status_from_the_store_is_accepted_directly() -> None:
    status = ClusterStatus(name="s", availability_zone="us-west-2d", max_vcpus=8, vcpus_used=0,
                           max_memory_gb=32, max_concurrent_worksets=1, updated_at=NOW)
    assert placed(schedule([req("w", vcpus=8, mem=32)], [status], now=NOW)) == {"w": "s"}


# -- property: never over-commit ------------------------------------------------------------

clusters_st = st.lists(
    st.builds(
        lambda i, az, vcpus, used, mem, mem_used, slots, active, status: cap(
            f"c{i}", az=az, vcpus=vcpus, used=min(used, vcpus), mem=mem, mem_used=min(mem_used, mem),
            slots=slots, active=min(active, slots), status=status),
        st.integers(0, 10_000), st.sampled_from(["us-west-2c", "us-west-2d", None]),
        st.integers(0, 128), st.integers(0, 128), st.floats(0, 512), st.floats(0, 512),
        st.integers(0, 4), st.integers(0, 4), st.sampled_from(["ready", "ready", "unavailable"])),
    max_size=6, unique_by=lambda c: c.cluster_name)

worksets_st = st.lists(
    st.builds(
        lambda i, prio, vcpus, mem, cost, waited, az, cust, hours: req(
            f"w{i}", prio, vcpus=vcpus, mem=mem, cost=cost, waited_min=waited, az=az,
            customer=cust, hours=hours),
        st.integers(0, 100_000), st.sampled_from(["urgent", "normal", "low"]),
        st.integers(0, 96), st.floats(0, 300), st.floats(0, 100), st.floats(0, 2000),
        st.sampled_from(["us-west-2c", "us-west-2d", None]),
        st.sampled_from(["acme", "zed", None]), st.one_of(st.none(), st.floats(0, 10))),
    max_size=40, unique_by=lambda r: r.workset_id)


@settings(max_examples=300, deadline=None)
@given(clusters=clusters_st, worksets=worksets_st,
       quotas=st.dictionaries(st.sampled_from(["acme", "zed"]), st.integers(0, 3)),
       running=st.dictionaries(st.sampled_from(["acme", "zed", None]), st.integers(0, 3)),
       limit=st.integers(0, 12), hard=st.booleans(), backfill=st.booleans())
def test_random_mixes_never_over_commit(clusters, worksets, quotas, running, limit, hard, backfill) -> None:
    policy = SchedulingPolicy(max_concurrent_worksets=limit, customer_quotas=quotas,
                              az_preference="hard" if hard else "soft", backfill=backfill)
    decisions = schedule(worksets, clusters, running, policy=policy, now=NOW)
    assert sorted(order(decisions)) == sorted(w.workset_id for w in worksets)
    by_id = {w.workset_id: w for w in worksets}
    chosen = placements(decisions)
    for c in clusters:
        mine = [by_id[d.workset_id] for d in chosen if d.cluster_name == c.cluster_name]
        if not mine:
            continue
        assert c.status == "ready"
        assert c.active_worksets + len(mine) <= c.max_concurrent_worksets
        assert c.current_vcpus_used + sum(w.vcpus for w in mine) <= c.max_vcpus
        assert c.current_memory_gb_used + sum(w.memory_gb for w in mine) <= c.max_memory_gb + 1e-9
        if hard:
            assert all(w.preferred_availability_zone in (None, c.availability_zone) for w in mine)
    assert sum(running.values()) + len(chosen) <= max(limit, sum(running.values()))
    started = Counter(by_id[d.workset_id].customer_id for d in chosen)
    for customer, quota in quotas.items():
        if started[customer]:
            assert running.get(customer, 0) + started[customer] <= quota
    assert all(d.reason for d in decisions)
