"""Notifications: events → a durable outbox in the store → channels (SNS, Linear, Slack webhook).

Modules: ``message`` (event types, the rendered ``Message``, text shaping), ``render`` (an event
into a message), ``channels/`` (one module per channel, and the registry that builds them from the
settings), ``outbox`` (``Notifier``: enqueue, deliver, back off). Secrets are masked by the one
redactor, ``wsmon.core.redaction``.
"""

from __future__ import annotations

from wsmon.core.redaction import scrub
from wsmon.engine.notify.channels import BUILDERS, TestResult, build_channels, test_channels
from wsmon.engine.notify.channels.base import Channel, ChannelError, parse_retry_after
from wsmon.engine.notify.channels.linear import LINEAR_ISSUES_NAMESPACE, LinearChannel
from wsmon.engine.notify.channels.slack import SlackChannel
from wsmon.engine.notify.channels.sns import SnsChannel, ascii_subject
from wsmon.engine.notify.message import (
    ALERT_EVENTS,
    EVENT_TYPES,
    WORKSET_EVENT_SEVERITY,
    WORKSET_EVENTS,
    Message,
    truncate_utf8,
)
from wsmon.engine.notify.outbox import (
    HEALTH_NAMESPACE,
    ChannelReport,
    DeliveryReport,
    Notifier,
    outbox_summary,
)

__all__ = [
    "ALERT_EVENTS", "BUILDERS", "Channel", "ChannelError", "ChannelReport", "DeliveryReport",
    "EVENT_TYPES", "HEALTH_NAMESPACE", "LINEAR_ISSUES_NAMESPACE", "LinearChannel", "Message",
    "Notifier", "SlackChannel", "SnsChannel", "TestResult", "WORKSET_EVENTS", "WORKSET_EVENT_SEVERITY",
    "build_channels", "scrub", "truncate_utf8", "ascii_subject", "parse_retry_after", "outbox_summary",
    "test_channels",
]
