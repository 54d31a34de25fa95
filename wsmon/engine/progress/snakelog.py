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

# One pattern for every line that matters, scanned over a whole piece of the log at once: the
# lines that match nothing (most of them: input:, output:, shell commands, tool chatter) then cost
# the regex engine's scan, not a Python step each. The pattern starts at the newline before a line
# (the scan is given one in front) and looks ahead at the first letter, which lets the regex
# engine skip through the rest quickly: twice as fast as anchoring with ``^``.
_EVENTS = re.compile(rb"\n[ \t]*(?=[0-9FrlEjSJtB])(?:" + rb"|".join((
    rb"(?P<done>\d+) of (?P<total>\d+) steps \((?P<pct>\d+(?:\.\d+)?)%\) done",
    rb"Finished job(?:id:)? (?P<finished>\d+)\b",
    rb"(?:local)?rule (?P<rule>[^\n]{1,200}?):[ \t\r]*$",
    rb"Error in rule (?P<error>[^\n]{1,200}?):[ \t\r]*$",
    rb"jobid: (?P<jobid>\d+)[ \t\r]*$",
    rb"Submitted (?:group )?job \S+ with external jobid '(?:Submitted batch job )?(?P<ext>[^'\n]{0,100})'",
    rb"Job \d+ has been submitted with SLURM jobid (?P<slurm>\d+)",
    rb"total[ \t]+(?P<stats_total>\d+)[ \t\r]*$",
    rb"(?P<stats>Job (?:stats|counts):)",
    rb"(?P<dag>Building DAG of jobs)",
)) + rb")", re.MULTILINE)
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
        Returns how many times the steps done (or the total) changed."""
        last_nl = data.rfind(b"\n")
        if last_nl < 0:
            self._carry(data)
            return 0
        head, region, rest = b"", data[: last_nl + 1], data[last_nl + 1:]
        if self._skipping_long_line:
            first_nl = region.find(b"\n")
            region = region[first_nl + 1:]
            self._skipping_long_line = False
        elif self._partial:
            first_nl = region.find(b"\n")
            if len(self._partial) + first_nl <= MAX_LINE_BYTES:
                head = bytes(self._partial) + region[: first_nl + 1]
            else:
                self.progress.skipped_long_lines += 1
            region = region[first_nl + 1:]
            self._partial.clear()
        changed = self._region(head) if head else 0
        changed += self._region(region)
        self._carry(rest)
        return changed

    def _carry(self, rest: bytes) -> None:
        """Keep an unfinished last line for the next call, unless it is too long to be one."""
        if not rest or self._skipping_long_line:
            return
        if len(self._partial) + len(rest) > MAX_LINE_BYTES:
            self._partial.clear()
            self._skipping_long_line = True
            self.progress.skipped_long_lines += 1
        else:
            self._partial += rest

    def _region(self, region: bytes) -> int:
        """Complete lines (``region`` ends with a newline)."""
        if not region:
            return 0
        p = self.progress
        p.lines += region.count(b"\n")
        self.tail.extend(line.rstrip(b"\r") for line in
                         region[:-1].rsplit(b"\n", self.tail.maxlen)[-(self.tail.maxlen or 1):])
        changed = 0
        for m in _EVENTS.finditer(b"\n" + region):
            changed += self._event(m)
        return changed

    def _event(self, m: re.Match[bytes]) -> int:
        p = self.progress
        kind = m.lastgroup
        if kind == "jobid":
            if self._block_rule is not None:
                self._job_in_block(int(m.group("jobid")))
            return 0
        self._block_rule = None
        if kind == "pct":
            done, total = int(m.group("done")), int(m.group("total"))
            moved = done != p.done or total != p.total
            p.done, p.total = done, total
            p.percent = min(100.0, float(m.group("pct"))) if total else None
            p.progress_lines += 1
            return 1 if moved else 0
        if kind == "finished":
            self._finished(int(m.group("finished")))
        elif kind == "rule":
            self._block_rule, self._block_is_error = clean_rule(m.group("rule")), False
        elif kind == "error":
            self._block_rule, self._block_is_error = clean_rule(m.group("error")), True
            p.errors += 1
            p.last_error_rule = self._block_rule
        elif kind in ("ext", "slurm"):
            self._slurm_id(m.group(kind).decode("ascii", "replace").strip())
        elif kind == "stats_total":
            if p.progress_lines == 0 and self._in_job_stats:
                p.total = int(m.group("stats_total"))
                p.percent = 0.0 if p.total else None
                self._in_job_stats = False
                return 1
        elif kind == "stats":
            self._in_job_stats = True
        elif kind == "dag":
            p.runs += 1
            p.running.clear()
            p.progress_lines = 0
            self._in_job_stats = False
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
