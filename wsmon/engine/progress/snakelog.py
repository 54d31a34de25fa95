"""Snakemake's run log, read as a stream: steps done of total, running rules, Slurm job ids.

The parser is fed bytes in whatever pieces the reader has (``feed``), keeps only an unfinished
last line between calls, and holds bounded state, so a log of gigabytes costs memory in
proportion to the jobs in flight, never to its length. It understands the lines Snakemake prints
(documented in Snakemake's "Executing a workflow" output; the same in 7.x and 8.x):

* ``Job stats:`` … ``total  345``: the number of steps before the first one finishes;
* ``rule bwa2a_sort:`` / ``localrule all:`` followed by an indented ``jobid: 12``: a job starts;
* ``Submitted job 57 with external jobid '1234567'.`` (generic cluster executor) and
  ``Job 57 has been submitted with SLURM jobid 1234567 (log: …).`` (slurm executor plugin);
* ``Finished job 12.`` / ``Finished jobid: 12 (Rule: bwa2a_sort)``;
* ``12 of 345 steps (3%) done``;
* ``Error in rule bwa2a_sort:`` followed by ``jobid: 12``;
* ``Building DAG of jobs...``: a new Snakemake invocation in the same log (a rerun appends).

Rule names are written by whoever wrote the Snakefile; they are kept with control characters
removed and shown by screens through ``textsafe`` like every other untrusted text.
"""

from __future__ import annotations

import re
from collections import OrderedDict, deque
from dataclasses import dataclass, field

from wsmon.core.textsafe import strip_control, truncate

# A single line longer than this is not Snakemake talking (a tool dumped binary or a huge
# command line); it is skipped, so one newline-free gigabyte cannot grow the buffer.
MAX_LINE_BYTES = 16 * 1024
# Jobs started but not yet finished that are remembered (oldest forgotten first).
MAX_RUNNING_JOBS = 4096
# Distinct rules counted in steps-per-rule; further rules are counted under OTHER_RULES.
MAX_RULES = 256
OTHER_RULES = "(other rules)"
# Slurm job ids kept for display (the most recent ones).
MAX_SLURM_IDS_SHOWN = 50
# Slurm job ids waiting for their final accounting (see sacct.CostLedger).
MAX_PENDING_SLURM_IDS = 5000
MAX_RULE_NAME = 80

_PROGRESS = re.compile(rb"^\s*(\d+) of (\d+) steps \((\d+(?:\.\d+)?)%\) done")
_FINISHED = re.compile(rb"^\s*Finished job(?:id:)? (\d+)\b")
_RULE = re.compile(rb"^\s*(?:local)?rule (\S.{0,200}?):\s*$")
_ERROR = re.compile(rb"^\s*Error in rule (\S.{0,200}?):\s*$")
_JOBID = re.compile(rb"^\s+jobid: (\d+)\s*$")
_SUBMITTED_GENERIC = re.compile(rb"^\s*Submitted (?:group )?job (\S+) with external jobid '(?:Submitted batch job )?([^']*)'")
_SUBMITTED_SLURM = re.compile(rb"^\s*Job (\d+) has been submitted with SLURM jobid (\d+)")
_TOTAL = re.compile(rb"^\s*total\s+(\d+)\s*$")
_JOB_STATS = re.compile(rb"^\s*Job (?:stats|counts):")
_NEW_RUN = re.compile(rb"^\s*Building DAG of jobs")
_SLURM_ID = re.compile(r"^\d+(?:_\d+)?$")


def clean_rule(raw: bytes) -> str:
    return truncate(strip_control(raw.decode("utf-8", "replace")).strip(), MAX_RULE_NAME)


@dataclass
class SnakemakeProgress:
    """What the log has said so far. ``total`` is None until Snakemake states it."""

    done: int = 0
    total: int | None = None
    percent: float | None = None
    running: OrderedDict[int, str] = field(default_factory=OrderedDict)  # jobid → rule
    done_per_rule: dict[str, int] = field(default_factory=dict)
    slurm_ids: deque[str] = field(default_factory=lambda: deque(maxlen=MAX_SLURM_IDS_SHOWN))
    pending_slurm_ids: list[str] = field(default_factory=list)  # taken by the cost ledger
    slurm_ids_dropped: int = 0
    errors: int = 0
    last_error_rule: str | None = None
    progress_lines: int = 0
    lines: int = 0
    skipped_long_lines: int = 0
    runs: int = 0

    @property
    def known(self) -> bool:
        """Snakemake said how many steps there are; anything else is "progress unknown"."""
        return self.total is not None and self.total > 0

    def running_rules(self) -> dict[str, int]:
        """Rule → jobs of it now running, in order of first start."""
        counts: dict[str, int] = {}
        for rule in self.running.values():
            counts[rule] = counts.get(rule, 0) + 1
        return counts

    def take_pending_slurm_ids(self) -> list[str]:
        ids, self.pending_slurm_ids = self.pending_slurm_ids, []
        return ids


class SnakemakeLogParser:
    """Feed it bytes as the log grows; read ``progress``."""

    def __init__(self, tail_lines: int = 200) -> None:
        self.progress = SnakemakeProgress()
        # the log's last lines, raw; decoded and cleaned only when someone asks (tail_text)
        self.tail: deque[bytes] = deque(maxlen=max(1, tail_lines))
        self._partial = bytearray()
        self._skipping_long_line = False
        self._block_rule: str | None = None  # rule of the block whose ``jobid:`` comes next
        self._block_is_error = False
        self._in_job_stats = False

    def reset_line_state(self) -> None:
        """The file was truncated or replaced: what was half-read belongs to the old one."""
        self._partial.clear()
        self._skipping_long_line = False
        self._block_rule = None

    def resync(self) -> None:
        """Reading resumes mid-file: drop everything up to the next newline."""
        self._partial.clear()
        self._skipping_long_line = True
        self._block_rule = None

    def tail_text(self, lines: int | None = None) -> str:
        kept = list(self.tail)[-lines:] if lines else list(self.tail)
        return strip_control(b"\n".join(kept).decode("utf-8", "replace"), keep_newlines=True)

    def feed(self, data: bytes) -> int:
        """Parse the complete lines in ``data`` (plus what an earlier call left unfinished).
        Returns how many lines carried progress (steps done changed)."""
        changed = 0
        start = 0
        while True:
            nl = data.find(b"\n", start)
            if nl < 0:
                break
            piece = data[start:nl]
            start = nl + 1
            if self._skipping_long_line:
                self._skipping_long_line = False
                continue
            if self._partial:
                if len(self._partial) + len(piece) > MAX_LINE_BYTES:
                    self._partial.clear()
                    self.progress.skipped_long_lines += 1
                    continue
                self._partial += piece
                piece = bytes(self._partial)
                self._partial.clear()
            elif len(piece) > MAX_LINE_BYTES:
                self.progress.skipped_long_lines += 1
                continue
            changed += self._line(piece)
        rest = data[start:]
        if rest and not self._skipping_long_line:
            if len(self._partial) + len(rest) > MAX_LINE_BYTES:
                self._partial.clear()
                self._skipping_long_line = True
                self.progress.skipped_long_lines += 1
            else:
                self._partial += rest
        return changed

    # -- one line --------------------------------------------------------------------------
    def _line(self, line: bytes) -> int:
        p = self.progress
        p.lines += 1
        if line.endswith(b"\r"):
            line = line[:-1]
        self.tail.append(line)
        if not line.strip():
            return 0
        if self._block_rule is not None:
            m = _JOBID.match(line)
            if m:
                self._job_in_block(int(m.group(1)))
                return 0
            if line[:1] in (b" ", b"\t"):
                return 0  # input:, output:, wildcards: … of the same block
            self._block_rule = None
        m = _PROGRESS.match(line)
        if m:
            done, total = int(m.group(1)), int(m.group(2))
            moved = done != p.done or total != p.total
            p.done, p.total = done, total
            p.percent = min(100.0, float(m.group(3))) if total else None
            p.progress_lines += 1
            return 1 if moved else 0
        m = _FINISHED.match(line)
        if m:
            self._finished(int(m.group(1)))
            return 0
        m = _RULE.match(line)
        if m:
            self._block_rule, self._block_is_error = clean_rule(m.group(1)), False
            return 0
        m = _ERROR.match(line)
        if m:
            self._block_rule, self._block_is_error = clean_rule(m.group(1)), True
            p.errors += 1
            p.last_error_rule = self._block_rule
            return 0
        m = _SUBMITTED_GENERIC.match(line) or _SUBMITTED_SLURM.match(line)
        if m:
            self._slurm_id(m.group(2).decode("ascii", "replace").strip())
            return 0
        m = _TOTAL.match(line)
        if m and p.progress_lines == 0 and self._in_job_stats:
            p.total = int(m.group(1))
            p.percent = 0.0 if p.total else None
            self._in_job_stats = False
            return 1
        if _JOB_STATS.match(line):
            self._in_job_stats = True
            return 0
        if _NEW_RUN.match(line):
            p.runs += 1
            p.running.clear()
            p.progress_lines = 0
            self._in_job_stats = False
            return 0
        return 0

    def _job_in_block(self, jobid: int) -> None:
        p = self.progress
        rule = self._block_rule or "?"
        if self._block_is_error:
            p.running.pop(jobid, None)
        else:
            p.running[jobid] = rule
            p.running.move_to_end(jobid)
            while len(p.running) > MAX_RUNNING_JOBS:
                p.running.popitem(last=False)
        self._block_rule = None

    def _finished(self, jobid: int) -> None:
        p = self.progress
        rule = p.running.pop(jobid, None)
        if rule is None:
            return
        if rule not in p.done_per_rule and len(p.done_per_rule) >= MAX_RULES:
            rule = OTHER_RULES
        p.done_per_rule[rule] = p.done_per_rule.get(rule, 0) + 1

    def _slurm_id(self, raw: str) -> None:
        p = self.progress
        if not _SLURM_ID.match(raw):
            return  # another executor's id, or junk: never passed to sacct
        p.slurm_ids.append(raw)
        if len(p.pending_slurm_ids) < MAX_PENDING_SLURM_IDS:
            p.pending_slurm_ids.append(raw)
        else:
            p.slurm_ids_dropped += 1
