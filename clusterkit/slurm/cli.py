"""``clusterkit slurm …``: resume nodes clusterkit drained, render and submit job templates."""

from __future__ import annotations

import sys
from typing import Any, Optional

import click


@click.group("slurm")
def slurm_group() -> None:
    """Slurm: resume nodes clusterkit drained, render and submit job templates."""


@slurm_group.command("resume")
@click.option("--partition", metavar="NAME", help="Resume nodes of this partition.")
@click.option("--nodes", "nodes_expr", metavar="HOSTLIST", help="Resume these nodes (with --partition: those of them).")
@click.option("--dry-run", is_flag=True, help="Re-check and say what would be resumed; change nothing.")
@click.option("--sim", "sim", is_flag=False, flag_value="builtin", default=None, metavar="[FLEET.yaml]",
              help="Re-check on simulated hardware, locally (the nodes still come from Slurm).")
@click.option("--profile", metavar="NAME|FILE", help="Hardware profile (default: the sim fleet's, else h100-sxm).")
@click.option("--transport", "transport_name", type=click.Choice(["openssh", "paramiko"]), default="openssh",
              show_default=True, help="How the re-check reaches the nodes (a drained node takes no srun jobs).")
@click.option("--ssh-config", metavar="FILE", help="ssh_config to use (default: ~/.ssh/config).")
@click.option("--user", metavar="USER", help="SSH login user.")
@click.option("--identity", metavar="KEY", help="SSH private key file.")
@click.option("--accept-new-hostkeys", is_flag=True, help="Accept and record host keys of new nodes.")
@click.option("--remote-command", default="clusterkit", show_default=True, metavar="CMD",
              help="How to start clusterkit on the nodes.")
@click.option("--timeout", default=120.0, show_default=True, type=click.FloatRange(0.1, 86400),
              help="Seconds for one node's re-check, connection included.")
@click.option("--connect-timeout", default=10.0, show_default=True, type=click.FloatRange(0.1, 3600),
              help="Seconds for the SSH connection to one node.")
@click.option("--fanout", default=64, show_default=True, type=click.IntRange(1, 4096), help="Nodes in flight at once.")
@click.option("--json", "as_json", is_flag=True, help="Print the re-check report (with the actions) as JSON.")
@click.option("--slurm-backend", "slurm_backend", type=click.Choice(["auto", "cli", "pyslurm"]), default="auto",
              show_default=True, help="How to talk to Slurm.")
def resume_cmd(partition: Optional[str], nodes_expr: Optional[str], dry_run: bool, sim: Optional[str],
               profile: Optional[str], transport_name: str, ssh_config: Optional[str], user: Optional[str],
               identity: Optional[str], accept_new_hostkeys: bool, remote_command: str, timeout: float,
               connect_timeout: float, fanout: int, as_json: bool, slurm_backend: str) -> int:
    """Resume nodes clusterkit drained, once the checks that drained them pass again.

    Only nodes whose drain reason clusterkit set ('clusterkit: <checks>: …') are considered; an
    operator's drain is never touched. Each is re-checked first (over SSH, or --sim), with
    exactly the checks its reason names; it is resumed only when they all pass.
    Exit 0 every candidate resumed (or none to resume), 1 some still fail, 3 some could not be
    re-checked or Slurm could not be changed, 2 bad input.
    """
    from clusterkit import cli as main_cli
    from clusterkit import hostlist
    from clusterkit.errors import UsageError
    from clusterkit.models import FleetReport, Node, SlurmAction
    from clusterkit.profiles import load_profile
    from clusterkit.slurm import reason as reasons
    from clusterkit.slurm.actions import format_actions
    from clusterkit.slurm.backend import SlurmError, make_backend
    from clusterkit.validate.controller import validate_fleet

    if not partition and not nodes_expr:
        raise UsageError("say which nodes: --partition NAME and/or --nodes HOSTLIST")
    wanted = set(hostlist.expand(nodes_expr)) if nodes_expr else None
    backend = make_backend(prefer=slurm_backend)
    found = backend.nodes(partition=partition) if partition else backend.nodes(names=sorted(wanted or ()))
    if wanted is not None:
        found = [n for n in found if n.name in wanted]
    actions: list[SlurmAction] = []
    candidates = []
    for n in found:
        if not n.drained:
            continue
        owned = reasons.parse(n.reason)
        if owned is None:
            who = f" (set by {n.reason_user})" if n.reason_user else ""
            actions.append(SlurmAction(node=n.name, action="left-alone", state_before=n.state_text,
                                       reason_before=n.reason,
                                       message=f"drained by someone else: {n.reason!r}{who}; never resumed by clusterkit"))
        else:
            candidates.append((n, owned))
    fleet = None
    if sim is not None:
        import os

        from clusterkit import sim as simmod

        fleet = simmod.load_fleet(sim if sim == "builtin" else os.path.abspath(sim))
    prof = load_profile(profile or (fleet.profile if fleet is not None and fleet.profile else None) or "h100-sxm")
    reports = []
    if candidates:
        transport, remote = main_cli.controller_transport(
            sim=sim, transport_name=transport_name, ssh_config=ssh_config, user=user, identity=identity,
            connect_timeout=min(connect_timeout, timeout), accept_new_hostkeys=accept_new_hostkeys,
            remote_command=remote_command)
        groups: dict[tuple[str, ...], list[Any]] = {}
        for n, owned in candidates:
            groups.setdefault(owned.selectors, []).append(n)
        try:
            transport.prepare([Node(name=n.name) for n, _ in candidates])
            for sels, members in groups.items():
                run = validate_fleet([Node(name=n.name) for n in members], transport, profile_for=lambda _n: prof,
                                     remote=remote, checks=list(sels), timeout=timeout, fanout=fanout,
                                     source="slurm resume")
                reports.extend(run.nodes)
        finally:
            transport.close()
    by_name = {r.node: r for r in reports}
    to_resume: list[SlurmAction] = []
    for n, owned in candidates:
        rep = by_name.get(n.name)
        base: dict[str, Any] = dict(state_before=n.state_text, reason_before=n.reason)
        if rep is None:
            continue
        ok, why = reasons.covered(rep.checks, owned.selectors)
        if ok and rep.status.value in ("pass", "warn"):
            a = SlurmAction(node=n.name, action="resume", state_after=n.state_text.replace("+drain", ""),
                            reason_after=None, message=f"{','.join(owned.selectors)} pass again", **base)
            to_resume.append(a)
            actions.append(a)
        elif rep.status.value in ("fail",):
            actions.append(SlurmAction(node=n.name, action="still-failing", message=f"stays drained: {why}", **base))
        else:
            actions.append(SlurmAction(node=n.name, action="not-rechecked",
                                       message=f"stays drained: could not re-check ({rep.error or why})", **base))
    slurm_error: Optional[str] = None
    if to_resume:
        if dry_run:
            for a in to_resume:
                a.outcome = "dry-run"
        else:
            try:
                backend.resume([a.node for a in to_resume])
                for a in to_resume:
                    a.outcome = "applied"
            except SlurmError as e:
                slurm_error = str(e)
                for a in to_resume:
                    a.outcome, a.state_after, a.message = "failed", a.state_before, f"not resumed: {e}"
    from clusterkit import __version__

    report = FleetReport(clusterkit_version=__version__, source=f"slurm resume {partition or nodes_expr}",
                         profile=prof.name, nodes=reports, actions=actions).finalize()
    if as_json:
        click.echo(report.to_json())
    else:
        lines = format_actions(actions, dry_run=dry_run, title="slurm resume")
        if not candidates:
            lines.insert(0, f"nothing to resume: no node drained by clusterkit among {len(found)} node(s)")
        click.echo("\n".join(lines))
    if slurm_error:
        main_cli._err(f"Slurm: {slurm_error}")
        return max(report.summary.exit_code, 3) if report.summary.exit_code != 1 else 1
    return report.summary.exit_code


def _register() -> None:
    from clusterkit.slurm import cli_render

    for cmd in getattr(cli_render, "COMMANDS", []):
        slurm_group.add_command(cmd)


try:  # the template commands live in their own module
    _register()
except ImportError:  # pragma: no cover - only while that module is being written
    pass


if __name__ == "__main__":  # pragma: no cover
    sys.exit(slurm_group())
