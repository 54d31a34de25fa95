"""Setting up S3 event notifications for a source: the SQS queue and its dead-letter queue, the
queue policy, and the bucket's notification rule, merged into what the bucket already has.

S3 keeps one notification configuration per bucket and replaces it whole on every write, so the
plan starts from the current one and adds one queue rule: every other queue, topic and Lambda
rule and the EventBridge setting are written back exactly as read. S3 refuses two rules whose
prefixes and event types overlap; such a rule is reported as a conflict and nothing is written.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

from wsmon.engine.s3.listing import normalize_prefix

EVENTS = ["s3:ObjectCreated:*", "s3:ObjectRemoved:*"]
CONFIG_KINDS = ("QueueConfigurations", "TopicConfigurations", "LambdaFunctionConfigurations")
RULE_KIND = {"QueueConfigurations": "queue", "TopicConfigurations": "topic",
             "LambdaFunctionConfigurations": "Lambda"}
MAX_RECEIVE_COUNT = 5  # receives before a message that cannot be applied goes to the DLQ
VISIBILITY_TIMEOUT_SECONDS = 300  # longer than a folder's validation budget
DLQ_RETENTION_SECONDS = 14 * 24 * 3600
# What the engine does with its queue (receive, delete) and `s3-events status` reads.
ENGINE_QUEUE_ACTIONS = ["sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:ChangeMessageVisibility",
                        "sqs:GetQueueAttributes"]


class SetupConflict(Exception):
    """The bucket already has a rule that overlaps the one the set-up would add."""


@dataclass
class SetupPlan:
    bucket: str
    prefix: str
    queue_name: str
    dlq_name: str
    region: str
    account: str
    current: dict[str, Any]
    merged: dict[str, Any]
    conflicts: list[str] = field(default_factory=list)
    already_there: bool = False

    @property
    def queue_arn(self) -> str:
        return f"arn:aws:sqs:{self.region}:{self.account}:{self.queue_name}"

    @property
    def dlq_arn(self) -> str:
        return f"arn:aws:sqs:{self.region}:{self.account}:{self.dlq_name}"

    @property
    def rule_id(self) -> str:
        return f"wsmon-{self.queue_name}"

    def kept(self) -> dict[str, int]:
        """How many rules of each kind the bucket had that are written back unchanged."""
        out = {kind: len([r for r in self.current.get(kind) or [] if r.get("Id") != self.rule_id])
               for kind in CONFIG_KINDS}
        out["EventBridgeConfiguration"] = int("EventBridgeConfiguration" in self.current)
        return out


def queue_policy(queue_arn: str, bucket: str, account: str) -> dict[str, Any]:
    """Only this bucket, and only while the account that owns it is ``account``, may send."""
    return {"Version": "2012-10-17", "Statement": [{
        "Sid": "OnlyThisBucketSends", "Effect": "Allow",
        "Principal": {"Service": "s3.amazonaws.com"}, "Action": "sqs:SendMessage",
        "Resource": queue_arn,
        "Condition": {"ArnEquals": {"aws:SourceArn": f"arn:aws:s3:::{bucket}"},
                      "StringEquals": {"aws:SourceAccount": account}}}]}


def _filter_value(rule: dict[str, Any], name: str) -> str | None:
    for item in ((rule.get("Filter") or {}).get("Key") or {}).get("FilterRules") or []:
        if str(item.get("Name", "")).lower() == name:
            return str(item.get("Value", ""))
    return None


def _events_overlap(a: list[str], b: list[str]) -> bool:
    def kinds(events: list[str]) -> set[tuple[str, str]]:
        return {(e.split(":")[1], e.split(":")[2] if e.count(":") >= 2 else "*") for e in events}

    return any(ka == kb and ("*" in (va, vb) or va == vb)
               for ka, va in kinds(a) for kb, vb in kinds(b))


def overlaps(rule: dict[str, Any], prefix: str) -> bool:
    """Whether S3 would refuse our rule (``prefix``, ``EVENTS``) next to ``rule``."""
    if not _events_overlap(list(rule.get("Events") or []), EVENTS):
        return False
    theirs = _filter_value(rule, "prefix") or ""
    return theirs.startswith(prefix) or prefix.startswith(theirs)


def plan_setup(s3: Any, bucket: str, prefix: str, queue_name: str, *, region: str,
               account: str) -> SetupPlan:
    """Read the bucket's notification configuration and work out the merged one."""
    prefix = normalize_prefix(prefix)
    current = {k: v for k, v in s3.get_bucket_notification_configuration(Bucket=bucket).items()
               if k != "ResponseMetadata"}
    plan = SetupPlan(bucket, prefix, queue_name, f"{queue_name}-dlq", region, account, current,
                     merged={})
    ours = {"Id": plan.rule_id, "QueueArn": plan.queue_arn, "Events": list(EVENTS),
            "Filter": {"Key": {"FilterRules": [{"Name": "prefix", "Value": prefix}]}}}
    merged: dict[str, Any] = {}
    for kind in CONFIG_KINDS:
        rules = []
        for rule in current.get(kind) or []:
            same = kind == "QueueConfigurations" and (
                rule.get("Id") == plan.rule_id or (rule.get("QueueArn") == plan.queue_arn
                                                   and _filter_value(rule, "prefix") == prefix))
            if same:
                plan.already_there = True
                continue  # ours from an earlier run: replaced by the same rule
            if overlaps(rule, prefix):
                target = rule.get("QueueArn") or rule.get("TopicArn") or rule.get("LambdaFunctionArn")
                plan.conflicts.append(
                    f"{RULE_KIND[kind]} rule {rule.get('Id') or '(no id)'} → {target} "
                    f"covers prefix {_filter_value(rule, 'prefix') or '(all)'!r} for "
                    f"{', '.join(rule.get('Events') or [])}")
            rules.append(rule)
        if kind == "QueueConfigurations":
            rules.append(ours)
        if rules:
            merged[kind] = rules
    if "EventBridgeConfiguration" in current:
        merged["EventBridgeConfiguration"] = current["EventBridgeConfiguration"]
    plan.merged = merged
    return plan


def apply_setup(plan: SetupPlan, s3: Any, sqs: Any) -> str:
    """Create the queues (idempotent), then write the merged notification configuration.
    Returns the queue URL. Refuses (``SetupConflict``) when the plan has conflicts."""
    if plan.conflicts:
        raise SetupConflict("; ".join(plan.conflicts))
    sqs.create_queue(QueueName=plan.dlq_name,
                     Attributes={"MessageRetentionPeriod": str(DLQ_RETENTION_SECONDS)})
    url = sqs.create_queue(QueueName=plan.queue_name, Attributes={
        "VisibilityTimeout": str(VISIBILITY_TIMEOUT_SECONDS),
        "ReceiveMessageWaitTimeSeconds": "20",
        "RedrivePolicy": json.dumps({"deadLetterTargetArn": plan.dlq_arn,
                                     "maxReceiveCount": str(MAX_RECEIVE_COUNT)}),
        "Policy": json.dumps(queue_policy(plan.queue_arn, plan.bucket, plan.account)),
    })["QueueUrl"]
    # the queue policy must exist before S3 validates the destination (it sends a test event)
    s3.put_bucket_notification_configuration(Bucket=plan.bucket,
                                             NotificationConfiguration=plan.merged)
    return str(url)


def queue_arn_from_url(url: str) -> str:
    """``https://sqs.REGION.amazonaws.com/ACCOUNT/NAME`` → ``arn:aws:sqs:REGION:ACCOUNT:NAME``
    (a region it cannot tell is ``*``)."""
    parts = urlsplit(url)
    path = [p for p in parts.path.split("/") if p]
    account, name = (path[-2], path[-1]) if len(path) >= 2 else ("*", path[-1] if path else "*")
    host = parts.hostname or ""
    labels = host.split(".")
    region = "*"
    if len(labels) >= 3 and labels[0] == "sqs":
        region = labels[1]
    elif len(labels) >= 3 and labels[1] == "queue":
        region = labels[0]
    return f"arn:aws:sqs:{region}:{account}:{name}"


def engine_statements(queue_arns: list[str]) -> list[dict[str, Any]]:
    """The IAM statements the engine needs for its event queues (and their dead-letter queues,
    whose depth `wsmon s3-events status` reads)."""
    if not queue_arns:
        return []
    arns = sorted(set(queue_arns))
    return [
        {"Sid": "ConsumeS3Events", "Effect": "Allow", "Action": list(ENGINE_QUEUE_ACTIONS),
         "Resource": arns},
        {"Sid": "ReadS3EventsDeadLetterDepth", "Effect": "Allow",
         "Action": ["sqs:GetQueueAttributes", "sqs:GetQueueUrl"],
         "Resource": [f"{arn}-dlq" for arn in arns]},
    ]
