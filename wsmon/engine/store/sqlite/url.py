"""``sqlite:///PATH`` store URLs."""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import unquote

from wsmon.engine.store.base import (
    StoreError,
)


def parse_sqlite_url(url: str) -> Path:
    """``sqlite:///PATH`` -> absolute path.

    ``sqlite:///abs/path`` and ``sqlite:////abs/path`` both mean ``/abs/path`` (the second is what
    joining ``sqlite:///`` with an absolute path gives); ``sqlite:///~/x.db`` expands the home
    directory and ``sqlite:///./x.db`` is relative to the working directory. Percent-escapes are
    decoded so paths with spaces can be written either way.
    """
    if not url.lower().startswith("sqlite://"):
        raise StoreError(f"not a SQLite store URL: {url!r} (expected sqlite:///PATH)")
    rest = unquote(url[len("sqlite://"):].split("?", 1)[0])
    if not rest.startswith("/"):
        raise StoreError(f"SQLite store URL {url!r} names a host; expected sqlite:///PATH")
    rest = rest[1:]
    if rest in ("", ":memory:"):
        raise StoreError(
            f"SQLite store URL {url!r} must name a file (an in-memory database cannot be shared "
            "between the engine, the dashboard and the CLI)"
        )
    if rest.startswith("~"):
        path = Path(rest).expanduser()
    elif rest.startswith(("./", "../")):
        path = Path.cwd() / rest
    else:
        path = Path("/" + rest.lstrip("/"))
    return Path(os.path.abspath(path))
