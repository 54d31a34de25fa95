"""The store URL forms wsmon accepts, known in one place.

The store opener (wsmon/engine/store/__init__.py) and ``wsmon config check`` (wsmon/config/loader.py)
both read them here, so a new backend is added to both by adding it once.
"""

from __future__ import annotations

from urllib.parse import urlsplit

SUPPORTED_SCHEMES = ("sqlite", "dynamodb")
URL_FORMS = "sqlite:///PATH or dynamodb://TABLE?region=REGION[&endpoint_url=URL]"


def store_url_problem(url: str) -> str | None:
    """What is wrong with ``url`` as a store URL, worded for the operator; None when its form is right."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in SUPPORTED_SCHEMES:
        return f"unknown scheme {scheme + '://' if scheme else 'in ' + repr(url)}; use {URL_FORMS}."
    if scheme == "sqlite" and not parts.path:
        return "sqlite URL has no path; use sqlite:///PATH."
    if scheme == "dynamodb" and not parts.netloc:
        return "dynamodb URL has no table name; use dynamodb://TABLE?region=REGION."
    return None
