"""Generates docs/api.md from the API's OpenAPI document, so the reference cannot drift.

Regenerate after changing a route or a body:

    python -m wsmon.api.docs > docs/api.md

tests/test_api_docs.py fails when the file differs from this output.
"""

from __future__ import annotations

import json
import sys
from typing import Any

REGENERATE = "python -m wsmon.api.docs > docs/api.md"


def openapi_document() -> dict[str, Any]:
    """The document the server publishes at /api/v1/openapi.json (no store is touched)."""
    from wsmon.api.app import create_app
    from wsmon.api.auth import TokenSet
    from wsmon.config.settings import Settings
    from wsmon.core.clock import SystemClock

    app = create_app(Settings(), store=None, clock=SystemClock(), tokens=TokenSet([]),  # type: ignore[arg-type]
                     stream=False)
    return app.openapi()


def _ref_name(schema: dict[str, Any]) -> str | None:
    ref = schema.get("$ref")
    return ref.rsplit("/", 1)[-1] if ref else None


def _type(schema: dict[str, Any]) -> str:
    if "$ref" in schema:
        return f"[{_ref_name(schema)}](#{_ref_name(schema).lower()})"
    if "anyOf" in schema:
        return " or ".join(_type(s) for s in schema["anyOf"])
    if "enum" in schema:
        return " \\| ".join(f"`{v}`" for v in schema["enum"])
    if "const" in schema:
        return f"`{schema['const']}`"
    kind = schema.get("type", "any")
    if kind == "array":
        return f"list of {_type(schema.get('items', {}))}"
    if kind == "object" and "additionalProperties" in schema:
        extra = schema["additionalProperties"]
        return f"map of {_type(extra) if isinstance(extra, dict) else 'any'}"
    return str(kind)


def _cell(text: Any) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _auth(path: str, method: str) -> str:
    if path.endswith("/health"):
        return "none"
    if method == "get" or path.endswith("/worksets/validate"):
        return "read"
    return "read-write token"


def render(doc: dict[str, Any]) -> str:
    out = [
        "# HTTP API reference", "",
        f"<!-- Generated from the OpenAPI document by `{REGENERATE}`. Do not edit by hand:",
        "     tests/test_api_docs.py fails when this file is out of date. -->", "",
        (f"`wsmon serve` (version {doc['info']['version']}) serves this API; the live document is "
         "`/api/v1/openapi.json` and the interactive docs are `/api/v1/docs`. Deployment behind a "
         "reverse proxy with TLS: [deployment.md](deployment.md#7-the-http-api)."), "",
        doc["info"]["description"].strip(), "",
        "## Endpoints", "",
        ("Token: *none* for anyone; *read* needs a read or read-write token when the server is bound "
         "beyond loopback or `api.read_token_required` is set; *read-write token* always."), "",
        "| Method | Path | What | Token |", "|---|---|---|---|",
    ]
    paths = doc["paths"]
    for path in paths:
        for method, op in paths[path].items():
            anchor = f"{method}-{path}".lower().replace("/", "").replace("{", "").replace("}", "").replace("_", "")
            out.append(f"| {method.upper()} | [`{path}`](#{anchor}) | {_cell(op.get('summary', ''))} | {_auth(path, method)} |")
    out.append("")
    for path in paths:
        for method, op in paths[path].items():
            out += [f"### {method.upper()} {path}", "", _cell(op.get("summary", "")) + ".", ""]
            if op.get("description"):
                out += [op["description"].strip(), ""]
            params = op.get("parameters") or []
            if params:
                out += ["| Parameter | In | Type | Required | Description |", "|---|---|---|---|---|"]
                for p in params:
                    out.append(f"| `{p['name']}` | {p['in']} | {_cell(_type(p.get('schema', {})))} | "
                               f"{'yes' if p.get('required') else 'no'} | {_cell(p.get('description', ''))} |")
                out.append("")
            body = (op.get("requestBody") or {}).get("content") or {}
            if body:
                kinds = ", ".join(f"`{k}`" + (f" ({_type(v['schema'])})" if v.get("schema", {}).get("$ref") else "")
                                  for k, v in body.items())
                out += [f"Request body: {kinds}.", ""]
            codes = ", ".join(f"{code} {_cell(r.get('description', ''))}".strip()
                              for code, r in sorted(op.get("responses", {}).items()))
            out += [f"Responses: {codes}.", ""]
    out += ["## Schemas", ""]
    for name, schema in sorted(doc.get("components", {}).get("schemas", {}).items()):
        out += [f"### {name}", ""]
        if schema.get("description"):
            out += [_cell(schema["description"]), ""]
        props = schema.get("properties")
        if props:
            required = set(schema.get("required", []))
            out += ["| Field | Type | Required | Description |", "|---|---|---|---|"]
            for field, spec in props.items():
                out.append(f"| `{field}` | {_cell(_type(spec))} | {'yes' if field in required else 'no'} | "
                           f"{_cell(spec.get('description', ''))} |")
            out.append("")
        elif "enum" in schema:
            out += ["One of " + ", ".join(f"`{v}`" for v in schema["enum"]) + ".", ""]
    return "\n".join(out).rstrip() + "\n"


def main() -> None:
    if "--json" in sys.argv[1:]:
        sys.stdout.write(json.dumps(openapi_document(), indent=2) + "\n")
        return
    sys.stdout.write(render(openapi_document()))


if __name__ == "__main__":
    main()
