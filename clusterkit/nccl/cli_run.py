"""``clusterkit nccl single`` and ``clusterkit nccl localize``: the commands that run tests.

Both pick nodes as ``validate`` does, discover every node's rails with node-check's ib checks
(``NCCL_IB_HCA`` is never a hard-coded list), pick a launcher (``--launcher``: slurm, mpirun
over SSH, or the simulator with ``--sim``) and hand the tests to it.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any, Callable, Optional

import click

from clusterkit.errors import UsageError

LAUNCHERS = ("auto", "slurm", "mpirun", "sim")


def _size(value: str) -> int:
    """8G, 8GiB, 512M, 1048576: nccl-tests' size suffixes (K/M/G are powers of 1024)."""
    import re

    m = re.fullmatch(r"\s*(\d+)\s*([KMGT]?)(?:i?B)?\s*", value, re.IGNORECASE)
    if not m:
        raise UsageError(f"--message-size {value!r}: give a size such as 8G, 512M or 1048576")
    n = int(m.group(1)) * 1024 ** " KMGT".index((m.group(2) or " ").upper())
    if n <= 0:
        raise UsageError(f"--message-size {value!r}: give a size above 0")
    return n


def _common(f: Callable[..., Any]) -> Callable[..., Any]:
    opts = [
        click.option("--sim", "sim", is_flag=False, flag_value="builtin", default=None, metavar="[FLEET.yaml]",
                     help="Simulated nodes: the built-in fleet or your fleet file (runs locally)."),
        click.option("--nodes", multiple=True, metavar="HOSTLIST", help="Nodes to test (repeat: the union)."),
        click.option("--partition", metavar="NAME", help="The nodes of this Slurm partition (with --nodes: "
                                                         "those of them); down and drained nodes are left out."),
        click.option("--inventory", metavar="FILE", help="Inventory YAML (labels: leaf, socket_ifname)."),
        click.option("--exclude", multiple=True, metavar="HOSTLIST", help="Nodes to leave out."),
        click.option("--profile", metavar="NAME|FILE", help="Hardware profile: floors, message size, test "
                                                            "timeout (default: the fleet's, else h100-sxm)."),
        click.option("--launcher", "launcher_name", type=click.Choice(LAUNCHERS), default="auto",
                     show_default=True,
                     help="How tests start: srun steps (slurm), mpirun from a test's first node over SSH "
                          "(mpirun), or the simulator (sim); auto: sim with --sim, slurm with --partition "
                          "or inside a job, else mpirun."),
        click.option("--nccl-tests-dir", metavar="DIR", default="/usr/local/bin", show_default=True,
                     help="Where all_reduce_perf is on the nodes."),
        click.option("--torch", is_flag=True,
                     help="Run the torch.distributed all-reduce (NCCL backend) instead of nccl-tests: the "
                          "same table and busbw definition, for nodes without nccl-tests."),
        click.option("--mpi", type=click.Choice(["pmix", "pmi2", "none"]), default="pmix", show_default=True,
                     help="srun's MPI plugin (the site's setting)."),
        click.option("--message-size", metavar="SIZE", help="Message size judged (default: the profile's, 8G)."),
        click.option("--iters", type=click.IntRange(1, 10_000), default=20, show_default=True,
                     help="Timed iterations per size."),
        click.option("--warmup", type=click.IntRange(0, 10_000), default=5, show_default=True,
                     help="Warm-up iterations."),
        click.option("--test-timeout", type=click.FloatRange(0.1, 86400), default=None, metavar="SECONDS",
                     help="Seconds for one test; one that hangs ends here (default: the profile's, 300)."),
        click.option("--debug", is_flag=True, help="Set NCCL_DEBUG=INFO (and NET/INIT subsystems) in the tests."),
        click.option("--transport", "transport_name", type=click.Choice(["openssh", "paramiko"]), default=None,
                     help="SSH transport for rail discovery and mpirun (default: openssh)."),
        click.option("--ssh-config", metavar="FILE", help="ssh_config to use."),
        click.option("--user", metavar="USER", help="SSH login user."),
        click.option("--identity", metavar="KEY", help="SSH private key file."),
        click.option("--remote-command", default="clusterkit", show_default=True, metavar="CMD",
                     help="How to start clusterkit on the nodes (rail discovery)."),
        click.option("--ib-hca", metavar="VALUE",
                     help="NCCL_IB_HCA as given, instead of the rails node-check discovers on the nodes."),
        click.option("--json", "as_json", is_flag=True, help="Print the JSON document."),
        click.option("--output", metavar="FILE", help="Write the JSON document to FILE."),
        click.option("--slurm-backend", "slurm_backend", type=click.Choice(["auto", "cli", "pyslurm"]),
                     default="auto", show_default=True, help="How to talk to Slurm."),
    ]
    for o in reversed(opts):
        f = o(f)
    return f


class _Run:
    """What both commands set up: nodes, profile, settings, rails, launcher."""

    def __init__(self, kw: dict[str, Any], *, cross_node: bool) -> None:
        from clusterkit.selection import select_nodes, union
        from clusterkit.profiles import load_profile

        self.kw = kw
        name = kw["launcher_name"]
        if name == "sim" and kw["sim"] is None:
            raise UsageError("--launcher sim goes with --sim")
        if kw["sim"] is not None and name not in ("auto", "sim", "slurm"):
            raise UsageError(f"--launcher {name} cannot reach simulated nodes: use --launcher sim or slurm")
        if name == "auto":
            if kw["sim"] is not None and not kw["partition"]:
                name = "sim"
            elif kw["partition"] or os.environ.get("SLURM_JOB_ID"):
                name = "slurm"
            else:
                name = "mpirun"
        self.launcher_name = name
        if kw["output"]:
            from clusterkit.cli import _check_outputs

            _check_outputs((kw["output"], "--output"))
        self.sel = select_nodes(sim=kw["sim"], nodes_expr=union(kw["nodes"]), inventory=kw["inventory"],
                                partition=kw["partition"], exclude_expr=union(kw["exclude"]),
                                need_slurm=name == "slurm", slurm_backend=kw["slurm_backend"])
        spec = kw["profile"] or (self.sel.fleet.profile if self.sel.fleet is not None and self.sel.fleet.profile
                                 else None) or "h100-sxm"
        self.profile = load_profile(spec)
        from clusterkit.profiles import NcclProfile

        self.nccl = self.profile.nccl or NcclProfile()
        self.message_bytes = _size(kw["message_size"]) if kw["message_size"] else int(self.nccl.message_bytes)
        self.timeout = float(kw["test_timeout"] or self.nccl.test_timeout_s)
        self.gpus = self.profile.gpu.count if self.profile.gpu is not None else 0
        if self.gpus <= 0:
            raise UsageError(f"profile {self.profile.name}: no GPUs (gpu.count): nothing for NCCL to test")
        self.cross_node = cross_node
        self.rails: dict[str, Optional[list[str]]] = {}
        self.discovery: Any = None

    # ----------------------------------------------------------------- rails
    def discover_rails(self) -> None:
        """Every node's rails, from node-check's ib checks run over the controller's transport."""
        from clusterkit.nccl import env as nccl_env

        if self.kw["ib_hca"] is not None or not self.cross_node:
            return
        from clusterkit.validate.controller import validate_fleet

        transport, remote = self._check_transport()
        try:
            transport.prepare(self.sel.nodes)
            self.discovery = validate_fleet(self.sel.nodes, transport, profile_for=lambda n: self.profile,
                                            remote=remote, checks=["ib"], timeout=60.0, fanout=64,
                                            source=self.sel.source)
        finally:
            transport.close()
        for nr in self.discovery.nodes:
            self.rails[nr.node] = nccl_env.rails_from_report(nr)

    def _check_transport(self) -> tuple[Any, list[str]]:
        from clusterkit.cli import _remote_argv, controller_transport

        if self.launcher_name == "slurm" and self.sel.fleet is None:
            from clusterkit.slurm.srun import SrunTransport

            return (SrunTransport(partition=self.kw["partition"], gres=None, job_name="clusterkit-nccl-rails"),
                    _remote_argv(self.kw["remote_command"]))
        return controller_transport(sim=self.sel.sim_spec, transport_name=self.kw["transport_name"] or
                                    self.sel.inventory_transport or "openssh",
                                    ssh_config=self.kw["ssh_config"], user=self.kw["user"],
                                    identity=self.kw["identity"], connect_timeout=10.0, accept_new_hostkeys=False,
                                    remote_command=self.kw["remote_command"])

    def ib_hca(self, nodes: tuple[str, ...]) -> Optional[str]:
        from clusterkit.nccl import env as nccl_env

        if self.kw["ib_hca"] is not None:
            return str(self.kw["ib_hca"])
        if not self.rails:
            return None
        return nccl_env.ib_hca_value(self.rails, list(nodes))

    def node_rails(self, node: str) -> list[str]:
        """The devices of a node's rails (for the ib_write_bw sweep)."""
        rails = self.rails.get(node) or []
        return list(dict.fromkeys(r.split(":")[0] for r in rails))

    # ----------------------------------------------------------------- launcher
    def launcher(self) -> Any:
        from clusterkit.nccl import env as nccl_env
        from clusterkit.nccl import launch

        ifname = nccl_env.socket_ifname_from_labels(self.sel.nodes)
        extra = nccl_env.nccl_env(algo=None, ib_hca=None, socket_ifname=ifname, debug=self.kw["debug"])
        settings = launch.LaunchSettings(
            nccl_tests_dir=None if self.kw["torch"] else self.kw["nccl_tests_dir"], gpus_per_node=self.gpus, message_bytes=self.message_bytes,
            iters=self.kw["iters"], warmup_iters=self.kw["warmup"], mpi=self.kw["mpi"], env=extra,
            ib_hca=self.ib_hca, rails=self.node_rails)
        if self.launcher_name == "sim":
            assert self.sel.sim_spec is not None
            return launch.SimLauncher(self.sel.sim_spec, settings)
        if self.launcher_name == "slurm":
            if self.sel.sim_spec is not None:
                from clusterkit.sim.fabric import stand_in_dir

                settings.nccl_tests_dir = stand_in_dir(self.sel.sim_spec)
                settings.ib_write_bw.binary = os.path.join(settings.nccl_tests_dir, "ib_write_bw")
                settings.env = {**settings.env, "CLUSTERKIT_SIM": self.sel.sim_spec}
            return launch.SlurmLauncher(settings, partition=self.kw["partition"])
        transport, _ = self._check_transport()
        transport.prepare(self.sel.nodes)
        return launch.MpirunSshLauncher(transport, settings, nodes={n.name: n for n in self.sel.nodes})


def _progress(enabled: bool) -> Callable[[str], None]:
    def say(text: str) -> None:
        if enabled:
            click.echo(f"clusterkit nccl: {text}", err=True)
    return say


def _write_output(path: Optional[str], text: str) -> None:
    if path:
        from clusterkit.fsutil import emit_text

        emit_text(text, path, "--output")


# --------------------------------------------------------------------------- single
@click.command("single")
@_common
@click.option("--algo", type=click.Choice(["both", "nvls", "ring"]), default="both", show_default=True,
              help="NVLS (NCCL's default on NVSwitch), ring (NVLS off), or both, measured separately.")
def single_cmd(algo: str, **kw: Any) -> int:
    """Intra-node all-reduce on every node at once: busbw against the profile's floors and the fleet.

    Exit 0 every node passed, 1 a node failed (below the floor, wrong results), 3 a test could
    not run (hung, failed at init, no binary), 2 usage error.
    """
    from clusterkit import __version__
    from clusterkit.models import FleetReport
    from clusterkit.nccl.single import run_single

    run = _Run(kw, cross_node=False)
    algos: list[Any] = ["nvls", "ring"] if algo == "both" else [algo]
    say = _progress(not kw["as_json"] and sys.stderr.isatty())
    started = time.monotonic()
    launcher = run.launcher()
    try:
        def one_round(tests: list[Any]) -> list[Any]:
            say(f"{tests[0].algo}: {len(tests)} nodes")
            return list(launcher.run_round(tests, timeout=run.timeout))

        floors = {"nvls": run.nccl.single_nvls_gbps_min, "ring": run.nccl.single_ring_gbps_min}
        reports = run_single(run.sel.names, one_round, algos=algos, floors=floors, z_slow=run.nccl.z_slow,
                             spread_floor_rel=run.nccl.spread_floor_rel, message_bytes=run.message_bytes)
    finally:
        launcher.close()
    report = FleetReport(clusterkit_version=__version__, source=run.sel.source, profile=run.profile.name,
                         partition=kw["partition"], nodes=reports, skipped=run.sel.skipped,
                         duration_s=round(time.monotonic() - started, 3))
    report.finalize()
    text = report.to_json() + "\n"
    _write_output(kw["output"], text)
    if kw["as_json"] and not kw["output"]:
        click.echo(text, nl=False)
    else:
        from clusterkit.report.terminal import render_terminal

        click.echo(render_terminal(report, verbose=True), nl=False)
    return report.summary.exit_code


# --------------------------------------------------------------------------- localize
@click.command("localize")
@_common
@click.option("--topology", "topology_file", metavar="FILE",
              help="Switch topology in Slurm's topology.conf format (default: the sim fleet's switches, the "
                   "inventory's leaf labels, or `scontrol show topology`).")
def localize_cmd(topology_file: Optional[str], **kw: Any) -> int:
    """Find the bad node, rail or switch uplink among many, in at most 3 rounds of tests.

    Exit 0 nothing bad found, 1 a bad node, rail or uplink found, 3 suspects left undetermined
    (tests that could not run; an uplink that two leaves share), 2 usage error.
    """
    from clusterkit.nccl.localize import localize
    from clusterkit.selection import leaves_for

    run = _Run(kw, cross_node=True)
    if len(run.sel.nodes) < 2:
        raise UsageError("nccl localize needs at least 2 nodes (one node: clusterkit nccl single)")
    leaves, origin = leaves_for(run.sel, topology_file)
    say = _progress(not kw["as_json"] and sys.stderr.isatty())
    say(f"{len(run.sel.nodes)} nodes, topology: {origin}" + (f" ({len(leaves)} leaves)" if leaves else ""))
    run.discover_rails()
    launcher = run.launcher()
    try:
        report = localize(run.sel.names, launcher, leaves=leaves or None, nccl=run.nccl, timeout=run.timeout,
                          on_round=lambda r: say(f"round {r.round}: {len(r.tests)} tests"))
    finally:
        launcher.close()
    text = report.model_dump_json(by_alias=True, indent=2) + "\n"
    _write_output(kw["output"], text)
    if kw["as_json"] and not kw["output"]:
        click.echo(text, nl=False)
    else:
        click.echo(render_localize(report, run.sel.skipped), nl=False)
    if report.bad_nodes or report.bad_links or report.bad_uplinks:
        return 1
    return 3 if report.undetermined or report.undetermined_uplinks else 0


def render_localize(report: Any, skipped: list[Any]) -> str:
    lines = []
    tests = sum(len(r.tests) for r in report.rounds)
    ref = f", reference {report.reference_busbw_gbps:.1f} GB/s" if report.reference_busbw_gbps else ""
    nodes = {*report.healthy, *report.undetermined, *(b.node for b in report.bad_nodes),
             *(b.node for b in report.bad_links)}
    lines.append(f"nccl localize: {len(nodes)} nodes, {len(report.rounds)} rounds, {tests} tests, "
                 f"{report.elapsed_s:.1f} s{ref}")
    for r in report.rounds:
        bad = [t for t in r.tests if t.status != "pass"]
        lines.append(f"  round {r.round}: {len(r.tests)} tests, {len(bad)} not passing")
        for t in bad[:20]:
            bw = (f"{t.busbw_gbps:.1f} GB/s" if t.busbw_gbps is not None
                  else "" if t.kind == "ib_sweep" and t.rails_gbps else "no result")
            lines.append(f"    {t.status:9} {t.kind:9} {' + '.join(t.nodes)}: {' '.join(x for x in (bw, t.message) if x)}")
        if len(bad) > 20:
            lines.append(f"    ... and {len(bad) - 20} more")
    for b in report.bad_nodes:
        lines.append(f"BAD NODE   {b.node} ({b.kind}): RMA or repair the node")
        lines.extend(f"    {e}" for e in b.evidence)
    for k in report.bad_links:
        lines.append(f"BAD LINK   {k.node} {k.device}: reseat or replace the cable / transceiver / HCA")
        lines.extend(f"    {e}" for e in k.evidence)
    for u in report.bad_uplinks:
        lines.append(f"BAD UPLINK {u.switch}: open a ticket for the switch (no node is condemned)")
        lines.extend(f"    {e}" for e in u.evidence)
    if report.undetermined:
        lines.append(f"undetermined: {', '.join(report.undetermined)}")
    for u in report.undetermined_uplinks:
        lines.append(f"UPLINK?    {u.switch}: slow tests cross it, but the rounds cannot tell it from another")
        lines.extend(f"    {e}" for e in u.evidence)
    for s in skipped:
        lines.append(f"skipped: {s.node} ({s.why})")
    lines.append(f"healthy: {len(report.healthy)} nodes")
    lines.append(f"exclude: {report.exclude or '(none)'}")
    return "\n".join(lines) + "\n"
