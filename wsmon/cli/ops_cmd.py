"""The operator's scriptable companion to the dashboard.

Every command here goes through the same store operations the dashboard uses and records the
operator as ``user@host`` (``wsmon.core.identity.operator_actor()``), so the history shows who did what whichever face
they used. Text output is for people (untrusted text passes ``strip_control``); ``--json`` prints
raw values for scripts (``json.dumps`` escapes every control character).

Exit codes are part of the interface (wsmon/cli/exits.py, documented in docs/cli.md):
0 ok, 1 refused or failed, 2 usage, 3 not found, 4 store cannot be opened or reached.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

import click
from click.shell_completion import CompletionItem

from wsmon.cli.exits import (
    EXIT_CODES_HELP,
    EXIT_NOT_FOUND,
    EXIT_REFUSED,
    EXIT_USAGE,
    CommandError,
    open_command_store,
)
from wsmon.cli.context import CliContext
from wsmon.core.clock import parse_iso
from wsmon.core.identity import operator_actor as actor
from wsmon.core.models import Priority, WorksetState
from wsmon.core.textsafe import strip_control, truncate
from wsmon.operations.rules import ACTIONS

if TYPE_CHECKING:
    from wsmon.core.models import Alert, Event, MonitorInfo, Workset
    from wsmon.engine.store import Store
    from wsmon.operations import Operations, Outcome

STATE_NAMES = [s.value for s in WorksetState]
PRIORITY_NAMES = [p.value for p in Priority]


def _safe(value: object) -> str:
    return strip_control("" if value is None else value)


def _require_workset(store: Store, workset_id: str) -> Workset:
    workset = store.get_workset(workset_id)
    if workset is None:
        raise CommandError(f"no workset {_safe(workset_id)!r} in the store ({_safe(store.url)})",
                       EXIT_NOT_FOUND)
    return workset


def _emit_json(value: Any) -> None:
    # ensure_ascii (the default) also escapes DEL and C1 controls, which ensure_ascii=False keeps raw
    click.echo(json.dumps(value, indent=2, sort_keys=False))


def _now(store: Store) -> datetime:
    return store.clock.now()


# -- time formatting --------------------------------------------------------------------------

def _span(seconds: float) -> str:
    """3s, 4m, 2h05m, 3d04h: the operations module's one way of showing a duration."""
    from wsmon.operations import format_duration

    return format_duration(seconds)


def _relative(when: datetime | None, now: datetime) -> str:
    if when is None:
        return "-"
    delta = (when - now).total_seconds()
    return f"in {_span(delta)}" if delta > 0 else f"{_span(delta)} ago"


def _stamp(when: datetime | None) -> str:
    if when is None:
        return "-"
    return when.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M:%SZ")


def _stamp_rel(when: datetime | None, now: datetime) -> str:
    if when is None:
        return "-"
    return f"{_stamp(when)} ({_relative(when, now)})"


# -- tables ------------------------------------------------------------------------------------

def _cell_len(text: str) -> int:
    from rich.cells import cell_len  # wide (CJK, emoji) characters take two columns

    return cell_len(text)


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]], *, max_width: int = 48) -> None:
    cells = [[truncate(_safe(c), max_width) for c in row] for row in rows]
    widths = [_cell_len(h) for h in headers]
    for row in cells:
        for i, c in enumerate(row):
            widths[i] = max(widths[i], _cell_len(c))

    def line(values: Sequence[str]) -> str:
        parts = [v + " " * (widths[i] - _cell_len(v)) for i, v in enumerate(values)]
        return "  ".join(parts).rstrip()

    click.echo(line(headers))
    for row in cells:
        click.echo(line(row))


def _lease_is_stale(workset: Workset, store: Store, now: datetime) -> bool:
    return (workset.state.holds_lease and workset.lock_expires_at is not None
            and workset.lock_expires_at + store.max_clock_skew < now)


def _holder(workset: Workset, store: Store, now: datetime) -> str:
    if not workset.state.holds_lease or not workset.lock_owner:
        return "-"
    return workset.lock_owner + (" (stale)" if _lease_is_stale(workset, store, now) else "")


# -- completion --------------------------------------------------------------------------------

def _completion_store(ctx: click.Context) -> Store:
    """Open the store the command line names: during completion the root callback never ran."""
    from wsmon.config import load_settings
    from wsmon.engine.store.from_settings import open_store_from_settings

    root = ctx.find_root()
    store_url = root.params.get("store_url")
    overrides = {"store": {"url": store_url}} if store_url else {}
    settings = load_settings(root.params.get("config_path"), overrides)
    return open_store_from_settings(settings, create=False)


def _complete_workset_id(ctx: click.Context, param: click.Parameter,
                         incomplete: str) -> list[CompletionItem]:
    try:
        store = _completion_store(ctx)
        try:
            ids = [w.workset_id for w in store.list_worksets(limit=500).items]
        finally:
            store.close()
    except Exception:  # completion must never print a traceback into the user's prompt
        return []
    return [CompletionItem(i) for i in ids if i.startswith(incomplete)]


def _complete_alert_id(ctx: click.Context, param: click.Parameter,
                       incomplete: str) -> list[CompletionItem]:
    try:
        store = _completion_store(ctx)
        try:
            alerts = store.list_alerts()
        finally:
            store.close()
    except Exception:
        return []
    return [CompletionItem(a.alert_id, help=a.summary) for a in alerts
            if a.alert_id.startswith(incomplete)]


workset_argument = click.argument("workset_id", metavar="ID", shell_complete=_complete_workset_id)
json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")


# -- worksets ----------------------------------------------------------------------------------

@click.command("list", epilog=EXIT_CODES_HELP)
@click.option("--state", "states", multiple=True, type=click.Choice(STATE_NAMES),
              help="Only worksets in this state (repeatable).")
@click.option("--priority", type=click.Choice(PRIORITY_NAMES), help="Only this priority.")
@click.option("--customer", help="Only this customer_id.")
@click.option("--limit", type=click.IntRange(min=1), default=500, show_default=True,
              help="At most this many worksets.")
@json_option
@click.pass_obj
def list_cmd(obj: CliContext, states: tuple[str, ...], priority: str | None, customer: str | None,
             limit: int, as_json: bool) -> None:
    """List worksets in queue order (priority, then age)."""
    with open_command_store(obj) as store:
        items: list[Workset] = []
        for state in states or (None,):
            taken = 0
            for workset in store.iter_worksets(state=state, priority=priority, customer_id=customer,
                                               page_size=min(limit, 1000)):
                items.append(workset)
                taken += 1
                if taken >= limit:
                    break
        if len(states) > 1:  # several pages, one per state: restore the store's queue order
            items.sort(key=lambda w: (w.priority.rank, w.created_at, w.workset_id))
        items = items[:limit]
        if as_json:
            _emit_json([w.model_dump(mode="json") for w in items])
            return
        if not items:
            click.echo("no worksets match")
            return
        now = _now(store)
        _table(
            ["ID", "STATE", "PRIORITY", "CUSTOMER", "CLUSTER", "REGISTERED", "TRIES", "HOLDER"],
            [[w.workset_id, w.state.value, w.priority.value, w.customer_id or "-",
              w.cluster_name or "-", _span((now - w.created_at).total_seconds()), str(w.attempts),
              _holder(w, store, now)] for w in items],
        )


def _show_text(workset: Workset, store: Store, now: datetime) -> None:
    def row(label: str, value: object) -> None:
        click.echo(f"{label:<11}{_safe(value)}")

    row("workset", workset.workset_id)
    row("state", f"{workset.state.value} since {_stamp_rel(workset.state_changed_at, now)}")
    row("priority", workset.priority.value)
    row("customer", workset.customer_id or "-")
    s3_uri = workset.metadata.get("s3_uri") or f"s3://{workset.bucket}/{workset.prefix}"
    row("location", s3_uri + ("   [folder no longer in S3]" if workset.s3_missing else ""))
    row("cluster", workset.cluster_name or "-")
    retries = "" if workset.max_retries is None else f" (max retries {workset.max_retries})"
    row("attempts", f"{workset.attempts}{retries}")
    if workset.retry_after:
        row("retry at", _stamp_rel(workset.retry_after, now))
    if workset.state.holds_lease and workset.lock_owner:
        stale = "  STALE: holder presumed dead" if _lease_is_stale(workset, store, now) else ""
        row("lease", f"held by {workset.lock_owner}, fence {workset.fence}, "
                     f"since {_stamp_rel(workset.lock_acquired_at, now)}, "
                     f"expires {_relative(workset.lock_expires_at, now)}{stale}")
    # "registered" as the dashboard says it: when wsmon registered the workset (created_at)
    row("registered", _stamp_rel(workset.created_at, now))
    row("updated", _stamp_rel(workset.updated_at, now))
    if workset.schedule_reason:
        row("schedule", workset.schedule_reason)
    if workset.pipeline_dir:
        row("pipeline", workset.pipeline_dir)
    _show_run(workset, now, row)
    if workset.error_code or workset.error_details:
        row("error", workset.error_code or "-")
        if workset.error_details:
            for line in strip_control(workset.error_details, keep_newlines=True).splitlines():
                click.echo(f"          {line}")
    if workset.estimate:
        est = workset.estimate
        parts = [f"{k.replace('_', ' ')} {est[k]}" for k in
                 ("samples", "vcpus", "memory_gb", "storage_gb", "vcpu_hours", "cost_usd",
                  "duration_hours") if est.get(k) is not None]
        row("estimate", ", ".join(parts))
    if workset.findings:
        click.echo("findings:")
        for f in workset.findings:
            where = ":".join(str(f[k]) for k in ("file", "line", "column") if f.get(k) not in (None, ""))
            click.echo(f"  {_safe(f.get('severity', '')).upper():<8}{_safe(f.get('code', ''))}  "
                       f"{_safe(where)}  {_safe(f.get('message', ''))}")
            if f.get("remediation"):
                click.echo(f"          fix: {_safe(f['remediation'])}")
    if workset.steps:
        click.echo("steps:")
        for step in workset.steps:
            took = ""
            if step.started_at and step.finished_at:
                took = _span((step.finished_at - step.started_at).total_seconds())
            elif step.started_at:
                took = f"running {_span((now - step.started_at).total_seconds())}"
            code = "" if step.exit_code is None else f"exit {step.exit_code}"
            click.echo(f"  {_safe(step.name):<8}{_safe(step.status):<11}attempt {step.attempt}  "
                       f"{took:<12}{code}")
    if workset.log_tail:
        click.echo("log tail:")
        for line in strip_control(workset.log_tail, keep_newlines=True).splitlines()[-20:]:
            click.echo(f"  {line}")
    if workset.recent_events:
        click.echo("recent events (wsmon events ID for all):")
        for event in workset.recent_events:
            click.echo(f"  {_event_line(event, now)}")


def _show_run(workset: Workset, now: datetime, row: Any) -> None:
    """Progress from the pipeline log, where the run lives, and what it cost (engine/progress)."""
    progress, actual = workset.progress, workset.actual
    if progress is not None:
        if progress.percent is not None:
            eta = f", ETA {_stamp_rel(progress.eta, now)}" if progress.eta else ""
            row("progress", f"{progress.steps_done} of {progress.steps_total} steps "
                            f"({progress.percent:g}%){eta}")
        else:
            row("progress", f"unknown ({progress.status})")
        if progress.last_progress_at:
            row("last step", _stamp_rel(progress.last_progress_at, now))
        if progress.running_rules:
            row("running", ", ".join(f"{rule} x{n}" for rule, n in progress.running_rules.items()))
        row("session", f"tmux {progress.session or '-'}")
        where = f" on {progress.log_host}" if progress.log_host else ""
        row("log", f"{progress.log_path or '-'}{where}")
    if actual is not None:
        when = "final" if actual.final else "so far"
        row("actual", f"${actual.cost_usd:,.2f} for {actual.vcpu_hours:,.1f} vCPU-hours, "
                      f"{actual.jobs} Slurm jobs ({when}; sacct: {actual.status})")


def _event_line(event: Event, now: datetime) -> str:
    src = event.from_state.value if event.from_state else "(new)"
    move = src if event.from_state == event.to_state else f"{src} -> {event.to_state.value}"
    return (f"{_stamp(event.at)}  {_safe(event.actor)}  {move}"
            + (f"  {_safe(event.reason)}" if event.reason else ""))


@click.command(epilog=EXIT_CODES_HELP)
@workset_argument
@json_option
@click.pass_obj
def show(obj: CliContext, workset_id: str, as_json: bool) -> None:
    """Everything the store knows about one workset."""
    with open_command_store(obj) as store:
        workset = _require_workset(store, workset_id)
        if as_json:
            _emit_json(workset.model_dump(mode="json"))
            return
        _show_text(workset, store, _now(store))


@click.command(epilog=EXIT_CODES_HELP)
@click.argument("workset_id", metavar="[ID]", required=False, shell_complete=_complete_workset_id)
@click.option("--actions", "actions", is_flag=True,
              help="Operator actions across every workset and alert (refused ones too), "
                   "instead of one workset's history.")
@click.option("--limit", type=click.IntRange(min=1), help="Only the first N events (with "
              "--actions: the last N actions, 500 when not given).")
@click.option("--since", "since", metavar="DURATION",
              help="With --actions: only the actions of the last DURATION (90s, 30m, 4h, 2d).")
@json_option
@click.pass_obj
def events(obj: CliContext, workset_id: str | None, actions: bool, limit: int | None,
           since: str | None, as_json: bool) -> None:
    """A workset's whole state history, oldest first; or, with --actions, every operator action.

    A workset's history also lists, at their time, the operator actions on it that changed
    nothing (refused, changed meanwhile), which the transitions alone do not show; --json
    gives the transitions only. Reasons are printed whole (wrapped to the terminal), never cut.
    """
    if actions == (workset_id is not None):
        raise CommandError("name a workset ID, or pass --actions (not both)", EXIT_USAGE)
    if since is not None and not actions:
        raise CommandError("--since goes with --actions", EXIT_USAGE)
    window = None
    if since is not None:
        from wsmon.operations import DurationError, parse_duration

        try:
            window = parse_duration(since)
        except DurationError as exc:
            raise CommandError(f"--since: {exc}", EXIT_USAGE) from None
    with open_command_store(obj) as store:
        if actions:
            from wsmon.engine.store.rules import OPERATOR_ACTIONS_LIMIT

            entries = store.list_operator_actions(
                since=None if window is None else _now(store) - window,
                limit=limit or OPERATOR_ACTIONS_LIMIT)
            if as_json:
                _emit_json([e.model_dump(mode="json") for e in entries])
                return
            if not entries:
                click.echo("no operator actions recorded")
                return
            _wrapped_table(["AT", "ACTOR", "ACTION", "TARGET", "OUTCOME", "REASON / DETAIL"],
                           [[_stamp(e.at), e.actor, e.action, e.target, e.outcome,
                             "; ".join(x for x in (e.reason, e.detail) if x)]
                            for e in reversed(entries)])  # oldest first, the newest last
            return
        assert workset_id is not None
        _require_workset(store, workset_id)
        history = store.events(workset_id, limit=limit)
        if as_json:
            _emit_json([e.model_dump(mode="json") for e in history])
            return
        rows = [(e.at, [str(e.seq), _stamp(e.at), e.actor,
                        e.from_state.value if e.from_state else "(new)", e.to_state.value,
                        e.reason]) for e in history]
        # a done action is already a transition above; the others changed nothing
        last = history[-1].at if limit and history else None
        rows += [(a.at, ["-", _stamp(a.at), a.actor, "", f"{a.action} {a.outcome}",
                         "; ".join(x for x in (a.reason, a.detail) if x)])
                 for a in store.list_operator_actions(workset_id=workset_id)
                 if a.outcome != "done" and (last is None or a.at <= last)]
        _wrapped_table(["SEQ", "AT", "ACTOR", "FROM", "TO", "REASON"],
                       [row for _at, row in sorted(rows, key=lambda r: r[0])])


def _wrapped_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    """A table whose last column is wrapped to the terminal width, never cut: every other column
    is short and fixed, the last one (a reason) carries what the operator needs to read."""
    import shutil
    import textwrap

    cells = [[_safe(c) for c in row] for row in rows]
    widths = [_cell_len(h) for h in headers[:-1]]
    for row in cells:
        for i, c in enumerate(row[:-1]):
            widths[i] = max(widths[i], _cell_len(c))
    columns = shutil.get_terminal_size((120, 24)).columns
    indent = sum(widths) + 2 * len(widths)
    if columns - indent < 30:  # too narrow beside the row: the reason goes under it
        indent = 4
    room = max(20, columns - indent)
    below = indent == 4

    def line(values: Sequence[str], last: str) -> str:
        parts = [v + " " * (widths[i] - _cell_len(v)) for i, v in enumerate(values)]
        return "  ".join([*parts, last]).rstrip()

    click.echo(line(headers[:-1], "" if below else headers[-1]))
    for row in cells:
        pieces = textwrap.wrap(row[-1], room, break_long_words=True,
                               break_on_hyphens=False) or [""]
        if below:
            click.echo(line(row[:-1], ""))
            pieces = [p for p in pieces if p]
        else:
            click.echo(line(row[:-1], pieces.pop(0)))
        for more in pieces:
            click.echo(" " * indent + more)


def _stdin_is_tty() -> bool:
    try:
        return sys.stdin.isatty()
    except (AttributeError, ValueError):
        return False


CONFIRM_HELP = ("\n\n\bWithout --yes: shows what it will do and asks on a terminal; refuses "
                "(exit 2) when stdin is not one.")
yes_option = click.option("--yes", "-y", is_flag=True,
                          help="Do not ask for confirmation (required when not on a terminal).")


def _operations(obj: CliContext, store: Store) -> Operations:
    from wsmon.engine.health import engine_stale_after
    from wsmon.operations import Operations, s3_validator

    settings = obj.settings()
    return Operations(store, actor(), validator=s3_validator(settings),
                      engine_stale_after=engine_stale_after(settings))


def _confirm(action: str, yes: bool, description: str) -> None:
    """Ask before an action that changes what runs, unless --yes; never hang a script."""
    if yes:
        return
    if not _stdin_is_tty():
        raise CommandError(f"{action} asks for confirmation: pass --yes when stdin is not a "
                           "terminal", EXIT_USAGE)
    click.echo(_safe(description))
    if not click.confirm(f"{ACTIONS[action].label}?", default=False):
        raise CommandError(f"{action}: not done (not confirmed)", EXIT_REFUSED)


def _report(outcome: Outcome) -> None:
    """The outcome as a line (and the findings behind it), and its exit code."""
    for line in outcome.finding_lines():
        click.echo(f"  {_safe(line)}", err=not outcome.done)
    if outcome.done:
        click.echo(_safe(outcome.line()))
        return
    raise CommandError(_safe(outcome.line()), outcome.exit_code)


def _shown_or_refused(ops: Operations, action: str, workset_id: str, reason: str,
                      **options: str) -> Workset:
    """The record the operator is about to decide on; a refusal is reported before asking."""
    workset = _require_workset(ops.store, workset_id)
    refusal = ops.check(action, workset)
    if refusal:
        # through the operation, so the refusal is audited (with the operator's reason) exactly
        # as the dashboard's would be
        _report(ops.run(action, workset, reason=reason, **options))
    return workset


def _describe(action: str, workset: Workset, store: Store, now: datetime) -> str:
    rule = ACTIONS[action]
    head = f"{workset.workset_id} is {workset.state.value}"
    if workset.state.holds_lease and workset.lock_owner:
        held = (_span((now - workset.lock_acquired_at).total_seconds())
                if workset.lock_acquired_at else "?")
        head += (f", held by {workset.lock_owner} for {held} (fence {workset.fence}, lease "
                 f"expires {_relative(workset.lock_expires_at, now)})")
        if workset.cluster_name:
            head += f" on cluster {workset.cluster_name}"
    return f"{head}.\nEffect on a running pipeline: {rule.running}.\nWritten: {rule.event}."


@click.command(epilog=EXIT_CODES_HELP + CONFIRM_HELP)
@workset_argument
@click.option("--reason", default="", help="Recorded in the history and the audit trail.")
@yes_option
@click.pass_obj
def release(obj: CliContext, workset_id: str, reason: str, yes: bool) -> None:
    """Take back the lock of a holder that is gone: the workset goes back to ready.

    Refused while the holder is alive (its lease is live and its engine's heartbeat is fresh): to
    end a running pipeline use `wsmon stop`. Once the holder's engine has gone silent, or its
    lease has expired, release sends the workset back to ready and bumps the fence; if the old
    holder comes back, its writes are refused and it ends its tmux session.
    """
    with open_command_store(obj) as store:
        ops = _operations(obj, store)
        workset = _shown_or_refused(ops, "release", workset_id, reason)
        _confirm("release", yes, _describe("release", workset, store, _now(store)))
        _report(ops.release(workset, reason))


@click.command(epilog=EXIT_CODES_HELP + CONFIRM_HELP)
@workset_argument
@click.option("--to", "to", type=click.Choice(["ignored", "error"]), required=True,
              help="Where it ends: ignored (left alone) or error (retry it later).")
@click.option("--reason", default="", help="Recorded in the history and the audit trail.")
@yes_option
@click.pass_obj
def stop(obj: CliContext, workset_id: str, to: str, reason: str, yes: bool) -> None:
    """End a running pipeline on purpose.

    One write, fenced on the lease shown, moves the workset straight to ignored or error (no
    engine can claim it in between); the holding engine then sends Ctrl-C to its tmux session
    and kills it after a grace period. The run's work so far is lost.
    """
    with open_command_store(obj) as store:
        ops = _operations(obj, store)
        workset = _shown_or_refused(ops, "stop", workset_id, reason, to=to)
        _confirm("stop", yes, _describe("stop", workset, store, _now(store))
                 + f"\nIt ends {to}; what the pipeline has done so far is lost.")
        _report(ops.stop(workset, to, reason))


@click.command(epilog=EXIT_CODES_HELP + CONFIRM_HELP)
@workset_argument
@click.option("--reason", default="", help="Recorded in the history (default: operator retry "
              "after N attempt(s)).")
@click.option("--rerun", is_flag=True, help="Re-run a complete workset (the re-run action).")
@yes_option
@click.pass_obj
def retry(obj: CliContext, workset_id: str, reason: str, rerun: bool, yes: bool) -> None:
    """Send a workset back to ready (from error, failed, retrying or ignored; --rerun: complete).

    Its S3 files are validated again first: only a valid workset goes back to ready. Still
    invalid: it stays where it is, the new findings replace the old ones and are printed (exit 1).
    """
    action = "rerun" if rerun else "retry"
    with open_command_store(obj) as store:
        ops = _operations(obj, store)
        workset = _shown_or_refused(ops, action, workset_id, reason)
        _confirm(action, yes, _describe(action, workset, store, _now(store))
                 + f"\nAttempts so far: {workset.attempts}.")
        _report(ops.run(action, workset, reason=reason))


@click.command(epilog=EXIT_CODES_HELP + CONFIRM_HELP)
@workset_argument
@click.option("--undo", is_flag=True, help="Un-ignore: re-validate, then back to ready.")
@click.option("--reason", default="", help="Recorded in the history.")
@yes_option
@click.pass_obj
def ignore(obj: CliContext, workset_id: str, undo: bool, reason: str, yes: bool) -> None:
    """Ignore a workset so no engine runs it (or --undo). A running one: use `wsmon stop --to ignored`."""
    action = "unignore" if undo else "ignore"
    with open_command_store(obj) as store:
        ops = _operations(obj, store)
        workset = _shown_or_refused(ops, action, workset_id, reason)
        _confirm(action, yes, _describe(action, workset, store, _now(store)))
        _report(ops.run(action, workset, reason=reason))


@click.command(epilog=EXIT_CODES_HELP)
@workset_argument
@click.argument("level", type=click.Choice(PRIORITY_NAMES))
@click.option("--reason", default="", help="Recorded in the history.")
@click.pass_obj
def priority(obj: CliContext, workset_id: str, level: str, reason: str) -> None:
    """Change a workset's priority (urgent, normal, low)."""
    with open_command_store(obj) as store:
        ops = _operations(obj, store)
        _report(ops.set_priority(_require_workset(store, workset_id), level, reason))


# -- alerts ------------------------------------------------------------------------------------

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


@click.command(epilog=EXIT_CODES_HELP)
@click.option("--all", "include_resolved", is_flag=True, help="Include resolved alerts (history).")
@json_option
@click.pass_obj
def alerts(obj: CliContext, include_resolved: bool, as_json: bool) -> None:
    """Firing, pending and acknowledged alerts (newest first), and active silences."""
    with open_command_store(obj) as store:
        found: list[Alert] = store.list_alerts(resolved_since=_EPOCH if include_resolved else None)
        now = _now(store)
        if as_json:
            _emit_json([a.model_dump(mode="json") for a in found])
            return
        if not found:
            click.echo("no alerts" if include_resolved else "no open alerts")
        else:
            _table(["ID", "SEVERITY", "STATE", "AGE", "RULE", "SUBJECT", "SUMMARY", "ACK BY"],
                   [[a.alert_id, a.severity.value, a.state.value,
                     _span((now - (a.fired_at or a.pending_since)).total_seconds()), a.rule,
                     a.subject, a.summary, a.acknowledged_by or "-"] for a in found])
        silences = store.list_silences(active_at=now)
        if silences:
            click.echo("")
            click.echo("active silences:")
            for s in silences:
                click.echo(f"  {_safe(s.silence_id)}  {_safe(s.rule or '*')} / "
                           f"{_safe(s.subject or '*')} until {_stamp_rel(s.ends_at, now)} by "
                           f"{_safe(s.created_by)}" + (f": {_safe(s.reason)}" if s.reason else ""))


def _require_alert(store: Store, alert_id: str) -> Alert:
    alert = store.get_alert(alert_id)
    if alert is None:
        raise CommandError(f"no alert {_safe(alert_id)!r} (see `wsmon alerts`)", EXIT_NOT_FOUND)
    return alert


class DurationType(click.ParamType):
    """The one duration syntax (wsmon.operations.durations): 90s, 30m, 4h, 2d."""

    name = "DURATION"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> timedelta:
        from wsmon.operations import DurationError, parse_duration

        if isinstance(value, timedelta):
            return value
        try:
            return parse_duration(str(value))
        except DurationError as exc:
            self.fail(str(exc), param, ctx)


@click.command(epilog=EXIT_CODES_HELP)
@click.argument("alert_id", metavar="ALERT", shell_complete=_complete_alert_id)
@click.option("--note", default="", help="Why, or who is on it (shown in the dashboard and notifications).")
@click.option("--expires", type=DurationType(), metavar="DURATION",
              help="Notify again if still firing after this long: 90s, 30m, 4h, 2d.")
@click.pass_obj
def ack(obj: CliContext, alert_id: str, note: str, expires: timedelta | None) -> None:
    """Acknowledge an alert: it stops notifying (until --expires)."""
    with open_command_store(obj) as store:
        ops = _operations(obj, store)
        _report(ops.acknowledge(_require_alert(store, alert_id), note, expires))


@click.command(epilog=EXIT_CODES_HELP)
@click.argument("alert_id", metavar="ALERT", shell_complete=_complete_alert_id)
@click.option("--reason", required=True, help="Why it is resolved (recorded in the audit trail).")
@click.pass_obj
def resolve(obj: CliContext, alert_id: str, reason: str) -> None:
    """Resolve an alert by hand. If its condition still holds, the engine opens a new alert."""
    with open_command_store(obj) as store:
        ops = _operations(obj, store)
        _report(ops.resolve(_require_alert(store, alert_id), reason))


@click.command(epilog=EXIT_CODES_HELP)
@click.option("--rule", help="Only this alert rule (default: every rule).")
@click.option("--subject", help="Only this subject, e.g. a workset id or cluster (default: every subject).")
@click.option("--for", "duration", type=DurationType(), required=True,
              help="How long: 90s, 30m, 4h, 2d.")
@click.option("--reason", default="", help="Shown with the silence.")
@click.pass_obj
def silence(obj: CliContext, rule: str | None, subject: str | None, duration: timedelta,
            reason: str) -> None:
    """Silence matching alerts for a while (they still show, they do not notify)."""
    with open_command_store(obj) as store:
        _report(_operations(obj, store).silence(rule, subject, duration, reason))


@click.command(epilog=EXIT_CODES_HELP)
@click.argument("silence_id", metavar="SILENCE")
@click.option("--reason", default="", help="Recorded in the audit trail.")
@click.pass_obj
def unsilence(obj: CliContext, silence_id: str, reason: str) -> None:
    """End a silence now (its id is listed by `wsmon alerts`)."""
    with open_command_store(obj) as store:
        _report(_operations(obj, store).unsilence(silence_id, reason))


# -- monitors ----------------------------------------------------------------------------------

def monitor_stale_after(obj: CliContext) -> timedelta:
    """A monitor not seen for three heartbeat intervals (plus clock skew) is presumed gone."""
    from wsmon.engine.health import engine_stale_after

    return engine_stale_after(obj.settings())


@click.command(epilog=EXIT_CODES_HELP)
@json_option
@click.option("--check", is_flag=True, help="The same as `wsmon health`: one line, Nagios exit code.")
@click.option("--forget", "forget_id", metavar="ID",
              help="Remove a monitor that is gone for good (audited); its heartbeat alert resolves.")
@click.option("--reason", default="", help="With --forget: recorded in the audit trail.")
@click.pass_obj
def monitors(obj: CliContext, as_json: bool, check: bool, forget_id: str | None, reason: str) -> None:
    """Engines, dashboards and CLIs the store has seen, alive or stale."""
    if check:
        from wsmon.cli.health_cmd import run_health

        raise SystemExit(run_health(obj, as_json))
    if forget_id is not None:
        _forget_monitor(obj, forget_id, reason)
        return
    with open_command_store(obj) as store:
        now = _now(store)
        stale_after = monitor_stale_after(obj)
        seen: list[MonitorInfo] = store.list_monitors()
        if as_json:
            _emit_json([{**m.model_dump(mode="json"),
                         "alive": now - m.last_seen <= stale_after,
                         "seconds_since_seen": round((now - m.last_seen).total_seconds(), 3)}
                        for m in seen])
            return
        if not seen:
            click.echo("no monitors have reported to this store (is an engine running? "
                       "start one with `wsmon --headless`)")
            return
        _table(["MONITOR", "ROLE", "HOST", "PID", "VERSION", "STATUS", "LAST SEEN", "UP SINCE"],
               [[m.monitor_id, m.role, m.host, str(m.pid), m.version,
                 "alive" if now - m.last_seen <= stale_after else "stale",
                 _relative(m.last_seen, now), _stamp(m.started_at)] for m in seen])
        _discovery_lines(seen, now)


def _discovery_lines(seen: list[MonitorInfo], now: datetime) -> None:
    """Per engine with S3 events (heartbeat details, engine/s3/events.py): each source's mode
    (events, or fallback to polling while its queue cannot be read) and its last event."""
    for m in seen:
        for q in (m.details or {}).get("discovery") or []:
            if not isinstance(q, dict):
                continue
            last = q.get("last_event_at")
            when = _relative(parse_iso(str(last)), now) if last else "none yet"
            click.echo(f"{_safe(m.monitor_id)}: {_safe(q.get('source', '?'))} via queue "
                       f"{_safe(q.get('queue', '?'))}: mode {_safe(q.get('mode', '?'))}, "
                       f"last event {when}")


def _forget_monitor(obj: CliContext, monitor_id: str, reason: str) -> None:
    """``monitors --forget ID``: refused while the monitor is alive (it would only come back)."""
    from wsmon.engine.health import forget_monitor
    from wsmon.operations import audit
    from wsmon.operations.outcome import Outcome, Result

    who = actor()
    with open_command_store(obj) as store:
        now = _now(store)
        found = next((m for m in store.list_monitors() if m.monitor_id == monitor_id), None)
        if found is None:
            outcome = Outcome("forget_monitor", monitor_id, Result.NOT_FOUND,
                              f"no monitor {monitor_id!r} in the store")
        elif now - found.last_seen <= monitor_stale_after(obj):
            outcome = Outcome("forget_monitor", monitor_id, Result.REFUSED,
                              f"monitor {monitor_id!r} is alive (last seen "
                              f"{_relative(found.last_seen, now)}): stop it instead")
        else:
            resolved = forget_monitor(store, found, actor=who,
                                      reason=f"monitor forgotten by {who}" + (f": {reason}" if reason else ""),
                                      now=now)
            outcome = Outcome("forget_monitor", monitor_id, Result.DONE,
                              f"forgot monitor {monitor_id!r} (last seen "
                              f"{_relative(found.last_seen, now)})"
                              + (f"; resolved alert {', '.join(resolved)}" if resolved else ""))
        audit.record(store, outcome, who, reason, now)
    click.echo(_safe(outcome.verdict()))
    if not outcome.done:
        raise SystemExit(outcome.exit_code)


# -- completion --------------------------------------------------------------------------------

@click.command()
@click.argument("shell", type=click.Choice(["bash", "zsh", "fish"]), required=False)
def completion(shell: str | None) -> None:
    """Print the shell completion script (bash, zsh or fish).

    \b
    bash:  eval "$(wsmon completion bash)"       (add to ~/.bashrc)
    zsh:   eval "$(wsmon completion zsh)"        (add to ~/.zshrc)
    fish:  wsmon completion fish > ~/.config/fish/completions/wsmon.fish
    """
    import os

    from click.shell_completion import get_completion_class

    from wsmon.cli.main import cli

    if shell is None:
        shell = os.path.basename(os.environ.get("SHELL", "bash"))
        if shell not in ("bash", "zsh", "fish"):
            raise CommandError(f"cannot tell your shell from $SHELL ({_safe(shell)!r}): "
                           "name it, e.g. `wsmon completion bash`", EXIT_USAGE)
    comp_cls = get_completion_class(shell)
    assert comp_cls is not None  # the Choice above only admits shells click knows
    click.echo(comp_cls(cli, {}, "wsmon", "_WSMON_COMPLETE").source())
