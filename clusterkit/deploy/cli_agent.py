"""``clusterkit deploy agent``: install clusterkit on the nodes (offline wheelhouse over SFTP,
a virtualenv beside the old one, an atomic symlink switch), plus optional extras.

``clusterkit.deploy.cli`` imports it when ``deploy agent`` runs.

Exit codes: 0 every node changed or unchanged; 1 at least one node failed; 2 usage or config
error (nothing contacted).
"""

from __future__ import annotations

import os
import sys
from typing import Optional

import click

from clusterkit.deploy.agent import (
    DEFAULT_BIN_DIR,
    DEFAULT_FANOUT,
    DEFAULT_HEALTHCHECK_PATH,
    DEFAULT_KEEP,
    DEFAULT_PREFIX,
    DEFAULT_PYTHON,
    DEFAULT_TELEGRAF_PATH,
)

SUDO_PASSWORD_ENV = "CLUSTERKIT_SUDO_PASSWORD"


def _abs_remote(option: str, path: str) -> str:
    from clusterkit.errors import UsageError

    if not path.startswith("/"):
        raise UsageError(f"{option} {path}: give an absolute path on the node")
    if "\n" in path or "\0" in path:
        raise UsageError(f"{option}: a path on one line")
    return path


@click.command("agent", short_help="Install clusterkit on the nodes (offline wheelhouse, atomic switch).")
@click.option("--nodes", multiple=True, metavar="HOSTLIST", help="Nodes, e.g. 'gpu-[001-032]' (repeat: the union).")
@click.option("--partition", metavar="NAME", help="The nodes of this Slurm partition (down or drained ones are "
              "left out and listed).")
@click.option("--inventory", metavar="FILE", help="Inventory YAML (nodes with host, port, user).")
@click.option("--exclude", multiple=True, metavar="HOSTLIST", help="Nodes to leave out (repeat: the union).")
@click.option("--prefix", default=DEFAULT_PREFIX, show_default=True, metavar="DIR",
              help="Where on the node: versions/<id>/ (virtualenvs), wheels/, current -> versions/<id>. "
                   "'{node}' in any node path becomes the node's name.")
@click.option("--python", "python", default=DEFAULT_PYTHON, show_default=True, metavar="PATH",
              help="The node's interpreter the virtualenv is made from (asked for its version and platform).")
@click.option("--bin-dir", default=DEFAULT_BIN_DIR, show_default=True, metavar="DIR",
              help="Where the 'clusterkit' link to <prefix>/current/bin/clusterkit goes (a directory on PATH).")
@click.option("--keep", default=DEFAULT_KEEP, show_default=True, type=click.IntRange(0, 100), metavar="N",
              help="Older versions kept beside the current one (for a quick switch back).")
@click.option("--wheelhouse", "wheelhouse_dir", metavar="DIR",
              help="A prepared wheelhouse (exactly one clusterkit wheel, its dependencies for the nodes' "
                   "platforms, ideally a pip wheel) instead of building one.")
@click.option("--cache-dir", type=click.Path(file_okay=False), metavar="DIR",
              help="Where built wheelhouses are cached (default: $XDG_CACHE_HOME/clusterkit or ~/.cache/clusterkit).")
@click.option("--ssh-config", metavar="FILE", help="ssh_config to use (default: ~/.ssh/config, /etc/ssh/ssh_config).")
@click.option("--user", metavar="USER", help="SSH login user (overrides the inventory and ssh_config).")
@click.option("--identity", metavar="KEY", help="SSH private key file.")
@click.option("--connect-timeout", default=10.0, show_default=True, type=click.FloatRange(1, 3600),
              help="Seconds for the SSH connection to one node.")
@click.option("--timeout", default=900.0, show_default=True, type=click.FloatRange(1, 86400),
              help="Seconds for one remote step on a node (the pip install is the longest).")
@click.option("--fanout", default=DEFAULT_FANOUT, show_default=True, type=click.IntRange(1, 4096),
              help="Nodes in flight at once.")
@click.option("--sudo", is_flag=True, help="Make changes through sudo (the password, if one is needed, from "
              f"--sudo-password-file or ${SUDO_PASSWORD_ENV}; never on the command line).")
@click.option("--sudo-password-file", type=click.Path(dir_okay=False), metavar="FILE",
              help="File holding the sudo password (first line).")
@click.option("--telegraf-config", "telegraf_config", type=click.Path(dir_okay=False), metavar="FILE",
              help="Also put this rendered Telegraf config (clusterkit telemetry telegraf-config -o FILE) on the nodes.")
@click.option("--telegraf-path", default=DEFAULT_TELEGRAF_PATH, show_default=True, metavar="PATH",
              help="Where the Telegraf config goes on the node.")
@click.option("--healthcheck-wrapper", "healthcheck_path", is_flag=False, flag_value=DEFAULT_HEALTHCHECK_PATH,
              default=None, metavar="[PATH]",
              help=f"Also write the HealthCheckProgram wrapper (default path {DEFAULT_HEALTHCHECK_PATH}).")
@click.option("--healthcheck-arg", "healthcheck_args", multiple=True, metavar="ARG",
              help="An argument the wrapper passes to node-check (repeat: --healthcheck-arg=--profile "
                   "--healthcheck-arg=h200-sxm).")
@click.option("--print-healthcheck-wrapper", is_flag=True,
              help="Print the wrapper for --prefix and exit (no node is contacted).")
@click.option("--state-dir", metavar="DIR", help="Also make the node's clusterkit state directory.")
@click.option("--state-owner", metavar="USER", help="Owner of --state-dir (chown; needs root or --sudo).")
@click.option("--dry-run", is_flag=True, help="Ask the nodes and say what would change; change nothing.")
@click.option("--json", "as_json", is_flag=True, help="Print the clusterkit.deploy-agent/v1 JSON document.")
@click.option("--quiet", "-q", is_flag=True, help="No progress lines on stderr.")
def agent_cmd(nodes: tuple[str, ...], partition: Optional[str], inventory: Optional[str], exclude: tuple[str, ...],
              prefix: str, python: str, bin_dir: str, keep: int, wheelhouse_dir: Optional[str],
              cache_dir: Optional[str], ssh_config: Optional[str], user: Optional[str], identity: Optional[str],
              connect_timeout: float, timeout: float, fanout: int, sudo: bool, sudo_password_file: Optional[str],
              telegraf_config: Optional[str], telegraf_path: str, healthcheck_path: Optional[str],
              healthcheck_args: tuple[str, ...], print_healthcheck_wrapper: bool, state_dir: Optional[str],
              state_owner: Optional[str], dry_run: bool, as_json: bool, quiet: bool) -> int:
    """Install clusterkit on the nodes, offline: a wheelhouse built here for each node's Python and
    platform (or --wheelhouse DIR) goes over SFTP to <prefix>/wheels, a virtualenv is made at
    <prefix>/versions/<version>-<digest> with 'pip install --no-index', and <prefix>/current and
    <bin-dir>/clusterkit are switched atomically. A node already on this version is 'unchanged'
    (nothing uploaded); a node that fails keeps its old version (docs/commands/deploy-agent.md).

    Exit 0 every node changed or unchanged, 1 a node failed, 2 usage or config error.
    """
    from pathlib import Path

    from clusterkit.deploy.agent import Extra, FabricConnector, Options, deploy, healthcheck_wrapper_text
    from clusterkit.errors import UsageError

    prefix = _abs_remote("--prefix", prefix)
    if print_healthcheck_wrapper:
        click.echo(healthcheck_wrapper_text(prefix, healthcheck_args), nl=False)
        return 0
    bin_dir = _abs_remote("--bin-dir", bin_dir)
    python = _abs_remote("--python", python)
    if state_owner and not state_dir:
        raise UsageError("--state-owner goes with --state-dir")
    if healthcheck_args and not healthcheck_path:
        raise UsageError("--healthcheck-arg goes with --healthcheck-wrapper")
    if sudo_password_file and not sudo:
        raise UsageError("--sudo-password-file goes with --sudo")
    extras: list[Extra] = []
    if telegraf_config:
        try:
            content = Path(telegraf_config).read_bytes()
        except OSError as e:
            raise UsageError(f"--telegraf-config {telegraf_config}: {e.strerror or e}") from None
        extras.append(Extra("telegraf config", _abs_remote("--telegraf-path", telegraf_path), content, 0o644))
    if healthcheck_path:
        def wrapper(node_prefix: str) -> bytes:
            return healthcheck_wrapper_text(node_prefix, healthcheck_args).encode()

        extras.append(Extra("healthcheck wrapper", _abs_remote("--healthcheck-wrapper", healthcheck_path),
                            wrapper(prefix), 0o755, per_prefix=wrapper))
    password: Optional[str] = None
    if sudo:
        if sudo_password_file:
            try:
                with open(sudo_password_file, encoding="utf-8") as fh:
                    password = fh.readline().rstrip("\n")
            except OSError as e:
                raise UsageError(f"--sudo-password-file {sudo_password_file}: {e.strerror or e}") from None
        else:
            password = os.environ.get(SUDO_PASSWORD_ENV) or None

    from clusterkit.selection import select_nodes, union

    sel = select_nodes(sim=None, nodes_expr=union(nodes), inventory=inventory, partition=partition,
                       exclude_expr=union(exclude), keep_drained=True)
    options = Options(prefix=prefix, python=python, bin_dir=bin_dir, keep=keep, sudo=sudo, dry_run=dry_run,
                      extras=tuple(extras), state_dir=_abs_remote("--state-dir", state_dir) if state_dir else None,
                      state_owner=state_owner, timeout=timeout)
    connector = FabricConnector(ssh_config=ssh_config, user=user, identity=identity,
                                connect_timeout=connect_timeout, sudo_password=password)

    def progress(msg: str) -> None:
        if not quiet:
            try:
                click.echo(f"deploy agent: {msg}", err=True)
            except OSError:
                pass

    progress(f"{len(sel.nodes)} nodes ({sel.source}); prefix {prefix}" + (" (dry run)" if dry_run else ""))
    report = deploy(sel.nodes, options, connector=connector, wheelhouse_dir=wheelhouse_dir,
                    cache_dir=Path(cache_dir) if cache_dir else None, fanout=fanout, progress=progress)
    report.skipped = [s.model_dump() for s in sel.skipped]
    click.echo(report.to_json() if as_json else report.table())
    sys.stdout.flush()
    return report.exit_code

