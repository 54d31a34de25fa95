"""Amazon SNS: one publish per message (subject, body and message attributes for filter policies)."""

from __future__ import annotations

import hashlib
import re
import unicodedata
from typing import TYPE_CHECKING, Any

from wsmon.core.textsafe import strip_control
from wsmon.engine.notify.channels.base import Channel, ChannelError
from wsmon.engine.notify.message import Message, truncate_utf8

if TYPE_CHECKING:
    from wsmon.config.settings import ChannelFilter, Settings
    from wsmon.core.clock import Clock
    from wsmon.engine.store import Store


SNS_SUBJECT_MAX = 100
SNS_MESSAGE_MAX_BYTES = 256 * 1024


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


def build(settings: Settings, store: Store | None, clock: Clock | None) -> SnsChannel | None:
    """On when ``notify.sns_topic_arn`` is set."""
    ns = settings.notify
    if not ns.sns_topic_arn:
        return None
    aws = settings.aws

    def factory() -> Any:
        from wsmon.core.aws import client

        return client("sns", profile=aws.profile, region=aws.region, endpoint_url=aws.endpoint_url,
                      max_attempts=2, connect_timeout=min(5.0, ns.request_timeout_seconds),
                      read_timeout=ns.request_timeout_seconds)

    return SnsChannel(ns.sns_topic_arn, filter=ns.sns_filter, client_factory=factory)
