"""A click group whose commands may live in modules imported only when used.

node-check starts every few minutes on every node (Slurm's HealthCheckProgram, Telegraf's
inputs.exec): the command-line module must not import the slurm, telemetry and deploy packages
just to define their commands. ``LazyGroup(lazy={"name": "module:attr"})`` imports a command
when it runs or when the help lists it."""

from __future__ import annotations

import importlib
from typing import Any, Optional

import click


class LazyGroup(click.Group):
    def __init__(self, *args: Any, lazy: Optional[dict[str, str]] = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.lazy = dict(lazy or {})

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *self.lazy})

    def get_command(self, ctx: click.Context, cmd_name: str) -> Optional[click.Command]:
        if cmd_name in self.lazy:
            module, _, attr = self.lazy[cmd_name].partition(":")
            cmd: click.Command = getattr(importlib.import_module(module), attr)
            return cmd
        return super().get_command(ctx, cmd_name)
