"""Notifications: events → a durable outbox in the store → channels (SNS, Linear, Slack webhook).

``Notifier.emit`` renders an event once (scrubbed, control characters stripped) and enqueues one
outbox entry per channel whose filter matches. ``Notifier.deliver`` (the engine's delivery job)
sends what is due. The outbox gives at-least-once delivery with a dedup id; entries about the same
subject (one workset, one alert rule+subject) coalesce while they wait, so a channel that was down
for an hour gets the latest word on each subject rather than the whole backlog.

A channel that fails is *blocked* for a backoff that grows with its consecutive failures: while it
is blocked no entry of that channel is tried, so an outage costs one request per backoff period,
not one per queued message, and entries do not burn their attempts against a dead endpoint.
"""

from __future__ import annotations

import email.utils
import hashlib
import re
import unicodedata
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

import structlog

from wsmon.core.clock import Clock, SystemClock, isoformat
from wsmon.core.models import Alert, OutboxEntry, Severity, Workset
from wsmon.core.redaction import scrub
from wsmon.core.textsafe import strip_control

if TYPE_CHECKING:
    import httpx

    from wsmon.config.settings import ChannelFilter, NotifySettings, Settings
    from wsmon.engine.store import Store

log = structlog.get_logger(__name__)

WORKSET_EVENTS = (
    "registered", "started", "completed", "failed", "retrying", "dead_lettered",
    "validation_failed", "lock_force_released",
)
ALERT_EVENTS = ("alert_firing", "alert_acknowledged", "alert_resolved")
EVENT_TYPES = WORKSET_EVENTS + ALERT_EVENTS

# How loud a workset event is, so severity filters work for workset events too.
WORKSET_EVENT_SEVERITY = {
    "registered": Severity.INFO, "started": Severity.INFO, "completed": Severity.INFO,
    "retrying": Severity.INFO, "failed": Severity.WARNING, "validation_failed": Severity.WARNING,
    "lock_force_released": Severity.WARNING, "dead_lettered": Severity.CRITICAL,
}

HEALTH_NAMESPACE = "notify_health"
LINEAR_ISSUES_NAMESPACE = "linear_issues"

SNS_SUBJECT_MAX = 100
SNS_MESSAGE_MAX_BYTES = 256 * 1024
SLACK_TEXT_MAX = 3000
LINEAR_DESCRIPTION_MAX = 60_000
# A message-specific permanent failure (the receiver rejected this payload) is retried a few times
# only: it will not get better by waiting, but one flaky 4xx should not lose it.
PERMANENT_FAILURE_ATTEMPTS = 3
RETRY_AFTER_CAP_SECONDS = 3600.0


# ------------------------------------------------------------------------------------------------
# scrubbing (the redactor itself is wsmon.core.redaction.scrub, shared with the logs)
# ------------------------------------------------------------------------------------------------

def _clean_line(text: object, secrets: Iterable[str] = (), limit: int = 500) -> str:
    value = scrub(strip_control(text), secrets)
    return value if len(value) <= limit else value[: limit - 1] + "…"


def _clean_block(text: object, secrets: Iterable[str] = (), limit: int = 20_000) -> str:
    value = scrub(strip_control(text, keep_newlines=True), secrets)
    return value if len(value) <= limit else value[: limit - 1] + "…"


def truncate_utf8(text: str, max_bytes: int) -> str:
    """Cut ``text`` to ``max_bytes`` of UTF-8, marking the cut. Same input, same output."""
    encoded = text.encode("utf-8")
    if len(encoded) <= max_bytes:
        return text
    marker = f"\n… [truncated: {len(encoded)} bytes, showing the first part]"
    budget = max(0, max_bytes - len(marker.encode("utf-8")))
    return encoded[:budget].decode("utf-8", "ignore") + marker


def ascii_subject(text: str, limit: int = SNS_SUBJECT_MAX) -> str:
    """An SNS subject: ASCII, one line, at most ``limit`` characters, never empty."""
    one_line = strip_control(re.sub(r"[\r\n]+", " ", text)).replace("⏎", " ")
    folded = unicodedata.normalize("NFKD", one_line).encode("ascii", "ignore").decode("ascii")
    folded = re.sub(r"[^\x20-\x7e]", "", folded)
    folded = re.sub(r"\s+", " ", folded).strip()
    if not folded:
        folded = "wsmon notification"
    if len(folded) > limit:
        folded = folded[: limit - 3].rstrip() + "..."
    return folded


# ------------------------------------------------------------------------------------------------
# messages
# ------------------------------------------------------------------------------------------------


@dataclass
class Message:
    """One rendered notification; what the outbox stores and every channel formats from."""

    event_type: str
    title: str
    text: str
    severity: str
    at: str
    priority: str | None = None
    state: str | None = None
    workset_id: str | None = None
    alert_id: str | None = None
    alert_state: str | None = None
    rule: str | None = None
    subject: str | None = None
    link: str | None = None
    link_text: str | None = None
    fields: list[list[str]] = field(default_factory=list)
    issue_key: str | None = None  # Linear: one issue per alert / per workset
    dedup_id: str | None = None
    coalesced: int = 0
    attempt: int = 0  # earlier delivery attempts of this entry

    def to_payload(self) -> dict[str, Any]:
        data = asdict(self)
        data.pop("coalesced", None)
        data.pop("attempt", None)
        return data

    @classmethod
    def from_entry(cls, entry: OutboxEntry) -> Message:
        known = {f for f in cls.__dataclass_fields__}
        data = {k: v for k, v in entry.payload.items() if k in known}
        data.setdefault("event_type", entry.event_type)
        data.setdefault("title", entry.event_type)
        data.setdefault("text", "")
        data.setdefault("severity", "info")
        data.setdefault("at", isoformat(entry.created_at))
        msg = cls(**data)
        msg.coalesced = entry.coalesced
        msg.dedup_id = entry.dedup_id
        msg.attempt = entry.attempts
        return msg

    def full_text(self) -> str:
        lines = [self.text] if self.text else []
        for name, value in self.fields:
            lines.append(f"{name}: {value}")
        if self.link:
            lines.append(f"{self.link_text or 'link'}: {self.link}")
        if self.coalesced:
            lines.append(f"({self.coalesced} earlier notification(s) about this subject were folded "
                         "into this one)")
        return "\n".join(lines)


# ------------------------------------------------------------------------------------------------
# channels
# ------------------------------------------------------------------------------------------------


class ChannelError(Exception):
    """A delivery that did not happen.

    ``permanent``: waiting will not help (the receiver rejected it). ``channel_wide``: the whole
    channel is unusable right now (down, rate-limited, refusing our credentials), so the rest of
    its queue should wait too. ``retry_after``: the receiver told us when to come back.
    """

    def __init__(self, detail: str, *, permanent: bool = False, channel_wide: bool = True,
                 retry_after: float | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.permanent = permanent
        self.channel_wide = channel_wide
        self.retry_after = retry_after


def _matches(filt: ChannelFilter | None, msg: Message) -> bool:
    if filt is None:
        return True
    if filt.event_types and msg.event_type not in filt.event_types:
        return False
    if filt.severities and msg.severity not in filt.severities:
        return False
    # Alert events carry no priority/state unless their subject is a workset: those filters are
    # about worksets, so they do not hide alerts that have none.
    if filt.priorities and msg.priority is not None and msg.priority not in filt.priorities:
        return False
    if filt.states and msg.state is not None and msg.state not in filt.states:
        return False
    return True


class Channel:
    """Base class: a named destination with a filter."""

    name: str = "channel"

    def __init__(self, name: str, filter: ChannelFilter | None = None) -> None:
        self.name = name
        self.filter = filter

    def accepts(self, msg: Message) -> bool:
        return _matches(self.filter, msg)

    def send(self, msg: Message) -> str:
        """Deliver; return a short receipt. Raise ``ChannelError`` when it did not happen."""
        raise NotImplementedError

    def secrets(self) -> list[str]:
        return []

    def close(self) -> None:
        pass


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Retry-After as seconds (delta-seconds or an HTTP date); None when absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when is None or now is None:
            return None
        seconds = (when - now).total_seconds()
    return max(0.0, min(seconds, RETRY_AFTER_CAP_SECONDS))


def _http_error(channel: str, response: httpx.Response, now: datetime | None) -> ChannelError:
    code = response.status_code
    if code == 429:
        return ChannelError(f"{channel}: rate limited (HTTP 429)",
                            retry_after=parse_retry_after(response.headers.get("Retry-After"), now))
    if code >= 500:
        return ChannelError(f"{channel}: server error (HTTP {code})",
                            retry_after=parse_retry_after(response.headers.get("Retry-After"), now))
    if code in (401, 403):
        return ChannelError(f"{channel}: credentials refused (HTTP {code}); check the configured secret",
                            permanent=True, channel_wide=True)
    body = response.text[:200] if response.text else ""
    return ChannelError(f"{channel}: rejected (HTTP {code}) {body}".strip(), permanent=True,
                        channel_wide=code in (404, 410))


def _transport_error(channel: str, exc: Exception) -> ChannelError:
    import httpx

    if isinstance(exc, httpx.TimeoutException):
        return ChannelError(f"{channel}: timed out ({type(exc).__name__})")
    # never str(exc): transport errors can carry the URL, and a Slack webhook URL is the secret
    return ChannelError(f"{channel}: connection failed ({type(exc).__name__})")


class SnsChannel(Channel):
    def __init__(self, topic_arn: str, *, filter: ChannelFilter | None = None, client: Any = None,
                 client_factory: Any = None, name: str = "sns") -> None:
        super().__init__(name, filter)
        self.topic_arn = topic_arn
        self._client = client
        self._client_factory = client_factory

    def client(self) -> Any:
        if self._client is None:
            self._client = self._client_factory()
        return self._client

    @staticmethod
    def attributes(msg: Message) -> dict[str, dict[str, str]]:
        attrs: dict[str, dict[str, str]] = {}
        for key, value in (("event_type", msg.event_type), ("severity", msg.severity),
                           ("priority", msg.priority), ("state", msg.state),
                           ("workset", msg.workset_id), ("rule", msg.rule)):
            if value:
                attrs[key] = {"DataType": "String", "StringValue": strip_control(value)[:256]}
        return attrs

    def render(self, msg: Message) -> tuple[str, str, dict[str, dict[str, str]]]:
        attrs = self.attributes(msg)
        subject = ascii_subject(msg.title)
        # The 256 KiB limit counts the attributes too.
        overhead = sum(len(k.encode()) + len(v["DataType"]) + len(v["StringValue"].encode())
                       for k, v in attrs.items())
        body = truncate_utf8(msg.title + "\n\n" + msg.full_text(), SNS_MESSAGE_MAX_BYTES - overhead - 1024)
        return subject, body, attrs

    def send(self, msg: Message) -> str:
        from botocore.exceptions import BotoCoreError, ClientError

        from wsmon.core.aws import describe_client_error, error_code

        subject, body, attrs = self.render(msg)
        extra: dict[str, str] = {}
        if self.topic_arn.endswith(".fifo"):
            # FIFO topics deduplicate for us: a retried publish of the same entry is dropped
            extra["MessageGroupId"] = "wsmon"
            extra["MessageDeduplicationId"] = hashlib.sha256((msg.dedup_id or body).encode()).hexdigest()
        try:
            resp = self.client().publish(TopicArn=self.topic_arn, Subject=subject, Message=body,
                                         MessageAttributes=attrs, **extra)
        except ClientError as exc:
            code = error_code(exc) or ""
            detail = f"sns: {describe_client_error(exc)}"
            if code in ("Throttling", "ThrottlingException", "ThrottledException", "InternalError",
                        "InternalFailure", "ServiceUnavailable", "KMSThrottling"):
                raise ChannelError(detail) from None
            wide = code in ("AuthorizationError", "NotFound", "InvalidClientTokenId",
                            "AccessDenied", "AccessDeniedException", "EndpointDisabled")
            raise ChannelError(detail, permanent=True, channel_wide=wide) from None
        except BotoCoreError as exc:
            raise ChannelError(f"sns: {type(exc).__name__}") from None
        return str(resp.get("MessageId", "published"))


SEVERITY_COLOURS = {"critical": "#d00000", "warning": "#daa038", "info": "#439fe0"}
RESOLVED_COLOUR = "#2eb886"


def _slack_escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


class SlackChannel(Channel):
    def __init__(self, webhook_url: str, *, filter: ChannelFilter | None = None,
                 http: httpx.Client | None = None, timeout: float = 10.0, clock: Clock | None = None,
                 name: str = "slack") -> None:
        super().__init__(name, filter)
        self._url = webhook_url
        self._timeout = timeout
        self._http = http
        self._clock = clock or SystemClock()

    def secrets(self) -> list[str]:
        # A receiver echoing the request path back (error pages do) must not leak it either: the
        # path, and its token segments, are as secret as the whole URL.
        from urllib.parse import urlsplit

        path = urlsplit(self._url).path
        # token-like segments only: "services" is not a secret and must stay readable elsewhere
        parts = [p for p in path.split("/") if len(p) >= 8 and any(c.isdigit() or c.isupper() for c in p)]
        return [self._url, *([path] if len(path) >= 8 else []), *parts]

    def http(self) -> httpx.Client:
        if self._http is None:
            import httpx

            self._http = httpx.Client(timeout=self._timeout, follow_redirects=False)
        return self._http

    def render(self, msg: Message) -> dict[str, Any]:
        resolved = msg.event_type == "alert_resolved" or msg.event_type == "completed"
        colour = RESOLVED_COLOUR if resolved else SEVERITY_COLOURS.get(msg.severity, "#439fe0")
        text = _slack_escape(msg.text)
        if msg.link:
            label = _slack_escape(strip_control(msg.link_text or msg.workset_id or "open"))
            # Slack's link syntax is <url|text>; the url is ours (quoted), the text is escaped.
            text = f"{text}\n<{msg.link}|{label.replace('|', '¦')}>" if text else f"<{msg.link}|{label}>"
        if msg.coalesced:
            text += f"\n_{msg.coalesced} earlier notification(s) about this subject folded into this one_"
        text = truncate_utf8(text, SLACK_TEXT_MAX)
        return {
            "text": _slack_escape(msg.title),
            "attachments": [{
                "color": colour,
                "title": _slack_escape(msg.title)[:250],
                "text": text,
                "fields": [{"title": _slack_escape(k), "value": _slack_escape(v)[:500], "short": len(v) < 40}
                           for k, v in msg.fields],
                "footer": f"wsmon · {msg.event_type} · {msg.severity}",
                "mrkdwn_in": ["text"],
            }],
        }

    def send(self, msg: Message) -> str:
        import httpx

        try:
            response = self.http().post(self._url, json=self.render(msg))
        except httpx.HTTPError as exc:
            raise _transport_error(self.name, exc) from None
        if response.status_code >= 300:
            raise _http_error(self.name, response, self._clock.now())
        return "ok"

    def close(self) -> None:
        if self._http is not None:
            self._http.close()


# Linear priorities: 0 none, 1 urgent, 2 high, 3 medium, 4 low.
LINEAR_PRIORITY_BY_SEVERITY = {"critical": 1, "warning": 2, "info": 3}
LINEAR_PRIORITY_BY_WORKSET = {"urgent": 1, "normal": 3, "low": 4}

_ISSUE_CREATE = """mutation IssueCreate($input: IssueCreateInput!) {
  issueCreate(input: $input) { success issue { id identifier url } }
}"""
_COMMENT_CREATE = """mutation CommentCreate($input: CommentCreateInput!) {
  commentCreate(input: $input) { success comment { id } }
}"""
_ISSUE_UPDATE = """mutation IssueUpdate($id: String!, $input: IssueUpdateInput!) {
  issueUpdate(id: $id, input: $input) { success issue { id } }
}"""
_FIND = """query Find($team: String!, $marker: String!) {
  issues(first: 1, filter: { team: { id: { eq: $team } }, description: { contains: $marker } }) {
    nodes { id identifier url }
  }
}"""
_CHECK = """query Check($team: String!) {
  viewer { id name }
  team(id: $team) { id name key }
}"""


class _IssueGone(Exception):
    pass


class LinearChannel(Channel):
    """Issues in Linear: one per alert (or per workset), later events comment on it."""

    def __init__(self, api_key: str, team_id: str, store: Store | None, *,
                 api_url: str = "https://api.linear.app/graphql", filter: ChannelFilter | None = None,
                 http: httpx.Client | None = None, timeout: float = 10.0,
                 resolved_state_id: str | None = None, clock: Clock | None = None,
                 name: str = "linear") -> None:
        super().__init__(name, filter)
        self._key = api_key
        self.team_id = team_id
        self.api_url = api_url
        self.store = store
        self.resolved_state_id = resolved_state_id
        self._timeout = timeout
        self._http = http
        self._clock = clock or SystemClock()

    def secrets(self) -> list[str]:
        return [self._key]

    def http(self) -> httpx.Client:
        if self._http is None:
            import httpx

            self._http = httpx.Client(timeout=self._timeout, follow_redirects=False)
        return self._http

    def close(self) -> None:
        if self._http is not None:
            self._http.close()

    def _graphql(self, query: str, variables: dict[str, Any] | None = None) -> dict[str, Any]:
        import httpx

        try:
            response = self.http().post(
                self.api_url, json={"query": query, "variables": variables or {}},
                headers={"Authorization": self._key, "Content-Type": "application/json"},
            )
        except httpx.HTTPError as exc:
            raise _transport_error(self.name, exc) from None
        try:
            body = response.json()
        except ValueError:
            body = None
        errors = (body or {}).get("errors") if isinstance(body, dict) else None
        if errors and any((e.get("extensions") or {}).get("code") == "RATELIMITED" for e in errors):
            raise ChannelError(f"{self.name}: rate limited",
                               retry_after=parse_retry_after(response.headers.get("Retry-After"),
                                                             self._clock.now()))
        if response.status_code >= 300:
            raise _http_error(self.name, response, self._clock.now())
        if errors:
            text = "; ".join(str(e.get("message", "error"))[:200] for e in errors)
            if re.search(r"not found|entity not found|could not find", text, re.I):
                raise _IssueGone(text)
            raise ChannelError(f"{self.name}: {text}", permanent=True, channel_wide=False)
        if not isinstance(body, dict) or not isinstance(body.get("data"), dict):
            raise ChannelError(f"{self.name}: unreadable answer (HTTP {response.status_code})")
        return body["data"]

    def _priority(self, msg: Message) -> int:
        if msg.alert_id:
            return LINEAR_PRIORITY_BY_SEVERITY.get(msg.severity, 3)
        return LINEAR_PRIORITY_BY_WORKSET.get(msg.priority or "normal", 3)

    @staticmethod
    def _marker(key: str) -> str:
        return "wsmon-key-" + hashlib.sha256(key.encode()).hexdigest()[:24]

    def _find(self, key: str) -> dict[str, Any] | None:
        """The issue an earlier, timed-out issueCreate may have opened after all."""
        try:
            data = self._graphql(_FIND, {"team": self.team_id, "marker": self._marker(key)})
        except (ChannelError, _IssueGone) as exc:
            if isinstance(exc, ChannelError) and exc.channel_wide:
                raise
            return None  # searching is a courtesy; creating is the job
        nodes = ((data.get("issues") or {}).get("nodes")) or []
        return nodes[0] if nodes and nodes[0].get("id") else None

    def _create(self, msg: Message, key: str) -> str:
        if msg.attempt > 0:
            found = self._find(key)
            if found is not None:
                self.store.kv_put(LINEAR_ISSUES_NAMESPACE, key, {
                    "id": found["id"], "identifier": found.get("identifier"), "url": found.get("url")})
                return f"found {found.get('identifier') or found['id']} from an earlier attempt"
        # the marker goes after the cut so a long text never loses it
        description = truncate_utf8(msg.full_text(), LINEAR_DESCRIPTION_MAX - 100) + f"\n\n_{self._marker(key)}_"
        data = self._graphql(_ISSUE_CREATE, {"input": {
            "teamId": self.team_id, "title": msg.title[:250], "description": description,
            "priority": self._priority(msg),
        }})
        result = data.get("issueCreate") or {}
        issue = result.get("issue") or {}
        if not result.get("success") or not issue.get("id"):
            raise ChannelError(f"{self.name}: issueCreate did not succeed", permanent=True, channel_wide=False)
        # Remember at once: a repeat must comment on this issue, never open another one.
        self.store.kv_put(LINEAR_ISSUES_NAMESPACE, key, {
            "id": issue["id"], "identifier": issue.get("identifier"), "url": issue.get("url"),
        })
        return str(issue.get("identifier") or issue["id"])

    def _comment(self, msg: Message, issue_id: str) -> None:
        body = truncate_utf8(f"**{msg.title}**\n\n{msg.full_text()}", LINEAR_DESCRIPTION_MAX)
        data = self._graphql(_COMMENT_CREATE, {"input": {"issueId": issue_id, "body": body}})
        if not (data.get("commentCreate") or {}).get("success"):
            raise ChannelError(f"{self.name}: commentCreate did not succeed", permanent=True, channel_wide=False)
        if msg.event_type == "alert_resolved" and self.resolved_state_id:
            self._graphql(_ISSUE_UPDATE, {"id": issue_id, "input": {"stateId": self.resolved_state_id}})

    def send(self, msg: Message) -> str:
        key = msg.issue_key or msg.dedup_id or msg.title
        known = self.store.kv_get(LINEAR_ISSUES_NAMESPACE, key)
        if known and known.get("id"):
            try:
                self._comment(msg, known["id"])
                return f"commented on {known.get('identifier') or known['id']}"
            except _IssueGone:
                # deleted in Linear meanwhile: open a fresh one rather than lose the event
                self.store.kv_delete(LINEAR_ISSUES_NAMESPACE, key)
        if msg.event_type in ("alert_acknowledged", "alert_resolved"):
            return "no issue to update"  # it never fired here (filtered, folded or silenced)
        try:
            return f"created {self._create(msg, key)}"
        except _IssueGone as exc:
            raise ChannelError(f"{self.name}: {exc}", permanent=True, channel_wide=False) from None

    def check(self) -> str:
        """Prove the key and the team id work without opening an issue (``wsmon notify test``)."""
        try:
            data = self._graphql(_CHECK, {"team": self.team_id})
        except _IssueGone:
            raise ChannelError(f"{self.name}: team {self.team_id!r} not found", permanent=True) from None
        team = data.get("team") or {}
        if not team.get("id"):
            raise ChannelError(f"{self.name}: team {self.team_id!r} not found", permanent=True)
        viewer = (data.get("viewer") or {}).get("name") or "?"
        return f"team {team.get('key') or team.get('name') or team['id']} reachable as {viewer}"


# ------------------------------------------------------------------------------------------------
# the notifier
# ------------------------------------------------------------------------------------------------


@dataclass
class ChannelReport:
    delivered: int = 0
    failed: int = 0
    dead: int = 0
    deferred: int = 0
    blocked_until: datetime | None = None
    last_error: str | None = None


@dataclass
class DeliveryReport:
    """One delivery pass, per channel; the totals are sums over the channels."""

    channels: dict[str, ChannelReport] = field(default_factory=dict)

    def channel(self, name: str) -> ChannelReport:
        return self.channels.setdefault(name, ChannelReport())

    @property
    def delivered(self) -> int:
        return sum(c.delivered for c in self.channels.values())

    @property
    def failed(self) -> int:
        return sum(c.failed for c in self.channels.values())

    @property
    def dead(self) -> int:
        return sum(c.dead for c in self.channels.values())

    @property
    def deferred(self) -> int:
        return sum(c.deferred for c in self.channels.values())


@dataclass
class TestResult:
    channel: str
    ok: bool
    detail: str


def _secret_value(settings: Settings, name: str, env_var: str) -> str | None:
    """The secret from config (env, file, or inline when allowed). A configured but unreadable
    secret file raises ``ConfigError`` naming the setting."""
    import os

    from wsmon.config import settings as _config

    resolver = getattr(_config, "resolve_secret", None)
    if callable(resolver):
        value = resolver(name, settings)
        if value is not None and value.get_secret_value().strip():
            return value.get_secret_value().strip()
    return (os.environ.get(env_var) or "").strip() or None


def build_channels(settings: Settings, store: Store | None, *, clock: Clock | None = None) -> dict[str, Channel]:
    """The channels the configuration turns on (SNS: topic ARN; Linear: team + key; Slack: webhook)."""
    ns = settings.notify
    channels: dict[str, Channel] = {}
    if ns.sns_topic_arn:
        aws = settings.aws

        def factory() -> Any:
            from wsmon.core.aws import client

            return client("sns", profile=aws.profile, region=aws.region, endpoint_url=aws.endpoint_url,
                          max_attempts=2, connect_timeout=min(5.0, ns.request_timeout_seconds),
                          read_timeout=ns.request_timeout_seconds)

        channels["sns"] = SnsChannel(ns.sns_topic_arn, filter=ns.sns_filter, client_factory=factory)
    linear_key = _secret_value(settings, "linear_api_key", "WSMON_LINEAR_API_KEY")
    if ns.linear_team_id and linear_key:
        channels["linear"] = LinearChannel(
            linear_key, ns.linear_team_id, store, api_url=ns.linear_api_url, filter=ns.linear_filter,
            timeout=ns.request_timeout_seconds, resolved_state_id=ns.linear_resolved_state_id, clock=clock,
        )
    elif ns.linear_team_id:
        log.warning("notify_linear_off",
                    reason="linear_team_id set but no API key (WSMON_LINEAR_API_KEY or linear_api_key_file)")
    webhook = _secret_value(settings, "slack_webhook_url", "WSMON_SLACK_WEBHOOK_URL")
    if webhook:
        channels["slack"] = SlackChannel(webhook, filter=ns.slack_filter, timeout=ns.request_timeout_seconds,
                                         clock=clock)
    return channels


def _notify_settings(settings: Any) -> NotifySettings:
    return settings.notify if hasattr(settings, "notify") else settings


class Notifier:
    """Turns events into outbox entries and delivers them."""

    def __init__(self, settings: Settings, store: Store, *, clock: Clock | None = None,
                 channels: Mapping[str, Channel] | Iterable[Channel] | None = None) -> None:
        self.settings = settings
        self.ns = _notify_settings(settings)
        self.store = store
        self.clock = clock or getattr(store, "clock", None) or SystemClock()
        if channels is None:
            built = build_channels(settings, store, clock=self.clock)
        elif isinstance(channels, Mapping):
            built = dict(channels)
        else:
            built = {c.name: c for c in channels}
        self.channels: dict[str, Channel] = built
        self._secrets = [s for c in built.values() for s in c.secrets() if s]
        self._blocked_until: dict[str, datetime] = {}
        self._consecutive_failures: dict[str, int] = {}

    # -- rendering ------------------------------------------------------------------------------
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
        line = lambda v, n=300: _clean_line(v, self._secrets, n)  # noqa: E731
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
            msg.text = _clean_block(alert.description or alert.summary, self._secrets, 4000)
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
                    text.append(_clean_block(workset.error_details, self._secrets, 4000))
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
                msg.text = (msg.text + "\n" if msg.text else "") + _clean_block(value, self._secrets, 4000)
                continue
            if isinstance(value, datetime):
                value = isoformat(value)
            fields.append([key.replace("_", " "), line(value, 500)])
        if self.ns.contact_email:
            fields.append(["contact", line(self.ns.contact_email, 120)])
        msg.fields = fields
        return msg

    # -- enqueue --------------------------------------------------------------------------------
    def emit(self, event_type: str, *, workset: Workset | None = None, alert: Alert | None = None,
             **details: Any) -> list[OutboxEntry]:
        """Queue ``event_type`` for every channel whose filter takes it. Never raises for a store
        or channel problem (a notification must not break the engine); returns what was queued."""
        if event_type not in EVENT_TYPES and event_type != "test":
            log.warning("notify_unknown_event", event_type=event_type)
        dedup_id = details.pop("dedup_id", None)
        coalesce_key = details.pop("coalesce_key", None)
        try:
            msg = self.render(event_type, workset=workset, alert=alert, **details)
        except Exception as exc:  # a rendering bug must not take the engine down
            log.error("notify_render_failed", event_type=event_type, error=type(exc).__name__)
            return []
        now = self.clock.now()
        if dedup_id is None:
            if alert is not None:
                dedup_id = f"{event_type}:{alert.alert_id}:{isoformat(alert.updated_at)}"
            elif workset is not None:
                dedup_id = (f"{event_type}:{workset.workset_id}:{isoformat(workset.state_changed_at)}:"
                            f"{workset.attempts}:{workset.fence}")
            else:
                dedup_id = f"{event_type}:{uuid.uuid4().hex}"
        if coalesce_key is None:
            if alert is not None:
                coalesce_key = f"alert:{alert.rule}:{alert.subject}"
            elif workset is not None:
                coalesce_key = f"workset:{workset.workset_id}"
            else:
                coalesce_key = f"event:{dedup_id}"
        msg.dedup_id = dedup_id
        queued: list[OutboxEntry] = []
        for name, channel in self.channels.items():
            if not channel.accepts(msg):
                continue
            entry = OutboxEntry(
                entry_id=uuid.uuid4().hex, channel=name, dedup_id=dedup_id, coalesce_key=coalesce_key,
                event_type=event_type, payload=msg.to_payload(), created_at=now, next_attempt_at=now,
            )
            try:
                if self.store.enqueue_notification(entry):
                    queued.append(entry)
            except Exception as exc:
                log.error("notify_enqueue_failed", channel=name, event_type=event_type,
                          error=_clean_line(exc, self._secrets, 300))
        if queued:
            log.info("notify_queued", event_type=event_type, channels=[e.channel for e in queued])
        return queued

    # -- delivery -------------------------------------------------------------------------------
    def _backoff(self, attempts: int) -> float:
        base, cap = self.ns.backoff_base_seconds, self.ns.backoff_cap_seconds
        return min(cap, base * (2 ** max(0, attempts - 1)))

    def _record_health(self, name: str, ok: bool, error: str | None = None) -> None:
        now = self.clock.now()
        before = self._consecutive_failures.get(name)
        failures = 0 if ok else (before or 0) + 1
        self._consecutive_failures[name] = failures
        if ok and before == 0:
            return  # unchanged: spare the store a write per delivery
        try:
            previous = self.store.kv_get(HEALTH_NAMESPACE, name) or {}
            record = dict(previous)
            record.update({"ok": ok, "consecutive_failures": failures, "at": isoformat(now)})
            if ok:
                record["last_success_at"] = isoformat(now)
            else:
                record["last_error"] = error
                record["last_failure_at"] = isoformat(now)
            self.store.kv_put(HEALTH_NAMESPACE, name, record)
        except Exception as exc:
            log.warning("notify_health_write_failed", channel=name, error=type(exc).__name__)

    def deliver(self) -> DeliveryReport:
        """Send what is due, channel by channel. Never raises for a channel problem."""
        report = DeliveryReport()
        for name, channel in self.channels.items():
            self._deliver_channel(name, channel, report)
        self._dead_letter_orphans(report)
        return report

    def _deliver_channel(self, name: str, channel: Channel, report: DeliveryReport) -> None:
        now = self.clock.now()
        creport = report.channel(name)
        blocked = self._blocked_until.get(name)
        if blocked is not None and blocked > now:
            creport.blocked_until = blocked
            return
        try:
            due = self.store.due_notifications(now, limit=self.ns.batch_size, channel=name)
        except Exception as exc:
            log.warning("notify_outbox_unreadable", channel=name, error=type(exc).__name__)
            return
        for index, entry in enumerate(due):
            msg = Message.from_entry(entry)
            try:
                receipt = channel.send(msg)
            except Exception as exc:
                err = exc if isinstance(exc, ChannelError) else ChannelError(
                    f"{name}: unexpected {type(exc).__name__}")
                if not isinstance(exc, ChannelError):
                    log.error("notify_channel_bug", channel=name, error=type(exc).__name__)
                self._failed(name, entry, err, now, creport)
                if err.channel_wide:
                    creport.deferred += len(due) - index - 1
                    return
                continue
            self.store.mark_notification_delivered(entry.entry_id, self.clock.now())
            creport.delivered += 1
            self._blocked_until.pop(name, None)
            self._record_health(name, True)
            log.info("notify_delivered", channel=name, event_type=entry.event_type,
                     receipt=_clean_line(receipt, self._secrets, 120), coalesced=entry.coalesced)

    def _failed(self, name: str, entry: OutboxEntry, err: ChannelError, now: datetime,
                creport: ChannelReport) -> None:
        attempts = entry.attempts + 1
        detail = _clean_line(err.detail, self._secrets, 500)
        self._record_health(name, False, detail)
        give_up = attempts >= self.ns.max_attempts or (err.permanent and attempts >= PERMANENT_FAILURE_ATTEMPTS)
        delay = self._backoff(attempts)
        if err.channel_wide:
            channel_delay = self._backoff(self._consecutive_failures.get(name, 1))
            if err.retry_after is not None:
                channel_delay = max(channel_delay, err.retry_after)
            self._blocked_until[name] = now + timedelta(seconds=channel_delay)
            creport.blocked_until = self._blocked_until[name]
            delay = max(delay, channel_delay)
        if err.retry_after is not None:
            delay = max(delay, err.retry_after)
        next_at = None if give_up else now + timedelta(seconds=delay)
        try:
            self.store.mark_notification_failed(entry.entry_id, detail, next_at)
        except Exception as exc:
            log.warning("notify_mark_failed_failed", channel=name, error=type(exc).__name__)
        creport.last_error = detail
        if give_up:
            creport.dead += 1
            log.error("notify_dead", channel=name, event_type=entry.event_type, attempts=attempts, error=detail)
        else:
            creport.failed += 1
            log.warning("notify_failed", channel=name, event_type=entry.event_type, attempts=attempts,
                        retry_in_seconds=round(delay, 1), error=detail)

    def _dead_letter_orphans(self, report: DeliveryReport) -> None:
        """Entries for a channel that is no longer configured would wait forever: give them up."""
        now = self.clock.now()
        try:
            due = self.store.due_notifications(now, limit=self.ns.batch_size)
        except Exception:
            return
        for entry in due:
            if entry.channel not in self.channels:
                self.store.mark_notification_failed(
                    entry.entry_id, f"channel {entry.channel!r} is not configured any more", None)
                report.channel(entry.channel).dead += 1

    # -- operator test ----------------------------------------------------------------------------
    def send_test(self, channel: str | None = None, *, actor: str = "wsmon") -> list[TestResult]:
        """Send a test message straight through each channel (not via the outbox)."""
        return test_channels(self.channels, channel, actor=actor, clock=self.clock)

    def close(self) -> None:
        for channel in self.channels.values():
            try:
                channel.close()
            except Exception:
                pass


def test_channels(channels: Mapping[str, Channel], only: str | None = None, *, actor: str = "wsmon",
                  clock: Clock | None = None) -> list[TestResult]:
    """Send a test message straight through each channel (not via the outbox), one result each.

    Linear is checked (key and team) rather than sent to: a test should not open an issue."""
    secrets = [s for c in channels.values() for s in c.secrets() if s]
    now = (clock or SystemClock()).now()
    results: list[TestResult] = []
    for name in ([only] if only else list(channels)):
        ch = channels.get(name)
        if ch is None:
            results.append(TestResult(name, False, "not configured"))
            continue
        msg = Message(
            event_type="test", severity=Severity.INFO.value, at=isoformat(now),
            title=f"wsmon test notification ({name})",
            text=_clean_block(f"A test message sent by {actor} with 'wsmon notify test'. "
                              "If you read this, the channel works.", secrets),
            issue_key=f"test:{uuid.uuid4().hex}", dedup_id=f"test:{uuid.uuid4().hex}",
        )
        try:
            receipt = ch.check() if isinstance(ch, LinearChannel) else ch.send(msg)
        except ChannelError as exc:
            results.append(TestResult(name, False, _clean_line(exc.detail, secrets, 500)))
        except Exception as exc:
            results.append(TestResult(name, False, f"unexpected {type(exc).__name__}"))
        else:
            results.append(TestResult(name, True, _clean_line(receipt, secrets, 200)))
    return results


def outbox_summary(store: Store) -> dict[str, dict[str, int]]:
    """Counts per channel and status (for the dashboard and ``wsmon notify``)."""
    out: dict[str, dict[str, int]] = {}
    for entry in store.list_notifications(limit=5000):
        out.setdefault(entry.channel, {}).setdefault(entry.status, 0)
        out[entry.channel][entry.status] += 1
    return out


__all__ = [
    "ALERT_EVENTS", "Channel", "ChannelError", "DeliveryReport", "EVENT_TYPES", "LinearChannel",
    "Message", "Notifier", "SlackChannel", "SnsChannel", "TestResult", "WORKSET_EVENTS", "build_channels",
    "scrub", "truncate_utf8", "ascii_subject", "parse_retry_after", "outbox_summary", "test_channels",
]
