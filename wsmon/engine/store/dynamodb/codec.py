"""Python values <-> DynamoDB attribute values, and expression placeholders.

DynamoDB has no float (numbers are Decimal) and no datetime (times are fixed-width ISO text that
sorts as time does). ``normalised`` is what a later read returns, which keeps the item cache exact.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import datetime
from decimal import Decimal
from enum import Enum
from typing import Any

from pydantic import BaseModel

from wsmon.core.clock import isoformat, parse_iso

_serializer = None
_deserializer = None


def _codecs() -> tuple[Any, Any]:
    # boto3.dynamodb.types imports boto3; done lazily so importing this module stays cheap.
    global _serializer, _deserializer
    if _serializer is None:
        from boto3.dynamodb.types import TypeDeserializer, TypeSerializer

        _serializer, _deserializer = TypeSerializer(), TypeDeserializer()
    return _serializer, _deserializer


def to_ddb(value: Any) -> Any:
    """Python value -> what TypeSerializer accepts (DynamoDB has no float: numbers are Decimal)."""
    if value is None or isinstance(value, (str, bool, Decimal)):
        return value
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            return str(value)  # DynamoDB numbers cannot hold NaN/inf; keep it readable
        return Decimal(repr(value))
    if isinstance(value, datetime):
        return isoformat(value)
    if isinstance(value, BaseModel):
        return to_ddb(value.model_dump())
    if isinstance(value, Mapping):
        return {str(k): to_ddb(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [to_ddb(v) for v in value]
    if isinstance(value, (set, frozenset)):
        return [to_ddb(v) for v in sorted(value, key=str)]
    raise TypeError(f"cannot store a {type(value).__name__} in DynamoDB")


def from_ddb(value: Any) -> Any:
    """Deserialised DynamoDB value -> plain Python (Decimal back to int or float)."""
    if isinstance(value, Decimal):
        if value == value.to_integral_value() and value.as_tuple().exponent >= 0:
            return int(value)
        return float(value)
    if isinstance(value, dict):
        return {k: from_ddb(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [from_ddb(v) for v in value]
    if isinstance(value, (set, frozenset)):
        return [from_ddb(v) for v in value]
    if isinstance(value, (bytes, bytearray)):
        return bytes(value)
    return value


def av(value: Any) -> dict[str, Any]:
    """One attribute value in the low-level client's wire form."""
    return _codecs()[0].serialize(to_ddb(value))


def item_av(item: Mapping[str, Any]) -> dict[str, Any]:
    """A whole item in wire form; None attributes are left out (DynamoDB has no "unset")."""
    return {k: av(v) for k, v in item.items() if v is not None}


def item_py(item: Mapping[str, Any] | None) -> dict[str, Any] | None:
    if item is None:
        return None
    deser = _codecs()[1]
    return {k: from_ddb(deser.deserialize(v)) for k, v in item.items()}


def normalised(value: Any) -> Any:
    """The value exactly as a later read would return it (keeps the local cache exact)."""
    return from_ddb(to_ddb(value))


def iso(dt: datetime | None) -> str | None:
    return None if dt is None else isoformat(dt)


def dt(text: str | None) -> datetime | None:
    return None if text in (None, "") else parse_iso(text)


class Expr:
    """Collects ExpressionAttributeNames/Values: every name goes through ``#n`` placeholders,
    so reserved words (state, status, name, value, owner...) never break an expression."""

    def __init__(self) -> None:
        self.names: dict[str, str] = {}
        self._name_keys: dict[str, str] = {}
        self.values: dict[str, Any] = {}

    def n(self, attr: str) -> str:
        key = self._name_keys.get(attr)
        if key is None:
            key = f"#n{len(self._name_keys)}"
            self._name_keys[attr] = key
            self.names[key] = attr
        return key

    def path(self, *parts: str) -> str:
        return ".".join(self.n(p) for p in parts)

    def v(self, value: Any) -> str:
        key = f":v{len(self.values)}"
        self.values[key] = av(value)
        return key

    def kwargs(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.names:
            out["ExpressionAttributeNames"] = dict(self.names)
        if self.values:
            out["ExpressionAttributeValues"] = dict(self.values)
        return out
