"""Carrying out a sync decision (``sync_rules.decide``) against the store, and S3 through the
sentinel writer: register, import, ignore, a retry request, a validation's findings, a folder that
could not be read, and rewriting sentinels that disagree with the store."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime
from typing import Any

from wsmon.core.clock import Clock
from wsmon.core.models import Workset, WorksetState
from wsmon.core.textsafe import truncate
from wsmon.engine import diagnostics
from wsmon.engine.s3.listing import FolderSnapshot
from wsmon.engine.s3.report import PollReport
from wsmon.engine.s3.sentinels import STATE_SENTINEL
from wsmon.engine.s3.sync_rules import Action, Decision, mirror_still_needed
from wsmon.engine.s3.writeback import SentinelWriter
from wsmon.engine.store.base import IllegalTransition, StateConflict, Store
from wsmon.engine.worksetfiles import ValidationReport, finding

S = WorksetState
S3_ACTOR = "s3"
# What validation adds to a workset record (parsed files, findings, estimate) may not pass this
# many bytes of JSON: DynamoDB refuses an item over 400 KB, and a record that can never be
# written would be validated again every poll. Findings are capped per folder already; this
# catches the rest (a multi-megabyte ``notes:``, say).
MAX_VALIDATION_RECORD_BYTES = 300_000


def refuse_oversize(result: ValidationReport) -> ValidationReport:
    """``result`` itself, or (too large to store) a report with one WS-DAT-018 finding."""
    size = len(json.dumps({"work": result.work, "info": result.info, "estimate": result.estimate,
                           "findings": result.findings_dicts()}, default=str))
    if size <= MAX_VALIDATION_RECORD_BYTES:
        return result
    refused = ValidationReport(target=result.target, workset_id=result.workset_id)
    refused.findings.append(finding(
        "WS-DAT-018", f"what validation found takes {size:,} bytes; a workset record holds at "
        f"most {MAX_VALIDATION_RECORD_BYTES:,} (first finding: "
        f"{truncate(result.findings[0].message, 200) if result.findings else 'none'})"))
    return refused


class DecisionApplier:
    """Applies decisions for one ``S3Source``; ``remember`` keeps the source's view of the store
    current with every record a write returns."""

    def __init__(self, store: Store, *, clock: Clock, monitor_id: str,
                 remember: Callable[[Workset | None], Workset | None], writer: SentinelWriter) -> None:
        self.store = store
        self.clock = clock
        self.monitor_id = monitor_id
        self.remember = remember
        self.writer = writer

    def apply(self, decision: Decision, snap: FolderSnapshot, ws: Workset | None,
              report: PollReport) -> None:
        """Everything a decision does before validation (validating ones continue in
        ``apply_validation``)."""
        action = decision.action
        if action is Action.FOLDER_ERROR:
            self._folder_error(snap, ws, report)
            return
        if action is Action.WAIT:
            report.waiting.append({"workset_id": snap.name, "why": decision.why or ""})
            return
        if action is Action.IMPORT:
            assert decision.import_state is not None
            self._import(snap, decision.import_state, report)
            return
        if ws is None:
            return
        if decision.reappeared:
            ws = self.remember(self.store.update_fields(ws.workset_id, actor=self.monitor_id,
                                                        s3_missing=False))
            report.reappeared.append(ws.workset_id)
        if action is Action.IGNORE:
            self.transition(ws, S.IGNORED, "daylily.ignore found in S3", report, actor=S3_ACTOR)
        elif action is Action.MIRROR:
            self._mirror_if_still_needed(snap, ws, report)

    def apply_validation(self, decision: Decision, snap: FolderSnapshot, ws: Workset | None,
                         result: ValidationReport, report: PollReport) -> None:
        result = refuse_oversize(result)
        if decision.action is Action.REGISTER:
            self._register_new(snap, result, report)
        elif ws is not None and decision.action is Action.FILL_IN:
            self._fill_in_validation(ws, result, report)
        elif ws is not None and decision.action is Action.RETRY:
            self._apply_retry_request(snap, ws, result, report)

    def _mirror_if_still_needed(self, snap: FolderSnapshot, ws: Workset, report: PollReport) -> None:
        # ``ws`` was read when the poll started; an engine may have claimed or finished the
        # workset since. Mirroring that stale view would write e.g. daylily.ready over a
        # running workset, so decide again on the current record (one read, mismatches only).
        current = self.remember(self.store.get_workset(ws.workset_id))
        if current is not None and mirror_still_needed(snap, ws, current):
            self.writer.mirror_quietly(current, report)

    def _folder_error(self, snap: FolderSnapshot, ws: Workset | None, report: PollReport) -> None:
        code = diagnostics.aws_code(snap.error_code)
        message = f"{snap.error_code} reading {snap.uri}: {truncate(snap.error_message or '', 300)}"
        report.errors.append({"workset_id": snap.name, "code": code, "message": message})
        item = finding(code, message, severity="error").to_dict()
        if ws is None:
            ws = self.remember(self._register(snap, state=S.ERROR, state_at=self.clock.now(),
                                               reason=f"{code}: {message}", error_code=code,
                                               error_details=message, findings=[item]))
            if ws is not None:
                report.invalid.append({"workset_id": snap.name, "code": code, "message": message})
                self.writer.mirror_quietly(ws, report)
        elif ws.state == S.READY:
            self.transition(ws, S.ERROR, f"{code}: {message}", report, error_code=code,
                             error_details=message, findings=[item])

    def _register(self, snap: FolderSnapshot, *, state: WorksetState, state_at: datetime,
                  reason: str, priority: str = "normal", customer_id: str | None = None,
                  metadata: dict[str, Any] | None = None, **fields: Any) -> Workset | None:
        meta = {"s3_uri": snap.uri, **(metadata or {})}
        created = self.store.register_workset(
            snap.name, snap.bucket, snap.prefix, priority=priority, metadata=meta,
            customer_id=customer_id, state=state, state_at=state_at, actor=self.monitor_id,
            reason=reason, **fields)
        if not created:
            return None
        return self.store.get_workset(snap.name)

    def _import(self, snap: FolderSnapshot, state: WorksetState, report: PollReport) -> None:
        sentinel = snap.sentinels[STATE_SENTINEL[state]]
        when = min(sentinel.effective_time, self.clock.now())
        fields: dict[str, Any] = {}
        if state == S.ERROR:
            detail = sentinel.detail or ""
            fields["error_code"] = diagnostics.classify(detail).code if detail else diagnostics.UNKNOWN_CODE
            fields["error_details"] = detail or None
        ws = self._register(snap, state=state, state_at=when,
                            reason=f"imported from S3 sentinel daylily.{STATE_SENTINEL[state]}",
                            metadata={"imported": True}, **fields)
        if self.remember(ws) is not None:
            report.imported.append({"workset_id": snap.name, "state": state.value})

    def _register_new(self, snap: FolderSnapshot, result: ValidationReport, report: PollReport) -> None:
        info = result.info or {}
        metadata = {"work": result.work, "info": result.info}
        common = {"priority": info.get("priority") or "normal", "customer_id": info.get("customer_id"),
                  "metadata": metadata, "findings": result.findings_dicts(),
                  "estimate": result.estimate}
        if info.get("max_retries") is not None:
            common["max_retries"] = info["max_retries"]
        now = self.clock.now()
        if result.valid:
            ready = snap.sentinels["ready"]
            ws = self._register(snap, state=S.READY, state_at=min(ready.effective_time, now),
                                reason="registered from daylily.ready", **common)
            if self.remember(ws) is not None:
                report.registered.append(snap.name)
            return
        first = result.first_error
        assert first is not None
        ws = self._register(snap, state=S.ERROR, state_at=now,
                            reason=f"validation failed: {first.code}: {truncate(first.message, 300)}",
                            error_code=first.code, error_details=first.message, **common)
        if self.remember(ws) is not None:
            report.invalid.append({"workset_id": snap.name, "code": first.code, "message": first.message})
            self.writer.mirror_quietly(ws, report)

    def _fill_in_validation(self, ws: Workset, result: ValidationReport, report: PollReport) -> None:
        info = result.info or {}
        fields: dict[str, Any] = {"findings": result.findings_dicts(), "estimate": result.estimate,
                                  "metadata": {**ws.metadata, "work": result.work, "info": result.info}}
        if result.valid:
            updated = self.store.update_fields(ws.workset_id, actor=self.monitor_id,
                                               expected_state=S.READY,
                                               customer_id=info.get("customer_id"), **fields)
            if info.get("priority") and updated.priority.value != info["priority"]:
                updated = self.store.set_priority(ws.workset_id, info["priority"], self.monitor_id,
                                                  reason="from daylily_info.yaml")
            self.remember(updated)
            return
        first = result.first_error
        assert first is not None
        report.invalid.append({"workset_id": ws.workset_id, "code": first.code, "message": first.message})
        updated = self.transition(ws, S.ERROR, f"validation failed: {first.code}: "
                                   f"{truncate(first.message, 300)}", report,
                                   error_code=first.code, error_details=first.message, **fields)
        if updated is not None:
            self.writer.mirror_quietly(updated, report)

    def _apply_retry_request(self, snap: FolderSnapshot, ws: Workset, result: ValidationReport,
                             report: PollReport) -> None:
        info = result.info or {}
        fields: dict[str, Any] = {"findings": result.findings_dicts(), "estimate": result.estimate,
                                  "metadata": {**ws.metadata, "work": result.work, "info": result.info}}
        if result.valid:
            fields.update(error_code=None, error_details=None, customer_id=info.get("customer_id"))
            self.transition(ws, S.READY, "retry requested in S3: daylily.ready is newer than "
                             f"the last transition and daylily.{STATE_SENTINEL[ws.state]} is gone",
                             report, actor=S3_ACTOR, **fields)
            return
        first = result.first_error
        assert first is not None
        report.invalid.append({"workset_id": ws.workset_id, "code": first.code, "message": first.message})
        fields.update(error_code=first.code, error_details=first.message)
        if ws.state in (S.ERROR, S.FAILED, S.RETRYING):
            updated = self.remember(self.store.update_fields(ws.workset_id, actor=S3_ACTOR,
                                                              expected_state=ws.state, **fields))
        else:
            # complete or ignored: straight to error in one write, so the files' findings show
            # in daylily.error; never through ready, where an engine could claim it in between
            updated = self.transition(
                ws, S.ERROR, "retry requested in S3; validation failed: "
                f"{first.code}: {truncate(first.message, 300)}", report, actor=S3_ACTOR, **fields)
        if updated is not None:
            self.writer.mirror_quietly(updated, report)

    def transition(self, ws: Workset, to: WorksetState, reason: str, report: PollReport, *,
                    actor: str | None = None, **fields: Any) -> Workset | None:
        try:
            updated = self.store.update_state(ws.workset_id, to, reason, actor or self.monitor_id,
                                              expected_state=ws.state, **fields)
        except (IllegalTransition, StateConflict) as exc:
            report.warnings.append(f"{ws.workset_id}: {exc}")
            return None
        self.remember(updated)
        report.changes.append({"workset_id": ws.workset_id, "from": ws.state.value, "to": to.value,
                               "reason": reason})
        return updated
