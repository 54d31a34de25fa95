"""Slack incoming webhook: one attachment per message, coloured by severity. The webhook URL is
the secret (and so are its token segments)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from wsmon.core.clock import Clock, SystemClock
from wsmon.core.textsafe import strip_control
from wsmon.engine.notify.channels.base import Channel, http_error, secret_value, transport_error
from wsmon.engine.notify.message import Message, truncate_utf8

if TYPE_CHECKING:
    import httpx

    from wsmon.config.settings import ChannelFilter, Settings
    from wsmon.engine.store import Store


SLACK_TEXT_MAX = 3000

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
            raise transport_error(self.name, exc) from None
        if response.status_code >= 300:
            raise http_error(self.name, response, self._clock.now())
        return "ok"

    def close(self) -> None:
        if self._http is not None:
            self._http.close()


def build(settings: Settings, store: Store | None, clock: Clock | None) -> SlackChannel | None:
    """On when a webhook URL is configured (WSMON_SLACK_WEBHOOK_URL or slack_webhook_url_file)."""
    ns = settings.notify
    webhook = secret_value(settings, "slack_webhook_url", "WSMON_SLACK_WEBHOOK_URL")
    if not webhook:
        return None
    return SlackChannel(webhook, filter=ns.slack_filter, timeout=ns.request_timeout_seconds, clock=clock)
