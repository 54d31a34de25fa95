"""The operator's scriptable companion to the dashboard.

Every command here goes through the same store operations the dashboard uses and records the
operator as ``user@host`` (``wsmon.cli.main.actor()``), so the history shows who did what whichever face
they used. Text output is for people (untrusted text passes ``strip_control``); ``--json`` prints
raw values for scripts (``json.dumps`` escapes every control character).

Exit codes are part of the interface (wsmon/cli/exits.py, documented in docs/cli.md):
0 ok, 1 refused or failed, 2 usage, 3 not found, 4 store cannot be opened or reached.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Sequence
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

import click
from click.shell_completion import CompletionItem

from wsmon.cli.main import CliContext, actor
from wsmon.cli.exits import (
    EXIT_CODES_HELP,
    EXIT_NOT_FOUND,
    EXIT_REFUSED,
    EXIT_USAGE,
)
from wsmon.cli.exits import CommandError, open_command_store
from wsmon.core.models import Priority, WorksetState
from wsmon.core.textsafe import strip_control, truncate

if TYPE_CHECKING:
    from wsmon.engine.store import Store
    from wsmon.core.models import Alert, Event, MonitorInfo, Workset

STATE_NAMES = [s.value for s in WorksetState]
PRIORITY_NAMES = [p.value for p in Priority]
# An operator retry sends a workset back to ready from these; locked/in_progress need a release.
RETRYABLE_STATES = frozenset({WorksetState.ERROR, WorksetState.FAILED, WorksetState.RETRYING,
                              WorksetState.IGNORED})


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
    """3s, 4m, 2h05m, 3d04h: compact and unambiguous."""
    seconds = int(abs(seconds))
    if seconds < 60:
        return f"{seconds}s"
    minutes, _ = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours}h{minutes:02d}m"
    days, hours = divmod(hours, 24)
    return f"{days}d{hours:02d}h"


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
    from wsmon.config.settings import load_settings
    from wsmon.engine.store import open_store

    root = ctx.find_root()
    store_url = root.params.get("store_url")
    overrides = {"store": {"url": store_url}} if store_url else {}
    settings = load_settings(root.params.get("config_path"), overrides)
    return open_store(settings.store_url, create=False, aws_profile=settings.aws.profile)


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
            ["ID", "STATE", "PRIORITY", "CUSTOMER", "CLUSTER", "AGE", "TRIES", "HOLDER"],
            [[w.workset_id, w.state.value, w.priority.value, w.customer_id or "-",
              w.cluster_name or "-", _span((now - w.created_at).total_seconds()), str(w.attempts),
              _holder(w, store, now)] for w in items],
        )


def _show_text(workset: Workset, store: Store, now: datetime) -> None:
    def row(label: str, value: object) -> None:
        click.echo(f"{label:<10}{_safe(value)}")

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
    row("created", _stamp_rel(workset.created_at, now))
    row("updated", _stamp_rel(workset.updated_at, now))
    if workset.schedule_reason:
        row("schedule", workset.schedule_reason)
    if workset.pipeline_dir:
        row("pipeline", workset.pipeline_dir)
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
@workset_argument
@click.option("--limit", type=click.IntRange(min=1), help="Only the first N events.")
@json_option
@click.pass_obj
def events(obj: CliContext, workset_id: str, limit: int | None, as_json: bool) -> None:
    """A workset's whole state history, oldest first."""
    with open_command_store(obj) as store:
        _require_workset(store, workset_id)
        history = store.events(workset_id, limit=limit)
        if as_json:
            _emit_json([e.model_dump(mode="json") for e in history])
            return
        _table(["SEQ", "AT", "ACTOR", "FROM", "TO", "REASON"],
               [[str(e.seq), _stamp(e.at), e.actor,
                 e.from_state.value if e.from_state else "(new)", e.to_state.value, e.reason]
                for e in history], max_width=72)


def _stdin_is_tty() -> bool:
    try:
        return sys.stdin.isatty()
    except (AttributeError, ValueError):
        return False


@click.command(epilog=EXIT_CODES_HELP + "\n\n\bWithout --yes: asks on a terminal; refuses (exit 2) when stdin is not one.")
@workset_argument
@click.option("--reason", default="operator release", show_default=True,
              help="Recorded in the workset's history.")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation (required when not on a terminal).")
@click.pass_obj
def release(obj: CliContext, workset_id: str, reason: str, yes: bool) -> None:
    """Force-release a workset's lock: it goes back to ready and may run again.

    The holder's fence is bumped, so every later write by the holder is refused. A pipeline the
    holder already started is not stopped by this.
    """
    with open_command_store(obj) as store:
        workset = _require_workset(store, workset_id)
        now = _now(store)
        if not workset.state.holds_lease:
            raise CommandError(f"{_safe(workset_id)!r} is {workset.state.value}: no lock to release")
        if not yes:
            if not _stdin_is_tty():
                raise CommandError("release changes who runs a workset: pass --yes to confirm when "
                               "stdin is not a terminal", EXIT_USAGE)
            held = _span((now - workset.lock_acquired_at).total_seconds()) if workset.lock_acquired_at else "?"
            expiry = _relative(workset.lock_expires_at, now)
            stale = " (stale: its holder looks dead)" if _lease_is_stale(workset, store, now) else ""
            click.echo(
                f"{_safe(workset_id)} is {workset.state.value}, held by {_safe(workset.lock_owner)} "
                f"for {held} (fence {workset.fence}, lease expires {expiry}){stale}.\n"
                "Releasing sends it back to ready and fences the holder out: its later writes are "
                "refused and the workset may run again, here or elsewhere. A pipeline the holder "
                "already started keeps running until someone stops it."
            )
            if not click.confirm("Release?", default=False):
                raise CommandError("not released", EXIT_REFUSED)
        from wsmon.engine.store import LockChanged

        try:
            # The fence shown (or checked) above: if the lease changed hands since, release nothing.
            after = store.force_release(workset_id, actor=actor(), reason=reason,
                                        expected_fence=workset.fence)
        except LockChanged as exc:
            raise CommandError(f"not released: {_safe(exc)}", EXIT_REFUSED) from None
        click.echo(f"released {_safe(workset_id)} (was held by {_safe(workset.lock_owner)}); "
                   f"now {after.state.value}, fence {after.fence}")


@click.command(epilog=EXIT_CODES_HELP)
@workset_argument
@click.option("--reason", help="Recorded in the history (default: operator retry after N attempt(s)).")
@click.option("--rerun", is_flag=True, help="Also allow re-running a complete workset.")
@click.pass_obj
def retry(obj: CliContext, workset_id: str, reason: str | None, rerun: bool) -> None:
    """Send a workset back to ready (from error, failed, retrying or ignored)."""
    with open_command_store(obj) as store:
        workset = _require_workset(store, workset_id)
        now = _now(store)
        state = workset.state
        if state is WorksetState.READY:
            click.echo(f"{_safe(workset_id)} is already ready; nothing to do")
            return
        if state.holds_lease:
            hint = (f"its lease held by {_safe(workset.lock_owner)} is stale"
                    if _lease_is_stale(workset, store, now)
                    else f"it is held by {_safe(workset.lock_owner)}")
            raise CommandError(f"{_safe(workset_id)!r} is {state.value} and {hint}: "
                           f"use `wsmon release` to take the lock back first")
        if state is WorksetState.COMPLETE and not rerun:
            raise CommandError(f"{_safe(workset_id)!r} is complete: pass --rerun to run it again")
        if state not in RETRYABLE_STATES and state is not WorksetState.COMPLETE:
            raise CommandError(f"{_safe(workset_id)!r} is {state.value}: cannot retry from there")
        reason = reason or f"operator retry after {workset.attempts} attempt(s)"
        after = store.update_state(workset_id, WorksetState.READY, reason=reason, actor=actor(),
                                   expected_state=state, retry_after=None)
        click.echo(f"{_safe(workset_id)}: {state.value} -> {after.state.value} "
                   f"(attempts so far: {workset.attempts})")


@click.command(epilog=EXIT_CODES_HELP)
@workset_argument
@click.option("--undo", is_flag=True, help="Un-ignore: back to ready.")
@click.option("--reason", help="Recorded in the history.")
@click.pass_obj
def ignore(obj: CliContext, workset_id: str, undo: bool, reason: str | None) -> None:
    """Ignore a workset so no engine runs it (or --undo)."""
    with open_command_store(obj) as store:
        workset = _require_workset(store, workset_id)
        now = _now(store)
        state = workset.state
        if undo:
            if state is not WorksetState.IGNORED:
                raise CommandError(f"{_safe(workset_id)!r} is {state.value}, not ignored")
            store.update_state(workset_id, WorksetState.READY, reason=reason or "un-ignored by operator",
                               actor=actor(), expected_state=state)
            click.echo(f"{_safe(workset_id)}: ignored -> ready")
            return
        if state is WorksetState.IGNORED:
            click.echo(f"{_safe(workset_id)} is already ignored; nothing to do")
            return
        if state.holds_lease and not _lease_is_stale(workset, store, now):
            raise CommandError(f"{_safe(workset_id)!r} is {state.value}, held by "
                           f"{_safe(workset.lock_owner)}: use `wsmon release` first")
        store.update_state(workset_id, WorksetState.IGNORED, reason=reason or "ignored by operator",
                           actor=actor(), expected_state=state)
        click.echo(f"{_safe(workset_id)}: {state.value} -> ignored")


@click.command(epilog=EXIT_CODES_HELP)
@workset_argument
@click.argument("level", type=click.Choice(PRIORITY_NAMES))
@click.option("--reason", default="", help="Recorded in the history.")
@click.pass_obj
def priority(obj: CliContext, workset_id: str, level: str, reason: str) -> None:
    """Change a workset's priority (urgent, normal, low)."""
    with open_command_store(obj) as store:
        workset = _require_workset(store, workset_id)
        if workset.priority.value == level:
            click.echo(f"{_safe(workset_id)} is already {level}; nothing to do")
            return
        store.set_priority(workset_id, level, actor=actor(),
                           reason=reason or f"priority {workset.priority.value} -> {level}")
        click.echo(f"{_safe(workset_id)}: priority {workset.priority.value} -> {level}")


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
                click.echo(f"  {_safe(s.rule or '*')} / {_safe(s.subject or '*')} until "
                           f"{_stamp_rel(s.ends_at, now)} by {_safe(s.created_by)}"
                           + (f": {_safe(s.reason)}" if s.reason else ""))


@click.command(epilog=EXIT_CODES_HELP)
@click.argument("alert_id", metavar="ALERT", shell_complete=_complete_alert_id)
@click.option("--note", help="Why, or who is on it (shown in the dashboard and notifications).")
@click.option("--expires", type=click.FloatRange(min=0, min_open=True), metavar="MINUTES",
              help="Notify again if still firing after this many minutes.")
@click.pass_obj
def ack(obj: CliContext, alert_id: str, note: str | None, expires: float | None) -> None:
    """Acknowledge an alert: it stops notifying (until --expires)."""
    with open_command_store(obj) as store:
        if store.get_alert(alert_id) is None:
            raise CommandError(f"no alert {_safe(alert_id)!r} (see `wsmon alerts`)", EXIT_NOT_FOUND)
        expires_at = _now(store) + timedelta(minutes=expires) if expires else None
        after = store.ack_alert(alert_id, actor=actor(), note=note, expires_at=expires_at)
        until = f" until {_stamp(after.ack_expires_at)}" if after.ack_expires_at else ""
        click.echo(f"acknowledged {_safe(alert_id)} ({_safe(after.rule)}: {_safe(after.subject)}){until}")


_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)([smhdw])")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def parse_duration(text: str) -> timedelta:
    """``90s``, ``30m``, ``2h``, ``1h30m``, ``1d``; a bare number means minutes."""
    value = text.strip().lower()
    if re.fullmatch(r"\d+(?:\.\d+)?", value):
        seconds = float(value) * 60
    else:
        parts = _DURATION_PART.findall(value)
        if not parts or "".join(n + u for n, u in parts) != value:
            raise ValueError(f"cannot read duration {text!r}: use e.g. 90s, 30m, 2h, 1h30m, 1d")
        seconds = sum(float(n) * _UNIT_SECONDS[u] for n, u in parts)
    if seconds <= 0:
        raise ValueError("duration must be positive")
    return timedelta(seconds=seconds)


class DurationType(click.ParamType):
    name = "DURATION"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> timedelta:
        if isinstance(value, timedelta):
            return value
        try:
            return parse_duration(str(value))
        except ValueError as exc:
            self.fail(str(exc), param, ctx)


@click.command(epilog=EXIT_CODES_HELP)
@click.option("--rule", help="Only this alert rule (default: every rule).")
@click.option("--subject", help="Only this subject, e.g. a workset id or cluster (default: every subject).")
@click.option("--for", "duration", type=DurationType(), required=True,
              help="How long: 90s, 30m, 2h, 1h30m, 1d (a bare number is minutes).")
@click.option("--reason", default="", help="Shown with the silence.")
@click.pass_obj
def silence(obj: CliContext, rule: str | None, subject: str | None, duration: timedelta,
            reason: str) -> None:
    """Silence matching alerts for a while (they still show, they do not notify)."""
    with open_command_store(obj) as store:
        ends_at = _now(store) + duration
        created = store.silence(actor=actor(), ends_at=ends_at, rule=rule, subject=subject,
                                reason=reason)
        scope = f"rule {rule or '*'}, subject {subject or '*'}"
        if not rule and not subject:
            scope = "every alert"
        click.echo(f"silenced {_safe(scope)} until {_stamp(created.ends_at)} (id {_safe(created.silence_id)})")


# -- monitors ----------------------------------------------------------------------------------

def monitor_stale_after(obj: CliContext) -> timedelta:
    """A monitor not seen for three heartbeat intervals (plus clock skew) is presumed gone."""
    settings = obj.settings()
    rule = settings.alerts.engine_heartbeat  # same judgement as the "no engine heartbeat" alert
    interval = rule.interval_seconds or settings.store.heartbeat_seconds
    return timedelta(seconds=rule.threshold * interval + settings.store.max_clock_skew_seconds)


@click.command(epilog=EXIT_CODES_HELP)
@json_option
@click.pass_obj
def monitors(obj: CliContext, as_json: bool) -> None:
    """Engines, dashboards and CLIs the store has seen, alive or stale."""
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
