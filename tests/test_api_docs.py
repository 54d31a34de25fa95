"""docs/api.md is generated from the API's OpenAPI document and must not drift from it."""

from __future__ import annotations

from pathlib import Path

from wsmon.api.docs import REGENERATE, openapi_document, render

DOC = Path(__file__).resolve().parents[1] / "docs" / "api.md"


def test_api_reference_matches_the_openapi_document() -> None:
    assert DOC.read_text(encoding="utf-8") == render(openapi_document()), (
        f"docs/api.md is out of date with the API's routes. Regenerate it with:\n    {REGENERATE}")


def test_every_route_is_in_the_reference() -> None:
    doc = openapi_document()
    text = DOC.read_text(encoding="utf-8")
    for path, methods in doc["paths"].items():
        for method in methods:
            assert f"### {method.upper()} {path}" in text
    assert "/api/v1/events/stream" in doc["paths"] and "/metrics" in doc["paths"]
