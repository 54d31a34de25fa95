"""Who is acting: the operator behind a dashboard or a command, and the default monitor id.

Both are built from the same two facts (the login name and the host name), so they live here once.
"""

from __future__ import annotations

import getpass
import os
import socket


def login_name() -> str:
    """The user running this process; the numeric uid when there is no passwd entry (some containers)."""
    try:
        return getpass.getuser()
    except Exception:
        return str(os.getuid())


def operator_actor() -> str:
    """``user@host``: who an operator action (dashboard or CLI) is recorded as in the history."""
    return f"{login_name()}@{socket.gethostname()}"


def default_monitor_id() -> str:
    """``host-user``: the monitor id when ``monitor_id`` is not configured."""
    return f"{socket.gethostname()}-{login_name()}"
