"""The write side of /api/v1: every operator action through ``wsmon.operations`` (the one rule
set the dashboard and the CLI use), recorded as ``api:<token name>@<client address>``.

The client sends what it saw (``seen``); the operation re-reads the record and refuses when the
store no longer holds that. Outcome -> HTTP: done 200; refused 409 with the reason; changed
meanwhile 409 with the current record; not found 404.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path
from fastapi.responses import JSONResponse

from wsmon.engine.health import engine_stale_after
from wsmon.api.auth import Principal
from wsmon.api.context import ApiContext, api_context, writer
from wsmon.api.errors import ApiError, error_body
from wsmon.api.schemas import (
    AckAction,
    ActionResult,
    PriorityAction,
    ResolveAction,
    SilenceRequest,
    StopAction,
    WorksetAction,
)
from wsmon.core.models import Alert, Workset
from wsmon.operations import (
    ACTIONS,
    DurationError,
    Operations,
    Outcome,
    Result,
    parse_duration,
    s3_validator,
)

router = APIRouter()
Ctx = Annotated[ApiContext, Depends(api_context)]
Caller = Annotated[Principal, Depends(writer)]
WorksetId = Annotated[str, Path(min_length=1, max_length=1024)]
AlertId = Annotated[str, Path(min_length=1, max_length=1024)]

_STATUS = {Result.DONE: 200, Result.REFUSED: 409, Result.CHANGED: 409, Result.NOT_FOUND: 404}
_RESPONSES: dict[int | str, dict[str, Any]] = {
    409: {"description": "Refused (the reason), or changed meanwhile (with the current record)"},
    404: {"description": "No such workset or alert"},
    401: {"description": "No token, or an unknown one"},
    403: {"description": "The token may only read, or the server is read-only"},
}


def _operations(ctx: ApiContext, caller: Principal) -> Operations:
    # the S3 client is made only when an action re-validates (retry, rerun, unignore)
    return Operations(ctx.store, caller.actor,
                      validator=s3_validator(ctx.settings, ctx.s3_client),
                      engine_stale_after=engine_stale_after(ctx.settings))


def _record(value: Any) -> dict[str, Any] | None:
    if value is None:
        return None
    dump = getattr(value, "model_dump", None)
    return dump(mode="json") if dump else None


def _described(action: str) -> str:
    """The action's rule, in the words of the operations module (docs/operator-guide.md's table)."""
    rule = ACTIONS[action]
    return (f"Allowed from: {rule.states_text}. Running pipeline: {rule.running}. "
            f"Writes: {rule.event}.")


def respond(outcome: Outcome) -> JSONResponse:
    body = ActionResult(action=outcome.action, key=outcome.key, result=outcome.result.value,
                        message=outcome.message, current=_record(outcome.current),
                        findings=list(outcome.findings)).model_dump(mode="json")
    status = _STATUS[outcome.result]
    if status != 200:
        code = {Result.REFUSED: "refused", Result.CHANGED: "changed",
                Result.NOT_FOUND: "not_found"}[outcome.result]
        body = {**error_body(code, outcome.message), **body}
    return JSONResponse(body, status_code=status)


def _shown(ctx: ApiContext, workset_id: str, request: WorksetAction, *, needs_fence: bool) -> Workset:
    """The record as the client saw it: the stored one with what the client says it saw."""
    current = ctx.store.get_workset(workset_id)
    if current is None:
        raise ApiError(404, "not_found", "no such workset", workset_id=workset_id)
    seen = request.seen
    if needs_fence and seen.fence is None:
        raise ApiError(422, "invalid_request", "seen.fence is required: name the lease you saw "
                                               "(GET /worksets/{id} shows it)")
    update: dict[str, Any] = {"state": seen.state}
    if seen.fence is not None:
        update["fence"] = seen.fence
    if seen.lock_owner is not None:
        update["lock_owner"] = seen.lock_owner
    if seen.priority is not None:
        update["priority"] = seen.priority
    return current.model_copy(update=update)


def _workset_route(action: str, *, needs_fence: bool = False) -> None:
    @router.post(f"/worksets/{{workset_id}}/{action}", response_model=ActionResult,
                 responses=_RESPONSES, summary=f"{ACTIONS[action].label} a workset",
                 description=_described(action), name=f"workset_{action}")
    def handler(ctx: Ctx, caller: Caller, workset_id: WorksetId, body: WorksetAction) -> JSONResponse:
        shown = _shown(ctx, workset_id, body, needs_fence=needs_fence)
        return respond(_operations(ctx, caller).run(action, shown, reason=body.reason))


for _action in ("retry", "rerun", "ignore", "unignore"):
    _workset_route(_action)
_workset_route("release", needs_fence=True)


@router.post("/worksets/{workset_id}/stop", response_model=ActionResult, responses=_RESPONSES,
             description=_described("stop"),
             summary="Stop a running workset (ends in ignored or error)")
def stop(ctx: Ctx, caller: Caller, workset_id: WorksetId, body: StopAction) -> JSONResponse:
    shown = _shown(ctx, workset_id, body, needs_fence=True)
    return respond(_operations(ctx, caller).stop(shown, body.to, reason=body.reason))


@router.post("/worksets/{workset_id}/priority", response_model=ActionResult, responses=_RESPONSES,
             description=_described("priority"),
             summary="Change a workset's priority")
def priority(ctx: Ctx, caller: Caller, workset_id: WorksetId, body: PriorityAction) -> JSONResponse:
    shown = _shown(ctx, workset_id, body, needs_fence=False)
    return respond(_operations(ctx, caller).set_priority(shown, body.priority, reason=body.reason))


def _shown_alert(ctx: ApiContext, alert_id: str, state: Any) -> Alert:
    current = ctx.store.get_alert(alert_id)
    if current is None:
        raise ApiError(404, "not_found", "no such alert", alert_id=alert_id)
    return current.model_copy(update={"state": state})


def _duration(text: str, field: str):
    try:
        return parse_duration(text)
    except DurationError as exc:
        raise ApiError(422, "invalid_request", f"{field}: {exc}") from None


@router.post("/alerts/{alert_id}/ack", response_model=ActionResult, responses=_RESPONSES,
             description=_described("ack"),
             summary="Acknowledge an alert")
def ack(ctx: Ctx, caller: Caller, alert_id: AlertId, body: AckAction) -> JSONResponse:
    shown = _shown_alert(ctx, alert_id, body.seen.state)
    expires = _duration(body.expires, "expires") if body.expires else None
    return respond(_operations(ctx, caller).acknowledge(shown, body.note, expires))


@router.post("/alerts/{alert_id}/resolve", response_model=ActionResult, responses=_RESPONSES,
             description=_described("resolve"),
             summary="Resolve an alert by hand (a reason is required)")
def resolve(ctx: Ctx, caller: Caller, alert_id: AlertId, body: ResolveAction) -> JSONResponse:
    shown = _shown_alert(ctx, alert_id, body.seen.state)
    return respond(_operations(ctx, caller).resolve(shown, body.reason))


@router.post("/silences", response_model=ActionResult, responses=_RESPONSES,
             description=_described("silence"),
             summary="Silence alerts of a rule and/or subject for a while")
def silence(ctx: Ctx, caller: Caller, body: SilenceRequest) -> JSONResponse:
    duration = _duration(body.duration, "duration")
    return respond(_operations(ctx, caller).silence(body.rule, body.subject, duration, body.reason))
