"""Rendering an event (a workset's, an alert's, or a plain one) into a ``Message``: title, text,
fields and a link, every value from outside scrubbed and cut."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from wsmon.core.clock import Clock, isoformat
from wsmon.core.models import Alert, Severity, Workset
from wsmon.engine.notify.message import WORKSET_EVENT_SEVERITY, Message, clean_block, clean_line

if TYPE_CHECKING:
    from wsmon.config.settings import NotifySettings


class Renderer:
    """Renders events for one notifier; ``secrets`` are the channels' own (masked wherever they
    appear)."""

    def __init__(self, ns: NotifySettings, clock: Clock, secrets: list[str]) -> None:
        self.ns = ns
        self.clock = clock
        self._secrets = secrets

    def _link(self, workset: Workset) -> str:
        template = self.ns.dashboard_url
        if template:
            try:
                return template.format(workset_id=quote(workset.workset_id, safe=""),
                                       bucket=quote(workset.bucket, safe=""),
                                       prefix=quote(workset.prefix, safe="/"))
            except (KeyError, IndexError, ValueError):
                return template
        return (f"https://s3.console.aws.amazon.com/s3/buckets/{quote(workset.bucket, safe='')}"
                f"?prefix={quote(workset.prefix, safe='')}")

    def render(self, event_type: str, *, workset: Workset | None = None, alert: Alert | None = None,
               **details: Any) -> Message:
        now = self.clock.now()
        line = lambda v, n=300: clean_line(v, self._secrets, n)  # noqa: E731
        fields: list[list[str]] = []
        msg = Message(event_type=event_type, title=event_type, text="", severity=Severity.INFO.value,
                      at=isoformat(now))
        if alert is not None:
            verb = {"alert_firing": "FIRING", "alert_acknowledged": "ACKNOWLEDGED",
                    "alert_resolved": "RESOLVED"}.get(event_type, event_type)
            msg.severity = alert.severity.value
            msg.alert_id = alert.alert_id
            msg.alert_state = alert.state.value
            msg.rule = alert.rule
            msg.subject = line(alert.subject, 200)
            msg.title = line(f"[{verb}] {alert.severity.value}: {alert.summary}", 240)
            msg.text = clean_block(alert.description or alert.summary, self._secrets, 4000)
            msg.issue_key = f"alert:{alert.alert_id}"
            fields.append(["rule", alert.rule])
            fields.append(["subject", msg.subject])
            if alert.value is not None:
                fields.append(["value", f"{alert.value:g}"])
            if alert.fired_at:
                fields.append(["firing since", isoformat(alert.fired_at)])
            if event_type == "alert_acknowledged" and alert.acknowledged_by:
                fields.append(["acknowledged by", line(alert.acknowledged_by, 120)])
                if alert.ack_note:
                    fields.append(["note", line(alert.ack_note, 500)])
                if alert.ack_expires_at:
                    fields.append(["acknowledged until", isoformat(alert.ack_expires_at)])
            if event_type == "alert_resolved" and alert.resolved_at:
                fields.append(["resolved at", isoformat(alert.resolved_at)])
                if alert.resolved_by:
                    fields.append(["resolved by", line(alert.resolved_by, 120)])
            for k in ("priority", "state", "workset_id"):
                if alert.labels.get(k):
                    setattr(msg, k, line(alert.labels[k], 300))
        if workset is not None:
            msg.workset_id = workset.workset_id
            msg.priority = workset.priority.value
            msg.state = workset.state.value
            if alert is None:
                msg.severity = WORKSET_EVENT_SEVERITY.get(event_type, Severity.INFO).value
                label = event_type.replace("_", " ")
                msg.title = line(f"Workset {label}: {workset.workset_id}", 240)
                msg.issue_key = f"workset:{workset.workset_id}"
                text = [f"Workset {line(workset.workset_id)} is {workset.state.value} "
                        f"(priority {workset.priority.value})."]
                if workset.error_code:
                    text.append(f"Error code: {line(workset.error_code, 40)}")
                if workset.error_details and event_type in ("failed", "retrying", "dead_lettered",
                                                             "validation_failed"):
                    text.append(clean_block(workset.error_details, self._secrets, 4000))
                msg.text = "\n".join(text)
            fields.append(["workset", line(workset.workset_id)])
            if workset.cluster_name:
                fields.append(["cluster", line(workset.cluster_name, 120)])
            if workset.customer_id:
                fields.append(["customer", line(workset.customer_id, 120)])
            if workset.attempts:
                fields.append(["attempts", str(workset.attempts)])
            msg.link = self._link(workset)
            msg.link_text = f"Workset {line(workset.workset_id, 120)}"
        if alert is None and workset is None:
            msg.title = line(details.pop("title", event_type.replace("_", " ")), 240)
            msg.severity = str(details.pop("severity", Severity.INFO.value))
            if details.get("workset_id"):
                msg.workset_id = line(details["workset_id"], 300)
        for key, value in details.items():
            if key in ("dedup_id", "coalesce_key") or value is None:
                continue
            if workset is not None and key == "error_code" and value == workset.error_code:
                continue  # already in the text
            if key == "text":
                msg.text = (msg.text + "\n" if msg.text else "") + clean_block(value, self._secrets, 4000)
                continue
            if isinstance(value, datetime):
                value = isoformat(value)
            fields.append([key.replace("_", " "), line(value, 500)])
        if self.ns.contact_email:
            fields.append(["contact", line(self.ns.contact_email, 120)])
        msg.fields = fields
        return msg
