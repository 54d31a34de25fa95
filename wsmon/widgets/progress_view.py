"""The detail screen's "Run" section: progress bar, ETA, rules, where the run lives, actual cost.

Everything comes from the workset record (``progress``, ``actual``, the estimate), which the engine
keeps current; every value written by a pipeline or a person (rule names, paths, session names)
goes through ``textsafe`` and is never parsed as markup.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from rich.style import Style
from rich.table import Table
from rich.text import Text

from wsmon.core.models import Workset
from wsmon.core.textsafe import strip_control, truncate
from wsmon.widgets.format import bar, clock_time, duration, relative

MAX_RULES_SHOWN = 12


def _kv(table: Table, key: str, value: Any, style: Any = "") -> None:
    table.add_row(Text(key, style="dim"), value if isinstance(value, Text)
                  else Text(strip_control("-" if value in (None, "") else value), style=style))


def _rules(counts: dict[str, int]) -> str:
    items = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    shown = ", ".join(f"{truncate(strip_control(rule), 40)} ×{n}" if n > 1 else truncate(strip_control(rule), 40)
                      for rule, n in items[:MAX_RULES_SHOWN])
    more = len(items) - MAX_RULES_SHOWN
    return shown + (f", +{more} more" if more > 0 else "")


def run_section(ws: Workset, now: datetime, *, console_url: str | None = None,
                warning_style: Any = "") -> list[Any]:
    """Renderables for the section; before the run step only the S3 console link."""
    progress, actual = ws.progress, ws.actual
    grid = Table.grid(padding=(0, 2))
    grid.add_column(no_wrap=True)
    grid.add_column()
    run_started = next((s.started_at for s in reversed(ws.steps) if s.name == "run"), None)
    if progress is None and actual is None:
        if run_started is None:
            _kv(grid, "progress", "the pipeline has not run yet")
        else:
            _kv(grid, "progress", f"progress unknown (elapsed {duration((now - run_started).total_seconds())})")
    if progress is not None:
        if progress.percent is not None:
            _kv(grid, "progress", f"{bar(progress.percent, 100.0, width=30)}  "
                                  f"{progress.steps_done} of {progress.steps_total} steps")
        else:
            elapsed = duration((now - run_started).total_seconds()) if run_started else "-"
            _kv(grid, "progress", f"progress unknown (elapsed {elapsed})")
        if progress.eta is not None:
            rate = f", {progress.rate_per_hour:.1f} steps/h" if progress.rate_per_hour else ""
            _kv(grid, "ETA", f"{clock_time(progress.eta)} ({relative(progress.eta, now)}{rate})")
        elif ws.state.holds_lease and progress.percent is not None and progress.percent < 100:
            _kv(grid, "ETA", "unknown until more steps finish")
        if progress.last_progress_at is not None:
            quiet = (now - progress.last_progress_at).total_seconds()
            _kv(grid, "last progress", f"{duration(quiet)} ago ({clock_time(progress.last_progress_at)})")
        if progress.running_rules:
            _kv(grid, "running", _rules(progress.running_rules))
        if progress.done_per_rule:
            partial = " (from the log's last part only)" if progress.partial else ""
            _kv(grid, "done per rule", _rules(progress.done_per_rule) + partial)
        if progress.errors:
            _kv(grid, "errors", f"{progress.errors} (last in rule {strip_control(progress.last_error_rule or '?')})",
                style=warning_style)
        if progress.status not in ("ok", ""):
            _kv(grid, "log status", progress.status, style=warning_style)
        _kv(grid, "tmux session", progress.session)
        where = f" on {progress.log_host}" if progress.log_host else ""
        _kv(grid, "log", f"{progress.log_path or '-'}{where}")
        if progress.slurm_job_ids:
            ids = progress.slurm_job_ids
            _kv(grid, "Slurm jobs", ", ".join(ids[-8:]) + (f" (last 8 of {len(ids)}+)" if len(ids) > 8 else ""))
    estimate = (ws.estimate or {}).get("cost_usd") if isinstance(ws.estimate, dict) else None
    if actual is not None:
        est = f" (estimate ${float(estimate):,.2f})" if isinstance(estimate, (int, float)) else ""
        when = "final" if actual.final else f"{actual.jobs_running} jobs still running" if actual.jobs_running else "so far"
        _kv(grid, "actual cost", f"${actual.cost_usd:,.2f} for {actual.vcpu_hours:,.1f} vCPU-hours, "
                                 f"{actual.jobs} Slurm jobs, {when}{est}")
        if actual.status not in ("ok", ""):
            _kv(grid, "sacct", actual.status, style=warning_style)
    if console_url:
        _kv(grid, "S3 console", Text(console_url, style=Style(link=console_url)))
    return [Text("\nRun", style="bold underline"), grid]
