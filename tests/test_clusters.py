"""Cluster registry against fake pcluster/sinfo/squeue scripts on a private PATH."""

from __future__ import annotations

import shutil
import stat
from datetime import datetime, timezone
from pathlib import Path

import pytest

from wsmon.config.settings import Settings
from wsmon.engine.clusters import ClusterRegistry, parse_sinfo_memory
from wsmon.core.models import Workset

NOW = datetime(2026, 3, 1, 12, 0, tzinfo=timezone.utc)


def script(bin_dir: Path, name: str, body: str) -> None:
    path = bin_dir / name
    path.write_text("#!/bin/sh\n" + body, encoding="utf-8")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)


def registry(tmp_path: Path, clock, bin_dir: Path | None = None, store=None, **clusters) -> ClusterRegistry:
    settings = Settings(state_dir=tmp_path / "state", clusters=clusters)
    path = str(bin_dir) if bin_dir else str(tmp_path / "empty-bin")
    return ClusterRegistry(settings, store, clock=clock, which=lambda n: shutil.which(n, path=path))


class RecordingStore:
    def __init__(self) -> None:
        self.written: list = []

    def put_cluster_status(self, status) -> None:
        self.written.append(status)


PCLUSTER = r'''
case "$1" in
  list-clusters)
    cat <<'EOF'
{"clusters": [
  {"clusterName": "prod-d", "clusterStatus": "CREATE_COMPLETE"},
  {"clusterName": "stopped", "clusterStatus": "UPDATE_COMPLETE"},
  {"clusterName": "new-one", "clusterStatus": "CREATE_IN_PROGRESS"},
  {"clusterName": "other-team", "clusterStatus": "CREATE_COMPLETE"}
]}
EOF
    ;;
  describe-cluster)
    case "$3" in
      prod-d) echo '{"clusterName":"prod-d","clusterStatus":"CREATE_COMPLETE","computeFleetStatus":"RUNNING","tags":[{"key":"team","value":"genomics"},{"key":"availability_zone","value":"us-west-2d"}]}' ;;
      stopped) echo '{"clusterName":"stopped","clusterStatus":"UPDATE_COMPLETE","computeFleetStatus":"STOPPED","tags":[{"key":"team","value":"genomics"}]}' ;;
      new-one) echo '{"clusterName":"new-one","clusterStatus":"CREATE_IN_PROGRESS","computeFleetStatus":"UNKNOWN","tags":[{"key":"team","value":"genomics"}]}' ;;
      other-team) echo '{"clusterName":"other-team","clusterStatus":"CREATE_COMPLETE","computeFleetStatus":"RUNNING","tags":[{"key":"team","value":"physics"}]}' ;;
    esac ;;
esac
'''


def test_static_clusters_come_from_config(tmp_path, clock) -> None:
    reg = registry(tmp_path, clock, static=[{"name": "a", "availability_zone": "us-west-2d",
                                             "max_vcpus": 96, "max_concurrent_worksets": 2}],
                   slurm_usage=False)
    (status,) = reg.refresh()
    assert (status.name, status.status, status.max_vcpus, status.max_concurrent_worksets) == ("a", "ready", 96, 2)
    assert status.availability_zone == "us-west-2d"


def test_missing_tools_are_a_status_not_an_exception(tmp_path, clock) -> None:
    reg = registry(tmp_path, clock, static=[{"name": "a"}], pcluster_discovery=True)
    assert [s.name for s in reg.refresh()] == ["a"]
    assert reg.tool_status == {"pcluster": "pcluster: not found", "slurm": "slurm: not found"}
    assert reg.snapshot([])[0].detail == "slurm: not found"


def test_pcluster_discovery_takes_only_ready_clusters_with_a_running_fleet(tmp_path, clock) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script(bin_dir, "pcluster", PCLUSTER)
    reg = registry(tmp_path, clock, bin_dir, pcluster_discovery=True, slurm_usage=False,
                   pcluster_tag_filter={"team": "genomics"},
                   static=[{"name": "prod-d", "max_vcpus": 512, "max_concurrent_worksets": 5}])
    by_name = {s.name: s for s in reg.refresh()}
    assert set(by_name) == {"prod-d", "stopped", "new-one"}  # other-team filtered out by tag
    prod = by_name["prod-d"]
    assert (prod.status, prod.source, prod.availability_zone) == ("ready", "pcluster", "us-west-2d")
    assert (prod.max_vcpus, prod.max_concurrent_worksets) == (512, 5)  # config overrides defaults
    assert by_name["stopped"].status == "unavailable"
    assert "fleet STOPPED" in by_name["stopped"].detail
    assert by_name["new-one"].status == "creating"
    assert reg.creating
    ready = [c.cluster_name for c in reg.capacities([]) if c.is_ready]
    assert ready == ["prod-d"]


def test_a_hanging_or_failing_pcluster_is_reported_and_static_clusters_still_work(tmp_path, clock) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script(bin_dir, "pcluster", "sleep 5\n")
    reg = registry(tmp_path, clock, bin_dir, pcluster_discovery=True, slurm_usage=False,
                   tool_timeout_seconds=0.3, static=[{"name": "a"}])
    assert [s.name for s in reg.refresh()] == ["a"]
    assert reg.tool_status["pcluster"] == "pcluster: no answer within 0.3s"
    script(bin_dir, "pcluster", "echo 'ExpiredToken: the security token expired' >&2\nexit 1\n")
    reg.refresh(force=True)
    assert reg.tool_status["pcluster"] == "pcluster: exit 1: ExpiredToken: the security token expired"


def test_slurm_usage_raises_the_local_clusters_usage(tmp_path, clock) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script(bin_dir, "sinfo", r'''
case "$*" in
  *%C*) echo "48/80/0/128" ;;
  *) printf 'node1 65536 1024\nnode1 65536 1024\nnode2 65536 N/A\n' ;;
esac
''')
    script(bin_dir, "squeue", "printf 'RUNNING\\nRUNNING\\nPENDING\\n'\n")
    store = RecordingStore()
    reg = registry(tmp_path, clock, bin_dir, store=store,
                   static=[{"name": "head", "max_vcpus": 128, "max_memory_gb": 128}])
    reg.refresh()
    assert reg.tool_status["slurm"] == "slurm: 48/128 CPUs allocated, 2 running, 1 pending jobs"
    running = Workset(workset_id="w", bucket="b", prefix="p/", state="in_progress", cluster_name="head",
                      estimate={"vcpus": 16, "memory_gb": 8}, created_at=NOW, updated_at=NOW,
                      state_changed_at=NOW)
    (cap,) = reg.capacities([running])
    assert cap.current_vcpus_used == 48  # Slurm sees more allocated than the estimate reserves
    assert cap.current_memory_gb_used == 63  # node1 used 64 GB - 1 GB free; node2 counts as free
    assert cap.active_worksets == 1
    assert [s.name for s in store.written] == ["head"]
    reg.capacities([running])
    assert len(store.written) == 1  # unchanged snapshots are not rewritten


def test_sinfo_memory_counts_each_node_once() -> None:
    total, used = parse_sinfo_memory("a 2048 1024\na 2048 1024\nb 1024 N/A\nbad line\n")
    assert (total, used) == (3.0, 1.0)


def test_refresh_is_rate_limited_by_the_interval(tmp_path, clock) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    counter = tmp_path / "calls"
    script(bin_dir, "pcluster", f'echo x >> "{counter}"\necho \'{{"clusters": []}}\'\n')
    reg = registry(tmp_path, clock, bin_dir, pcluster_discovery=True, slurm_usage=False,
                   refresh_interval_seconds=60)
    reg.refresh()
    reg.refresh()
    clock.advance(61)
    reg.refresh()
    assert counter.read_text().count("x") == 2


@pytest.mark.parametrize("command", [None, ["sleep", "5"]])
def test_cluster_creation_is_off_by_default_and_one_at_a_time(tmp_path, clock, command) -> None:
    reg = registry(tmp_path, clock, static=[{"name": "a"}], slurm_usage=False,
                   create_cluster_command=command)
    reg.refresh()
    started = reg.maybe_create_cluster("urgent work fits nowhere")
    try:
        assert started is (command is not None)
        assert reg.maybe_create_cluster("again") is False
        if command:
            assert reg.creating
            assert "(creating)" in [s.name for s in reg.refresh(force=True)]
    finally:
        if reg._creation is not None:
            reg._creation.kill()
            reg._creation.wait()
