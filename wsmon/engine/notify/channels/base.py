"""What every channel shares: the ``Channel`` base (a named destination with a filter), the
``ChannelError`` a failed delivery raises, and how HTTP answers and transport errors map onto it."""

from __future__ import annotations

import email.utils
import os
from datetime import datetime
from typing import TYPE_CHECKING

from wsmon.engine.notify.message import Message

if TYPE_CHECKING:
    import httpx

    from wsmon.config.settings import ChannelFilter, Settings


RETRY_AFTER_CAP_SECONDS = 3600.0


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

    def send_test(self, msg: Message) -> str:
        """``wsmon notify test``: prove the channel works (by default, by sending ``msg``)."""
        return self.send(msg)

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


def http_error(channel: str, response: httpx.Response, now: datetime | None) -> ChannelError:
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


def transport_error(channel: str, exc: Exception) -> ChannelError:
    import httpx

    if isinstance(exc, httpx.TimeoutException):
        return ChannelError(f"{channel}: timed out ({type(exc).__name__})")
    # never str(exc): transport errors can carry the URL, and a Slack webhook URL is the secret
    return ChannelError(f"{channel}: connection failed ({type(exc).__name__})")


def secret_value(settings: Settings, name: str, env_var: str) -> str | None:
    """The secret from config (env, file, or inline when allowed). A configured but unreadable
    secret file raises ``ConfigError`` naming the setting."""
    from wsmon.config.settings import resolve_secret

    value = resolve_secret(name, settings)
    if value is not None and value.get_secret_value().strip():
        return value.get_secret_value().strip()
    return (os.environ.get(env_var) or "").strip() or None
