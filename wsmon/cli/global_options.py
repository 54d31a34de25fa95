"""Global options (``--config``, ``--daylily-yaml``, ``--store``) after the subcommand too.

As with the AWS CLI and kubectl, ``wsmon list --store URL --json`` and ``wsmon store init --store
URL`` mean the same as putting the option before the command. The root command's own declarations
are the one definition: every subcommand (and every command of a group such as ``store``) gets a
copy of them whose value lands in the same ``CliContext``. Given twice, the later one wins.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from wsmon.cli.context import CliContext

# root parameter name -> how its value reaches the settings
GLOBAL_PARAMS = ("config_path", "daylily_yaml", "store_url")
_MARK = "_wsmon_global_options"


def apply_global_option(obj: CliContext, name: str, value: Any) -> None:
    """Record one global option's value, wherever on the command line it was given."""
    if value is None:
        return
    if name == "config_path":
        obj.config_path = Path(value)
    elif name == "daylily_yaml":
        obj.set_override("daylily_yaml", str(value))
    elif name == "store_url":
        obj.set_override("store.url", value)
    else:  # pragma: no cover - GLOBAL_PARAMS and this function change together
        raise ValueError(f"not a global option: {name}")


def _late_value(ctx: click.Context, param: click.Parameter, value: Any) -> Any:
    if value is not None:
        apply_global_option(ctx.ensure_object(CliContext), param.name or "", value)
    return value


def _copy(option: click.Option) -> click.Option:
    return click.Option([*option.opts, option.name or ""], type=option.type, metavar=option.metavar, help=option.help,
                        expose_value=False, callback=_late_value, is_eager=False)


def add_global_options(command: click.Command, root: click.Command) -> click.Command:
    """``command`` (and, for a group, its commands) accepting ``root``'s global options; idempotent."""
    if getattr(command, _MARK, False):
        return command
    globals_ = [p for p in root.params if isinstance(p, click.Option) and p.name in GLOBAL_PARAMS]
    taken = {opt for p in command.params for opt in p.opts}
    command.params.extend(_copy(p) for p in globals_ if not taken.intersection(p.opts))
    setattr(command, _MARK, True)
    if isinstance(command, click.Group):
        for sub in command.commands.values():
            add_global_options(sub, root)
    return command
