"""The HTTP face of wsmon: ``wsmon serve`` (REST under /api/v1, Server-Sent Events, Prometheus
/metrics) and the pieces ``wsmon web`` shares with it (tokens, bind checks).

Built on the same store and the same operations module as the dashboard and the CLI; nothing
here decides an operator action's rules. Needs the ``api`` extra (FastAPI, uvicorn,
prometheus-client); ``--headless`` without ``[api] enabled``, ``--help`` and the CLI never import
this package (tests/test_import_hygiene.py).
"""
