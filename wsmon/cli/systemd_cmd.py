"""``wsmon systemd-unit [--user]``: the unit docs/deployment.md installs, printed from the
configuration so its timings follow the settings (tests/test_health.py checks the two match).

``Type=notify``: the engine says ``READY=1`` once its jobs are scheduled, and pings the watchdog
from its heartbeat job (wsmon/engine/watchdog.py), so systemd restarts a hung engine, not only a
crashed one.
"""

from __future__ import annotations

import click

from wsmon.cli.context import CliContext
from wsmon.cli.exits import command_settings

WATCHDOG_BEATS = 3  # WatchdogSec spans this many heartbeats: one slow beat is not yet a restart
MIN_WATCHDOG_SECONDS = 30


def watchdog_seconds(heartbeat_seconds: float) -> int:
    return max(MIN_WATCHDOG_SECONDS, int(round(WATCHDOG_BEATS * heartbeat_seconds)))


def render_unit(*, heartbeat_seconds: float, stop_seconds: float, user: bool, exec_path: str,
                config_path: str, monitor_id: str, account: str) -> str:
    watchdog = watchdog_seconds(heartbeat_seconds)
    if user:
        state = "%h/.local/state/wsmon"
        identity = ""
        env_file = "EnvironmentFile=-%h/.config/wsmon/secrets.env"
        hardening = ("# a user manager cannot build the mount namespaces of ProtectSystem= and\n"
                     "# PrivateTmp= without unprivileged user namespaces: install the system unit for those\n"
                     "NoNewPrivileges=true\n")
        wanted = "default.target"
    else:
        state = f"/var/lib/{account}"
        identity = f"User={account}\nGroup={account}\n"
        env_file = "EnvironmentFile=/etc/wsmon/secrets.env"
        hardening = ("NoNewPrivileges=true\n"
                     "ProtectSystem=strict\n"
                     f"ReadWritePaths={state}\n"
                     "# a private /tmp is fine for tmux: its sockets live in the state directory\n"
                     "# (TMUX_TMPDIR), so a restarted engine finds the sessions of the last one\n"
                     "PrivateTmp=true\n")
        wanted = "multi-user.target"
    return (
        "[Unit]\n"
        "Description=wsmon workset engine (Daylily)\n"
        "Wants=network-online.target\n"
        "After=network-online.target\n"
        "\n"
        "[Service]\n"
        "Type=notify\n"
        "NotifyAccess=main\n"
        f"{identity}"
        f"WorkingDirectory={state}\n"
        f"Environment=XDG_STATE_HOME={state}/state\n"
        f"Environment=TMUX_TMPDIR={state}/tmux\n"
        f"Environment=WSMON_MONITOR_ID={monitor_id}\n"
        f"{env_file}\n"
        f"ExecStartPre=/usr/bin/mkdir -p {state}/tmux\n"
        f"ExecStart={exec_path} --config {config_path} --headless\n"
        "# READY=1 once the jobs are scheduled; WATCHDOG=1 from the heartbeat job after its store\n"
        f"# write ({WATCHDOG_BEATS} beats of store.heartbeat_seconds = {heartbeat_seconds:g}s): a hung scheduler or store is restarted\n"
        f"WatchdogSec={watchdog}\n"
        "# SIGTERM: stop claiming, let short steps finish within runner.shutdown_grace_seconds,\n"
        "# leave tmux pipelines running, say goodbye in the store (STOPPING=1), exit 0.\n"
        "KillSignal=SIGTERM\n"
        "KillMode=mixed\n"
        f"TimeoutStopSec={int(stop_seconds)}\n"
        "Restart=on-failure\n"
        "RestartSec=10\n"
        f"{hardening}"
        "\n"
        "[Install]\n"
        f"WantedBy={wanted}\n"
    )


@click.command("systemd-unit")
@click.option("--user", "user_unit", is_flag=True, help="A user unit (systemctl --user) instead of a system one.")
@click.option("--exec", "exec_path", default="/opt/wsmon/.venv/bin/wsmon", show_default=True,
              help="The wsmon executable the unit runs.")
@click.option("--config-file", "config_file", default=None,
              help="The config file the unit passes (default /etc/wsmon/config.toml; "
                   "%h/.config/wsmon/config.toml with --user).")
@click.option("--monitor-id", default="headnode-1", show_default=True,
              help="WSMON_MONITOR_ID: keep it stable, it owns the leases across restarts.")
@click.option("--account", default="wsmon", show_default=True, help="System unit: the service user.")
@click.pass_obj
def systemd_unit(obj: CliContext, user_unit: bool, exec_path: str, config_file: str | None,
                 monitor_id: str, account: str) -> None:
    """Print the systemd unit for the headless engine (Type=notify, watchdog, hardening)."""
    settings = command_settings(obj)
    config = config_file or ("%h/.config/wsmon/config.toml" if user_unit else "/etc/wsmon/config.toml")
    runner = settings.runner
    click.echo(render_unit(heartbeat_seconds=settings.store.heartbeat_seconds,
                           stop_seconds=runner.shutdown_grace_seconds + runner.kill_grace_seconds + 50,
                           user=user_unit, exec_path=exec_path, config_path=config,
                           monitor_id=monitor_id, account=account), nl=False)
