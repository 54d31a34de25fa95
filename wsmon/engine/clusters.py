"""Cluster registry: which clusters exist, whether they are ready, and how full they are.

Sources: static clusters from config; AWS ParallelCluster clusters found with the ``pcluster`` CLI
(``list-clusters`` then ``describe-cluster``; only CREATE/UPDATE_COMPLETE with a RUNNING compute
fleet take work); live Slurm usage from ``sinfo``/``squeue`` when the engine runs on a head node.
A missing or failing tool becomes a status line ("slurm: not found") for the dashboard, never an
exception: the engine keeps scheduling on what it knows.

Every external call is an argv list with a timeout. Snapshots go to the store
(``put_cluster_status``) so a dashboard on another host sees the same picture.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import structlog

from wsmon.core.clock import Clock, SystemClock
from wsmon.engine.scheduler import ClusterCapacity
from wsmon.core.models import ClusterStatus, Workset, WorksetState
from wsmon.core.textsafe import strip_control, truncate

if TYPE_CHECKING:
    from wsmon.config.settings import ClusterConfig, Settings
    from wsmon.engine.store import Store

log = structlog.get_logger(__name__)

PCLUSTER_READY = frozenset({"CREATE_COMPLETE", "UPDATE_COMPLETE"})
PCLUSTER_CREATING = frozenset({"CREATE_IN_PROGRESS"})
FLEET_READY = frozenset({"RUNNING", "ENABLED"})
AZ_TAG_KEYS = ("availability_zone", "availability-zone", "AvailabilityZone", "wsmon:availability_zone")
CREATE_LEASE = "cluster-create"


@dataclass(frozen=True)
class ToolResult:
    ok: bool
    stdout: str = ""
    detail: str = ""  # why it failed, one line for the dashboard


ToolRunner = Callable[[Sequence[str], float], ToolResult]


def run_tool(argv: Sequence[str], timeout: float) -> ToolResult:
    """Run ``argv`` (never through a shell); every failure is a ToolResult, never an exception."""
    name = os.path.basename(argv[0])
    try:
        proc = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout,
                              check=False, stdin=subprocess.DEVNULL)
    except FileNotFoundError:
        return ToolResult(False, detail=f"{name}: not found")
    except subprocess.TimeoutExpired:
        return ToolResult(False, detail=f"{name}: no answer within {timeout:g}s")
    except OSError as exc:
        return ToolResult(False, detail=f"{name}: {exc.strerror or exc}")
    if proc.returncode != 0:
        lines = (proc.stderr or proc.stdout or "").strip().splitlines()
        err = strip_control(lines[-1]).strip() if lines else ""
        return ToolResult(False, proc.stdout,
                          f"{name}: exit {proc.returncode}" + (f": {truncate(err, 160)}" if err else ""))
    return ToolResult(True, proc.stdout)


@dataclass
class SlurmUsage:
    vcpus_total: int = 0
    vcpus_allocated: int = 0
    memory_gb_total: float = 0.0
    memory_gb_used: float = 0.0
    jobs_running: int = 0
    jobs_pending: int = 0


def parse_sinfo_cpus(text: str) -> tuple[int, int]:
    """``sinfo -h -o %C`` lines "allocated/idle/other/total" → (allocated, total)."""
    allocated = total = 0
    for line in text.split():
        parts = line.strip().split("/")
        if len(parts) == 4 and all(p.isdigit() for p in parts):
            allocated += int(parts[0])
            total += int(parts[3])
    return allocated, total


def parse_sinfo_memory(text: str) -> tuple[float, float]:
    """``sinfo -h -N -o "%N %m %e"`` (node, MB configured, MB free) → (total GB, used GB).

    A node shows up once per partition, so nodes are counted once; "N/A" free memory (a powered
    down cloud node) counts as all free.
    """
    nodes: dict[str, tuple[float, float]] = {}
    for line in text.splitlines():
        parts = line.split()
        if len(parts) < 2:
            continue
        try:
            total_mb = float(parts[1].rstrip("+"))
        except ValueError:
            continue
        try:
            free_mb = float(parts[2]) if len(parts) > 2 else total_mb
        except ValueError:
            free_mb = total_mb
        nodes[parts[0]] = (total_mb, min(total_mb, max(0.0, free_mb)))
    total = sum(t for t, _ in nodes.values())
    used = sum(t - f for t, f in nodes.values())
    return total / 1024, used / 1024


def parse_squeue_states(text: str) -> tuple[int, int]:
    running = pending = 0
    for line in text.split():
        state = line.strip().upper()
        if state == "RUNNING":
            running += 1
        elif state == "PENDING":
            pending += 1
    return running, pending


class ClusterRegistry:
    """Knows the clusters; refreshed on an interval by the engine's schedule job."""

    def __init__(self, settings: Settings, store: Store | None = None, *, clock: Clock | None = None,
                 tool: ToolRunner | None = None, which: Callable[[str], str | None] | None = None,
                 owner_id: str | None = None) -> None:
        self.settings = settings
        self.cfg = settings.clusters
        self.store = store
        self.clock = clock or SystemClock()
        self._tool = tool or run_tool
        self._which = which or shutil.which
        self.owner_id = owner_id or settings.effective_monitor_id
        self._lock = threading.Lock()
        self._base: list[ClusterStatus] = []
        self._slurm: SlurmUsage | None = None
        self._last_refresh: float | None = None
        self._last_written: dict[str, dict[str, Any]] = {}
        self.tool_status: dict[str, str] = {}
        self._creation: subprocess.Popen | None = None
        self._creation_started: float = 0.0
        self._creation_lease = None

    # -- discovery ------------------------------------------------------------------------
    def _static_config(self) -> dict[str, ClusterConfig]:
        return {c.name: c for c in self.cfg.static}

    def _status_from_config(self, cfg: ClusterConfig, now: datetime, **over: Any) -> ClusterStatus:
        values: dict[str, Any] = dict(
            name=cfg.name, availability_zone=cfg.availability_zone, source="config", status="ready",
            max_vcpus=cfg.max_vcpus, max_memory_gb=cfg.max_memory_gb,
            max_concurrent_worksets=cfg.max_concurrent_worksets,
            cost_per_vcpu_hour=cfg.cost_per_vcpu_hour, updated_at=now)
        values.update({k: v for k, v in over.items() if v is not None or k == "detail"})
        return ClusterStatus(**values)

    def _region_args(self) -> list[str]:
        # pcluster (botocore) does not read AWS_REGION: pass the region wsmon resolved, if any
        from wsmon.config.aws_region import aws_region
        from wsmon.core.aws import NoRegion

        try:
            return ["--region", aws_region(self.settings).name]
        except NoRegion:
            return []  # pcluster reports the missing region itself, in tool_status

    def _discover_pcluster(self, now: datetime) -> list[ClusterStatus]:
        if not self.cfg.pcluster_discovery:
            self.tool_status.pop("pcluster", None)
            return []
        exe = self._which("pcluster")
        if exe is None:
            self.tool_status["pcluster"] = "pcluster: not found"
            return []
        region = self._region_args()
        timeout = self.cfg.tool_timeout_seconds
        listed = self._tool([exe, "list-clusters", *region], timeout)
        if not listed.ok:
            self.tool_status["pcluster"] = listed.detail
            return []
        try:
            entries = json.loads(listed.stdout or "{}").get("clusters") or []
        except (ValueError, AttributeError):
            self.tool_status["pcluster"] = "pcluster: list-clusters printed something that is not JSON"
            return []
        from wsmon.config.settings import ClusterConfig

        configured = self._static_config()
        found: list[ClusterStatus] = []
        problems: list[str] = []
        for entry in entries:
            name = str(entry.get("clusterName") or "").strip()
            if not name:
                continue
            described = self._tool([exe, "describe-cluster", "--cluster-name", name, *region], timeout)
            if not described.ok:
                problems.append(described.detail)
                continue
            try:
                info = json.loads(described.stdout or "{}")
            except ValueError:
                problems.append(f"pcluster: describe-cluster {name} printed something that is not JSON")
                continue
            tags = {str(t.get("key")): str(t.get("value")) for t in info.get("tags") or []
                    if isinstance(t, dict)}
            if any(tags.get(k) != v for k, v in self.cfg.pcluster_tag_filter.items()):
                continue
            cluster_status = str(info.get("clusterStatus") or entry.get("clusterStatus") or "")
            fleet = str(info.get("computeFleetStatus") or "")
            if cluster_status in PCLUSTER_READY and fleet in FLEET_READY:
                status, detail = "ready", None
            elif cluster_status in PCLUSTER_CREATING:
                status, detail = "creating", f"pcluster: {cluster_status}"
            else:
                status, detail = "unavailable", f"pcluster: {cluster_status or '?'}, fleet {fleet or '?'}"
            az = next((tags[k] for k in AZ_TAG_KEYS if tags.get(k)), None)
            base = configured.get(name) or ClusterConfig(name=name)
            found.append(self._status_from_config(
                base, now, source="pcluster", status=status, detail=detail,
                availability_zone=base.availability_zone or az))
        self.tool_status["pcluster"] = (f"pcluster: {len(found)} cluster(s)"
                                        + (f"; {problems[0]}" if problems else ""))
        return found

    def _read_slurm(self) -> SlurmUsage | None:
        if not self.cfg.slurm_usage:
            self.tool_status.pop("slurm", None)
            return None
        sinfo, squeue = self._which("sinfo"), self._which("squeue")
        if sinfo is None or squeue is None:
            self.tool_status["slurm"] = "slurm: not found"
            return None
        timeout = self.cfg.tool_timeout_seconds
        cpus = self._tool([sinfo, "-h", "-o", "%C"], timeout)
        mem = self._tool([sinfo, "-h", "-N", "-o", "%N %m %e"], timeout)
        jobs = self._tool([squeue, "-h", "-t", "RUNNING,PENDING", "-o", "%T"], timeout)
        failed = [r.detail for r in (cpus, mem, jobs) if not r.ok]
        if failed:
            self.tool_status["slurm"] = failed[0]
            return None
        allocated, total = parse_sinfo_cpus(cpus.stdout)
        mem_total, mem_used = parse_sinfo_memory(mem.stdout)
        running, pending = parse_squeue_states(jobs.stdout)
        usage = SlurmUsage(total, allocated, mem_total, mem_used, running, pending)
        self.tool_status["slurm"] = (f"slurm: {allocated}/{total} CPUs allocated, "
                                     f"{running} running, {pending} pending jobs")
        return usage

    def refresh(self, *, force: bool = False) -> list[ClusterStatus]:
        """Re-read config, pcluster and Slurm (at most every ``refresh_interval_seconds``)."""
        mono = self.clock.monotonic()
        with self._lock:
            due = (force or self._last_refresh is None
                   or mono - self._last_refresh >= self.cfg.refresh_interval_seconds)
            if not due:
                return list(self._base)
            now = self.clock.now()
            statuses = {c.name: self._status_from_config(c, now) for c in self.cfg.static}
            for discovered in self._discover_pcluster(now):
                statuses[discovered.name] = discovered
            self._slurm = self._read_slurm()
            self._poll_creation(now)
            if self._creation is not None:
                statuses.setdefault("(creating)", ClusterStatus(
                    name="(creating)", source="command", status="creating",
                    detail="create_cluster_command running", updated_at=now))
            self._base = list(statuses.values())
            self._last_refresh = mono
            for tool, line in self.tool_status.items():
                log.debug("cluster_tool_status", tool=tool, status=line)
            return list(self._base)

    @property
    def has_snapshot(self) -> bool:
        return self._last_refresh is not None

    def local_cluster(self) -> str | None:
        if self.cfg.local_cluster_name:
            return self.cfg.local_cluster_name
        names = [s.name for s in self._base if s.source != "command"]
        return names[0] if len(names) == 1 else None

    # -- usage overlay --------------------------------------------------------------------
    def snapshot(self, running: Iterable[Workset]) -> list[ClusterStatus]:
        """Cluster statuses with usage: what this store's running worksets reserve (their
        estimates), raised to what Slurm reports as allocated on the local cluster."""
        now = self.clock.now()
        reserved: dict[str, list[float]] = {}
        for ws in running:
            if ws.state not in (WorksetState.LOCKED, WorksetState.IN_PROGRESS) or not ws.cluster_name:
                continue
            est = ws.estimate or {}
            slot = reserved.setdefault(ws.cluster_name, [0.0, 0.0, 0])
            slot[0] += _float(est.get("vcpus"))
            slot[1] += _float(est.get("memory_gb"))
            slot[2] += 1
        local = self.local_cluster()
        out: list[ClusterStatus] = []
        for base in self._base:
            vcpus, mem, count = reserved.get(base.name, [0.0, 0.0, 0])
            detail = base.detail
            if self._slurm is not None and base.name == local:
                vcpus = max(vcpus, self._slurm.vcpus_allocated)
                mem = max(mem, self._slurm.memory_gb_used)
                detail = self.tool_status.get("slurm")
            elif base.name == local and "slurm" in self.tool_status:
                detail = self.tool_status["slurm"]
            out.append(base.model_copy(update={
                "vcpus_used": int(round(vcpus)), "memory_gb_used": round(mem, 2),
                "active_worksets": int(count), "detail": detail, "updated_at": now}))
        return out

    def capacities(self, running: Iterable[Workset]) -> list[ClusterCapacity]:
        statuses = self.snapshot(running)
        self.publish(statuses)
        return [ClusterCapacity.from_status(s) for s in statuses if s.source != "command"]

    def publish(self, statuses: Iterable[ClusterStatus]) -> None:
        """Write snapshots that changed (the dashboard reads them from the store)."""
        if self.store is None:
            return
        for status in statuses:
            key = status.model_dump(exclude={"updated_at"}, mode="json")
            if self._last_written.get(status.name) == key:
                continue
            try:
                self.store.put_cluster_status(status)
                self._last_written[status.name] = key
            except Exception as exc:  # the dashboard view is best effort; scheduling goes on
                log.warning("cluster_status_write_failed", cluster=status.name, error=str(exc))

    # -- optional creation ----------------------------------------------------------------
    @property
    def creating(self) -> bool:
        return self._creation is not None or any(s.status == "creating" for s in self._base)

    def maybe_create_cluster(self, reason: str, availability_zone: str | None = None) -> bool:
        """Start ``create_cluster_command`` when nothing fits; at most one creation in flight
        (across engines: a named lease in the store). Returns True when one was started."""
        argv_template = self.cfg.create_cluster_command
        if not argv_template or self.creating:
            return False
        lease_seconds = self.cfg.create_cluster_timeout_minutes * 60
        if self.store is not None:
            lease = self.store.acquire_named_lease(CREATE_LEASE, self.owner_id, lease_seconds)
            if lease is None:
                return False
            self._creation_lease = lease
        now = self.clock.now()
        values = {"availability_zone": availability_zone or self.cfg.preferred_availability_zone or "",
                  "name": f"wsmon-{now:%Y%m%d-%H%M%S}"}
        argv = [part.format_map(_Missing(values)) for part in argv_template]
        log_dir = Path(self.settings.state_dir) / "logs"
        log_dir.mkdir(parents=True, exist_ok=True)
        try:
            with open(log_dir / "cluster-create.log", "ab") as out:
                self._creation = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT,
                                                  stdin=subprocess.DEVNULL, start_new_session=True)
        except OSError as exc:
            log.error("cluster_create_failed_to_start", argv0=argv[0], error=str(exc))
            self._release_creation_lease()
            return False
        self._creation_started = self.clock.monotonic()
        log.warning("cluster_create_started", argv0=argv[0], reason=reason)
        return True

    def _poll_creation(self, now: datetime) -> None:
        proc = self._creation
        if proc is None:
            return
        code = proc.poll()
        elapsed = self.clock.monotonic() - self._creation_started
        if code is None and elapsed < self.cfg.create_cluster_timeout_minutes * 60:
            return
        if code is None:
            proc.kill()
            proc.wait(timeout=10)
            log.error("cluster_create_timed_out", minutes=self.cfg.create_cluster_timeout_minutes)
        elif code != 0:
            log.error("cluster_create_failed", exit_code=code)
        else:
            log.info("cluster_create_finished")
        self._creation = None
        self._release_creation_lease()

    def _release_creation_lease(self) -> None:
        if self.store is not None and self._creation_lease is not None:
            try:
                self.store.release_named_lease(self._creation_lease)
            except Exception as exc:
                log.warning("cluster_create_lease_release_failed", error=str(exc))
        self._creation_lease = None


class _Missing(dict):
    def __missing__(self, key: str) -> str:
        return "{" + key + "}"


def _float(value: Any) -> float:
    try:
        return max(0.0, float(value))
    except (TypeError, ValueError):
        return 0.0
