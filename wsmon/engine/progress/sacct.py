"""What a workset's Slurm jobs actually used, from ``sacct``, and what that cost.

``sacct --parsable2`` prints a header line and then one ``|``-separated line per job and per job
step (``1234567.batch``, ``1234567.extern``), with times as ``[DD-[HH:]]MM:SS`` (Slurm's sacct
manual). Only the job lines count: a job's ``CPUTime`` is its allocated CPUs × elapsed time, which
already covers its steps. vCPU-hours × the partition's configured price gives the cost; prices
come from configuration only (``cost`` settings), never from the network.

The ledger keeps the cost of finished jobs as a sum and asks ``sacct`` again only about jobs that
were still pending or running, so its memory follows the jobs in flight, not the run's length.
"""

from __future__ import annotations

import re
import subprocess
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from wsmon.core.textsafe import strip_control

SACCT_FIELDS = ("JobID", "Elapsed", "AllocCPUS", "CPUTime", "Partition", "State")
# Job ids per sacct call: keeps the command line short on a run of thousands of jobs.
IDS_PER_CALL = 200
MAX_LEDGER_IDS = 5000
# States after which a job's accounting no longer changes (Slurm's JOB STATE CODES).
FINAL_STATES = frozenset({
    "BOOT_FAIL", "CANCELLED", "COMPLETED", "DEADLINE", "FAILED", "NODE_FAIL", "OUT_OF_MEMORY",
    "PREEMPTED", "REVOKED", "TIMEOUT",
})
_DURATION = re.compile(r"^(?:(\d+)-)?(?:(\d+):)?(\d+):(\d+)(?:\.\d+)?$")
_JOB_ID = re.compile(r"^\d+(?:_\d+|_\[[\d,\-%]+\])?(?:\+\d+)?$")


class SacctError(Exception):
    """sacct could not answer; the message says why, for the operator."""


def parse_duration(text: str) -> float | None:
    """``[DD-[HH:]]MM:SS[.fff]`` in seconds; None for anything else (``INVALID``, ``Unknown``)."""
    m = _DURATION.match(text.strip())
    if not m:
        return None
    days, hours, minutes, seconds = (int(g) if g else 0 for g in m.groups())
    return float(((days * 24 + hours) * 60 + minutes) * 60 + seconds)


@dataclass(frozen=True)
class SacctJob:
    job_id: str
    elapsed_seconds: float
    alloc_cpus: int
    cpu_seconds: float
    partition: str
    state: str  # the first word: "CANCELLED by 1000" is CANCELLED

    @property
    def vcpu_hours(self) -> float:
        return self.cpu_seconds / 3600.0

    @property
    def final(self) -> bool:
        return self.state in FINAL_STATES


@dataclass
class SacctReport:
    jobs: list[SacctJob] = field(default_factory=list)
    skipped_lines: int = 0


def parse_sacct(text: str) -> SacctReport:
    """Parse ``sacct --parsable2`` output (header line first). Raises ``SacctError`` when it is
    not that: no header with the fields asked for, or not a single line that reads as a job."""
    lines = [ln for ln in text.splitlines() if ln.strip()]
    if not lines:
        return SacctReport()
    header = [h.strip() for h in lines[0].split("|")]
    try:
        col = {name: header.index(name) for name in SACCT_FIELDS}
    except ValueError:
        raise SacctError("sacct: unreadable output (no --parsable2 header with "
                         f"{','.join(SACCT_FIELDS)}): {strip_control(lines[0])[:80]!r}") from None
    report = SacctReport()
    for line in lines[1:]:
        cells = line.split("|")
        if len(cells) != len(header):
            report.skipped_lines += 1
            continue
        job_id = cells[col["JobID"]].strip()
        if "." in job_id:
            continue  # a step of a job: the job's own line covers it
        elapsed = parse_duration(cells[col["Elapsed"]])
        cpu = parse_duration(cells[col["CPUTime"]])
        alloc = cells[col["AllocCPUS"]].strip()
        if not _JOB_ID.match(job_id) or elapsed is None or not alloc.isdigit():
            report.skipped_lines += 1
            continue
        if cpu is None:
            cpu = elapsed * int(alloc)
        state = (cells[col["State"]].strip().split() or ["UNKNOWN"])[0].upper()
        report.jobs.append(SacctJob(job_id, elapsed, int(alloc), cpu,
                                    strip_control(cells[col["Partition"]].strip())[:64], state))
    if report.skipped_lines and not report.jobs:
        raise SacctError(f"sacct: unreadable output ({report.skipped_lines} lines that are not jobs)")
    return report


def sacct_argv(job_ids: Sequence[str]) -> list[str]:
    return ["sacct", "--parsable2", "--allocations", f"--format={','.join(SACCT_FIELDS)}",
            "--jobs", ",".join(job_ids)]


def run_sacct(job_ids: Sequence[str], wrap: Callable[[Sequence[str]], list[str]] = list, *,
              timeout: float = 60.0, env: dict[str, str] | None = None) -> SacctReport:
    """Ask sacct about ``job_ids`` (through ``wrap``: ssh to the head node for the SSH runner)."""
    report = SacctReport()
    ids = list(job_ids)
    for start in range(0, len(ids), IDS_PER_CALL):
        argv = wrap(sacct_argv(ids[start:start + IDS_PER_CALL]))
        try:
            proc = subprocess.run(argv, capture_output=True, text=True, errors="replace",
                                  timeout=timeout, stdin=subprocess.DEVNULL, check=False, env=env)
        except FileNotFoundError:
            raise SacctError("sacct: not found on head node") from None
        except subprocess.TimeoutExpired:
            raise SacctError(f"sacct: no answer within {timeout:g}s") from None
        except OSError as exc:
            raise SacctError(f"sacct: could not run ({exc})") from None
        if proc.returncode == 127:
            raise SacctError("sacct: not found on head node")
        if proc.returncode != 0:
            said = (proc.stderr or "").strip().splitlines()
            err = strip_control(said[-1])[:160] if said else ""
            raise SacctError(f"sacct: failed (exit {proc.returncode}){': ' + err if err else ''}")
        part = parse_sacct(proc.stdout)
        report.jobs += part.jobs
        report.skipped_lines += part.skipped_lines
    return report


class PriceBook:
    """USD per vCPU-hour for a cluster's partition: the partition's configured price, else the
    cluster's, else the default."""

    def __init__(self, default: float, clusters: dict[str, float] | None = None,
                 partitions: dict[str, dict[str, float]] | None = None) -> None:
        self.default = default
        self.clusters = dict(clusters or {})
        self.partitions = {c: dict(p) for c, p in (partitions or {}).items()}

    def price(self, cluster: str | None, partition: str | None) -> float:
        if cluster is not None:
            by_partition = self.partitions.get(cluster, {})
            if partition and partition in by_partition:
                return by_partition[partition]
            if cluster in self.clusters:
                return self.clusters[cluster]
        return self.default


@dataclass
class Usage:
    vcpu_hours: float = 0.0
    cost_usd: float = 0.0
    jobs: int = 0


class CostLedger:
    """Actual usage of one workset's Slurm jobs, settled as they finish."""

    def __init__(self, cluster: str | None, prices: PriceBook) -> None:
        self.cluster = cluster
        self.prices = prices
        self.settled = Usage()
        self.in_flight: dict[str, SacctJob | None] = {}  # job id → its latest line, if any
        self.dropped_ids = 0

    def add_ids(self, job_ids: Iterable[str]) -> None:
        for job_id in job_ids:
            if job_id in self.in_flight:
                continue
            if len(self.in_flight) >= MAX_LEDGER_IDS:
                self.dropped_ids += 1
                continue
            self.in_flight[job_id] = None

    def unsettled_ids(self) -> list[str]:
        return list(self.in_flight)

    def apply(self, report: SacctReport) -> None:
        for job in report.jobs:
            key = job.job_id
            if key not in self.in_flight:
                continue
            if job.final:
                del self.in_flight[key]
                self.settled.vcpu_hours += job.vcpu_hours
                self.settled.cost_usd += job.vcpu_hours * self.prices.price(self.cluster, job.partition)
                self.settled.jobs += 1
            else:
                self.in_flight[key] = job

    def total(self) -> Usage:
        """Settled jobs plus what running jobs have used so far."""
        usage = Usage(self.settled.vcpu_hours, self.settled.cost_usd, self.settled.jobs)
        for job in self.in_flight.values():
            if job is not None and job.cpu_seconds > 0:
                usage.vcpu_hours += job.vcpu_hours
                usage.cost_usd += job.vcpu_hours * self.prices.price(self.cluster, job.partition)
                usage.jobs += 1
        return usage
