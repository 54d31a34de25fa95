"""The notification channels, and the registry that builds them from the settings.

Adding a channel is one module here (a ``Channel`` subclass and a ``build(settings, store, clock)``
that returns it when the configuration turns it on, else None) plus its line in ``BUILDERS``;
``tests/test_registrations.py`` fails for a channel class no configuration can build.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

from wsmon.core.clock import Clock, SystemClock, isoformat
from wsmon.core.models import Severity
from wsmon.engine.notify.channels import linear, slack, sns
from wsmon.engine.notify.channels.base import Channel, ChannelError
from wsmon.engine.notify.message import Message, clean_block, clean_line

if TYPE_CHECKING:
    from wsmon.config.settings import Settings
    from wsmon.engine.store import Store

# name -> builder, in the order the channels are tried
BUILDERS: dict[str, Callable[[Settings, Store | None, Clock | None], Channel | None]] = {
    "sns": sns.build,
    "linear": linear.build,
    "slack": slack.build,
}


def build_channels(settings: Settings, store: Store | None, *, clock: Clock | None = None) -> dict[str, Channel]:
    """The channels the configuration turns on (SNS: topic ARN; Linear: team + key; Slack: webhook)."""
    channels: dict[str, Channel] = {}
    for name, builder in BUILDERS.items():
        channel = builder(settings, store, clock)
        if channel is not None:
            channels[name] = channel
    return channels


@dataclass
class TestResult:
    channel: str
    ok: bool
    detail: str


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
            text=clean_block(f"A test message sent by {actor} with 'wsmon notify test'. "
                              "If you read this, the channel works.", secrets),
            issue_key=f"test:{uuid.uuid4().hex}", dedup_id=f"test:{uuid.uuid4().hex}",
        )
        try:
            receipt = ch.send_test(msg)
        except ChannelError as exc:
            results.append(TestResult(name, False, clean_line(exc.detail, secrets, 500)))
        except Exception as exc:
            results.append(TestResult(name, False, f"unexpected {type(exc).__name__}"))
        else:
            results.append(TestResult(name, True, clean_line(receipt, secrets, 200)))
    return results
