"""Alerts in ``TABLE-alerts`` (GSI ``state-updated-index``), with their dedup guard: the one
not-resolved alert per (rule, subject) is an ``alert-active`` item in ``TABLE-meta``, written
in the same transaction as the alert and read with a consistent GetItem, so dedup never depends
on an eventually consistent index. Acknowledge and resolve are the shared read-rule-conditional
write loop of ``Store`` (base.py) over ``get_alert``/``put_alert``."""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from wsmon.core import aws
from wsmon.core.clock import isoformat
from wsmon.core.models import Alert, AlertState
from wsmon.engine.store import rules
from wsmon.engine.store.dynamodb.client import cancellation, condition_failed
from wsmon.engine.store.dynamodb.codec import av, item_av, item_py
from wsmon.engine.store.dynamodb.meta import MetaTable
from wsmon.engine.store.dynamodb.schema import ALERT_STATE_INDEX
from wsmon.engine.store.errors import ActiveAlertExists, AlertChanged, StoreError


def _dedup_sk(rule: str, subject: str) -> str:
    return json.dumps([rule, subject], ensure_ascii=False)


class Alerts(MetaTable):
    def put_alert(self, alert: Alert, expected_updated_at: datetime | None = None) -> Alert:
        """The alert plus its (rule, subject) guard in one transaction."""
        from botocore.exceptions import ClientError

        item = {"alert_id": alert.alert_id, "state": alert.state.value,
                "updated_at": isoformat(alert.updated_at), "doc": alert.model_dump_json()}
        put: dict[str, Any] = {"TableName": self.tables.alerts, "Item": item_av(item)}
        if expected_updated_at is not None:
            put["ConditionExpression"] = "#u = :u"
            put["ExpressionAttributeNames"] = {"#u": "updated_at"}
            put["ExpressionAttributeValues"] = {":u": av(isoformat(expected_updated_at))}
        guard_key = {"pk": av("alert-active"), "sk": av(_dedup_sk(alert.rule, alert.subject))}
        if alert.state == AlertState.RESOLVED:
            guard: dict[str, Any] = {"Delete": {
                "TableName": self.tables.meta, "Key": guard_key,
                # only if it still points at this alert (a newer one may have taken over)
                "ConditionExpression": "attribute_not_exists(#a) OR #a = :a",
                "ExpressionAttributeNames": {"#a": "alert_id"},
                "ExpressionAttributeValues": {":a": av(alert.alert_id)}}}
        else:
            # At most one not-resolved alert per (rule, subject): the dedup key.
            guard = {"Put": {"TableName": self.tables.meta,
                             "Item": {**guard_key, "alert_id": av(alert.alert_id)},
                             "ConditionExpression": "attribute_not_exists(#a) OR #a = :a",
                             "ExpressionAttributeNames": {"#a": "alert_id"},
                             "ExpressionAttributeValues": {":a": av(alert.alert_id)}}}
        try:
            self._db.call("TransactWriteItems", self.tables.alerts,
                          TransactItems=[{"Put": put}, guard])
        except ClientError as exc:
            reasons = cancellation(exc)
            if reasons and reasons[0].get("Code") == "ConditionalCheckFailed":
                raise AlertChanged(alert.alert_id) from None
            if len(reasons) > 1 and reasons[1].get("Code") == "ConditionalCheckFailed":
                if alert.state != AlertState.RESOLVED:
                    raise ActiveAlertExists(alert.rule, alert.subject) from None
                # Resolving an alert whose guard points at another alert: just the alert.
                try:
                    self._db.call("PutItem", self.tables.alerts, **put)
                except ClientError as again:
                    if condition_failed(again):
                        raise AlertChanged(alert.alert_id) from None
                    raise
                return alert
            raise StoreError(f"storing alert {alert.alert_id} failed: "
                             f"{aws.describe_client_error(exc)}") from exc
        return alert

    def get_alert(self, alert_id: str) -> Alert | None:
        out = self._db.call("GetItem", self.tables.alerts, TableName=self.tables.alerts,
                            Key={"alert_id": av(alert_id)}, ConsistentRead=True)
        item = item_py(out.get("Item"))
        return None if item is None else Alert.model_validate_json(item["doc"])

    def find_active_alert(self, rule: str, subject: str) -> Alert | None:
        guard = self._meta_get("alert-active", _dedup_sk(rule, subject))
        if not guard:
            return None
        alert = self.get_alert(guard["alert_id"])
        if alert is None or alert.state == AlertState.RESOLVED:
            return None
        return alert

    def list_alerts(self, states: Iterable[AlertState | str] | None = None,
                    resolved_since: datetime | None = None, limit: int = 500) -> list[Alert]:
        rules.check_limit(limit)
        query = rules.alert_query(states, resolved_since)
        found: list[Alert] = []
        query_states = list(query.active)
        if query.all_resolved:
            query_states.append(AlertState.RESOLVED)
        for st in query_states:
            for item in self._db.query(self.tables.alerts, IndexName=ALERT_STATE_INDEX,
                                       KeyConditionExpression="#s = :s",
                                       ExpressionAttributeNames={"#s": "state"},
                                       ExpressionAttributeValues={":s": av(st.value)}):
                found.append(Alert.model_validate_json(item["doc"]))
        if query.resolved_since is not None:
            # updated_at >= resolved_at, so the range key narrows the read to recent ones.
            for item in self._db.query(self.tables.alerts, IndexName=ALERT_STATE_INDEX,
                                       KeyConditionExpression="#s = :s AND #u >= :u",
                                       ExpressionAttributeNames={"#s": "state", "#u": "updated_at"},
                                       ExpressionAttributeValues={
                                           ":s": av(AlertState.RESOLVED.value),
                                           ":u": av(isoformat(query.resolved_since))}):
                found.append(Alert.model_validate_json(item["doc"]))
        # The index may briefly hold a moved alert under its old state too.
        return rules.newest_first((a for a in found if query.wants(a)), limit)

    def prune_alerts(self, before: datetime) -> int:
        """Hourly: one range Query on ``state-updated-index`` (a resolved alert's ``updated_at``
        is at or after its ``resolved_at``), then a conditional delete per alert."""
        from botocore.exceptions import ClientError

        removed = 0
        old = list(self._db.query(
            self.tables.alerts, IndexName=ALERT_STATE_INDEX,
            KeyConditionExpression="#s = :s AND #u < :c",
            ExpressionAttributeNames={"#s": "state", "#u": "updated_at"},
            ExpressionAttributeValues={":s": av(AlertState.RESOLVED.value),
                                       ":c": av(isoformat(before))}))
        for item in old:
            alert = Alert.model_validate_json(item["doc"])
            if not rules.alert_prunable(alert, before):
                continue
            try:
                self._db.call("DeleteItem", self.tables.alerts, TableName=self.tables.alerts,
                              Key={"alert_id": av(alert.alert_id)},
                              ConditionExpression="#s = :s AND #u = :u",
                              ExpressionAttributeNames={"#s": "state", "#u": "updated_at"},
                              ExpressionAttributeValues={
                                  ":s": av(AlertState.RESOLVED.value),
                                  ":u": av(isoformat(alert.updated_at))})
                removed += 1
            except ClientError as exc:  # changed since the read (re-opened by hand?): keep it
                if not condition_failed(exc):
                    raise
        return removed
