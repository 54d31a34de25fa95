"""Linear: one issue per alert (or per workset), later events comment on it; the issue is found
again by a marker in its description after a create that timed out."""

from __future__ import annotations

import hashlib
import re
from typing import TYPE_CHECKING, Any

import structlog

from wsmon.core.clock import Clock, SystemClock
from wsmon.engine.notify.channels.base import (
    Channel,
    ChannelError,
    http_error,
    parse_retry_after,
    secret_value,
    transport_error,
)
from wsmon.engine.notify.message import Message, truncate_utf8

if TYPE_CHECKING:
    import httpx

    from wsmon.config.settings import ChannelFilter, Settings
    from wsmon.engine.store import Store

log = structlog.get_logger(__name__)


LINEAR_ISSUES_NAMESPACE = "linear_issues"

LINEAR_DESCRIPTION_MAX = 60_000


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
            raise transport_error(self.name, exc) from None
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
            raise http_error(self.name, response, self._clock.now())
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

    def send_test(self, msg: Message) -> str:
        return self.check()  # a test should not open an issue

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


def build(settings: Settings, store: Store | None, clock: Clock | None) -> LinearChannel | None:
    """On with a team id and an API key (WSMON_LINEAR_API_KEY or linear_api_key_file)."""
    ns = settings.notify
    linear_key = secret_value(settings, "linear_api_key", "WSMON_LINEAR_API_KEY")
    if ns.linear_team_id and linear_key:
        return LinearChannel(
            linear_key, ns.linear_team_id, store, api_url=ns.linear_api_url, filter=ns.linear_filter,
            timeout=ns.request_timeout_seconds, resolved_state_id=ns.linear_resolved_state_id, clock=clock,
        )
    if ns.linear_team_id:
        log.warning("notify_linear_off",
                    reason="linear_team_id set but no API key (WSMON_LINEAR_API_KEY or linear_api_key_file)")
    return None
