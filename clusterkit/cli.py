"""The command line: parses options, calls the library, maps errors to exit codes.

Exit codes (DESIGN.md): 0 healthy · 1 a node failed · 2 usage/config error · 3 incomplete
(unreachable nodes or checks that could not run, no failures) · 4 internal error · 130 interrupted.
Everything heavy is imported inside the command that needs it.
"""

from __future__ import annotations

import os
import sys

import click

from clusterkit import __version__
from clusterkit.errors import ClusterkitError

EXIT_OK, EXIT_FAIL, EXIT_USAGE, EXIT_INCOMPLETE, EXIT_INTERNAL, EXIT_INTERRUPTED = 0, 1, 2, 3, 4, 130


def _err(message: str) -> None:
    click.echo(f"clusterkit: error: {message}", err=True)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="clusterkit")
def cli() -> None:
    """Validate GPU fleets over SSH and keep only healthy nodes in service."""


def main(argv: list[str] | None = None) -> None:
    """Entry point: runs the CLI and turns every outcome into one exit code."""
    try:
        rc = cli.main(args=argv, prog_name="clusterkit", standalone_mode=False)
    except click.exceptions.Abort:
        _err("interrupted")
        sys.exit(EXIT_INTERRUPTED)
    except KeyboardInterrupt:
        _err("interrupted")
        sys.exit(EXIT_INTERRUPTED)
    except click.ClickException as e:
        e.show()
        sys.exit(EXIT_USAGE if e.exit_code not in (0,) else 0)
    except click.exceptions.Exit as e:
        sys.exit(e.exit_code)
    except ClusterkitError as e:
        _err(str(e))
        sys.exit(e.exit_code)
    except BrokenPipeError:
        # stdout closed early (| head): not an error of ours.
        try:
            sys.stdout = open(os.devnull, "w")  # noqa: SIM115
        except OSError:
            pass
        sys.exit(EXIT_OK)
    except Exception as e:  # noqa: BLE001 - last resort: one line, never a traceback
        if os.environ.get("CLUSTERKIT_DEBUG"):
            raise
        _err(f"internal error: {type(e).__name__}: {' '.join(str(e).split())} "
             "(set CLUSTERKIT_DEBUG=1 for a traceback)")
        sys.exit(EXIT_INTERNAL)
    sys.exit(rc if isinstance(rc, int) else EXIT_OK)


# --------------------------------------------------------------------------- hosts
@cli.command("hosts")
@click.option("--fold", "do_fold", is_flag=True, help="Fold names into one hostlist expression.")
@click.argument("exprs", nargs=-1, required=True)
def hosts_cmd(do_fold: bool, exprs: tuple[str, ...]) -> int:
    """Expand a hostlist expression one name per line, or fold names (--fold).

    Like `scontrol show hostnames` / `scontrol show hostlistsorted`.
    """
    from clusterkit import hostlist

    if do_fold:
        names: list[str] = []
        for e in exprs:
            names.extend(hostlist.expand(e))
        click.echo(hostlist.fold(names))
    else:
        for e in exprs:
            for name in hostlist.expand(e):
                click.echo(name)
    return EXIT_OK


# --------------------------------------------------------------------------- parse
def _tool_names() -> list[str]:
    from clusterkit.parsers import TOOLS

    return sorted(TOOLS)


@cli.command("parse")
@click.argument("tool", metavar="TOOL")
@click.argument("file", metavar="FILE")
@click.option("--json", "as_json", is_flag=True, help="Print the parsed model as JSON.")
def parse_cmd(tool: str, file: str, as_json: bool) -> int:
    """Parse a captured tool output FILE ('-' for stdin) and print what it says.

    TOOL is one of: nvidia-smi-q, nvidia-smi-topo, nvidia-smi-nvlink, nvidia-smi-csv,
    nccl-tests, ibstat, ibstatus, ibv_devinfo, perfquery, ib_write_bw, ib_write_lat, fio,
    dcgmi-diag, gpu-burn, nvbandwidth, dmesg-xid, sinfo, scontrol-node.
    """
    from clusterkit.errors import ParseError, UsageError
    from clusterkit.parsers import TOOLS, get_parser

    if tool not in TOOLS:
        raise UsageError(f"unknown tool {tool!r}; one of: {', '.join(_tool_names())}")
    if file == "-":
        data = sys.stdin.buffer.read()
        label = "<stdin>"
    else:
        try:
            with open(file, "rb") as fh:
                data = fh.read()
        except OSError as e:
            raise UsageError(f"cannot read {file}: {e.strerror or e}") from None
        label = file
    text = data.decode("utf-8", errors="replace")
    try:
        model = get_parser(tool)(text)
    except ParseError as e:
        raise ParseError(f"{label}: {e}") from None
    if as_json:
        click.echo(model.model_dump_json(indent=2, by_alias=True))
    else:
        click.echo(model.summary())
    return EXIT_OK


# --------------------------------------------------------------------------- node-check
def _split_checks(value: tuple[str, ...]) -> list[str] | None:
    if not value:
        return None
    items = [c.strip() for v in value for c in v.split(",") if c.strip()]
    if not items:
        from clusterkit.errors import UsageError

        raise UsageError("--checks names no check")
    return items


def _load_profile_arg(spec: str | None):
    from clusterkit.profiles import load_profile, parse_profile

    if spec == "-":
        return parse_profile(sys.stdin.read(), "<stdin>")
    if spec is None:
        from clusterkit.validate.runner import default_profile_name

        spec = default_profile_name()
    return load_profile(spec)


@cli.command("node-check")
@click.option("--profile", "profile", metavar="NAME|FILE|-",
              help="Hardware profile: built-in name (h100-sxm, h200-sxm), a YAML file, or '-' "
                   "to read it from stdin. Default: $CLUSTERKIT_PROFILE, else the simulated "
                   "fleet's profile on a simulated node, else h100-sxm.")
@click.option("--checks", multiple=True, metavar="LIST",
              help="Comma-separated checks or domains to run (gpu, system, gpu.ecc, …). Default: all.")
@click.option("--json", "as_json", is_flag=True, help="Print the node report as JSON.")
def node_check_cmd(profile: str | None, checks: tuple[str, ...], as_json: bool) -> int:
    """Check this node's hardware against a profile (runs on the node itself).

    Exit 0 healthy, 1 a check failed, 3 a check could not run, 2 bad input.
    """
    from clusterkit.models import NODE_SCHEMA, NodeStatus
    from clusterkit.validate.runner import run_node_check

    prof = _load_profile_arg(profile)
    report = run_node_check(prof, _split_checks(checks))
    if as_json:
        doc = report.model_dump(mode="json")
        import json

        click.echo(json.dumps({"schema": NODE_SCHEMA, **doc}, separators=(",", ":")))
    else:
        for c in report.checks:
            if c.status.value in ("pass", "skip"):
                continue
            subj = f" {c.subject}" if c.subject else ""
            click.echo(f"{c.status.value.upper():5} {c.check}{subj}: {c.message}")
        n = len(report.checks)
        click.echo(f"{report.node}: {report.status.value} ({n} checks, profile {prof.name}, "
                   f"{report.duration_s:.2f}s)")
    return {NodeStatus.PASS: EXIT_OK, NodeStatus.WARN: EXIT_OK, NodeStatus.FAIL: EXIT_FAIL}.get(
        report.status, EXIT_INCOMPLETE)


# --------------------------------------------------------------------------- validate
@cli.command("validate")
@click.option("--sim", "sim", is_flag=False, flag_value="builtin", default=None, metavar="[FLEET.yaml]",
              help="Run on a simulated fleet: the built-in one (8 HGX H100 nodes, two faults) or your "
                   "fleet file. Runs locally, no SSH.")
@click.option("--nodes", metavar="HOSTLIST", help="Nodes to validate, e.g. 'gpu-[001-032]'.")
@click.option("--inventory", metavar="FILE", help="Inventory YAML (nodes with host, port, user, labels, profile).")
@click.option("--exclude", metavar="HOSTLIST", help="Nodes to leave out.")
@click.option("--profile", metavar="NAME|FILE",
              help="Hardware profile (h100-sxm, h200-sxm, or a YAML file). Default: the inventory's or "
                   "sim fleet's, else h100-sxm.")
@click.option("--checks", multiple=True, metavar="LIST", help="Checks or domains to run (default: all).")
@click.option("--ssh-config", metavar="FILE", help="ssh_config to use (default: ~/.ssh/config).")
@click.option("--user", metavar="USER", help="SSH login user (overrides ssh_config).")
@click.option("--identity", metavar="KEY", help="SSH private key file.")
@click.option("--accept-new-hostkeys", is_flag=True,
              help="Accept and record host keys of nodes not in known_hosts (changed keys are still refused).")
@click.option("--fanout", default=64, show_default=True, type=click.IntRange(1, 4096),
              help="Nodes in flight at once.")
@click.option("--timeout", default=120.0, show_default=True, type=click.FloatRange(0.1, None),
              help="Seconds for node-check on one node, connect included.")
@click.option("--connect-timeout", default=10.0, show_default=True, type=click.FloatRange(0.1, None),
              help="Seconds for the SSH connection to one node.")
@click.option("--remote-command", default="clusterkit", show_default=True, metavar="CMD",
              help="How to start clusterkit on the nodes (e.g. '/opt/clusterkit/bin/clusterkit').")
@click.option("--json", "as_json", is_flag=True, help="Print the clusterkit.report/v1 JSON document.")
@click.option("--output", metavar="FILE", help="Write the JSON report to FILE.")
@click.option("--junit", metavar="FILE", help="Write a JUnit XML report to FILE.")
@click.option("-v", "--verbose", is_flag=True, help="List every node and check in the terminal report.")
@click.option("--no-progress", is_flag=True, help="No progress bar on stderr.")
def validate_cmd(sim: str | None, nodes: str | None, inventory: str | None, exclude: str | None,
                 profile: str | None, checks: tuple[str, ...], ssh_config: str | None, user: str | None,
                 identity: str | None, accept_new_hostkeys: bool, fanout: int, timeout: float,
                 connect_timeout: float, remote_command: str, as_json: bool, output: str | None,
                 junit: str | None, verbose: bool, no_progress: bool) -> int:
    """Validate nodes: run node-check on each (over SSH, or locally with --sim) and report.

    Exit 0 all healthy, 1 a node failed, 2 usage/config error, 3 incomplete (unreachable
    nodes or checks that could not run, no failure), 130 interrupted.
    """
    import shlex

    from clusterkit import inventory as inv
    from clusterkit.errors import UsageError
    from clusterkit.profiles import load_profile
    from clusterkit.validate.controller import validate_fleet
    from clusterkit.validate.runner import select

    if sim is None and not nodes and not inventory:
        raise UsageError("say which nodes: --nodes HOSTLIST, --inventory FILE, or --sim [FLEET]")
    if nodes and inventory:
        raise UsageError("--nodes and --inventory are exclusive")
    if sim is not None and inventory:
        raise UsageError("--sim and --inventory are exclusive (use --sim FLEET --nodes HOSTLIST to pick nodes)")
    check_list = _split_checks(checks)
    select(check_list)  # bad --checks fail now, before any connection

    fleet = None
    if sim is not None:
        from clusterkit import sim as simmod

        fleet = simmod.load_fleet(sim if sim == "builtin" else os.path.abspath(sim))
        node_list = inv.nodes_from_hostlist(nodes) if nodes else [inv.Node(name=n) for n in fleet.node_names()]
        source = f"sim:{fleet.name}"
    elif inventory:
        node_list = inv.load_inventory(inventory)
        source = f"inventory:{inventory}"
    else:
        node_list = inv.nodes_from_hostlist(nodes or "")
        source = f"nodes:{nodes}"
    node_list = inv.exclude(node_list, exclude)
    if not node_list:
        raise UsageError("no nodes left to validate")

    default_spec = profile or (fleet.profile if fleet is not None and fleet.profile else None) or "h100-sxm"
    cache: dict[str, object] = {}

    def profile_for(node):  # type: ignore[no-untyped-def]
        spec = profile or node.profile or default_spec
        if spec not in cache:
            cache[spec] = load_profile(spec)
        return cache[spec]

    for n in node_list:  # a bad profile is a usage error before anything runs
        profile_for(n)

    if fleet is not None:
        from clusterkit.transport.local import LocalTransport

        sim_spec = sim if sim == "builtin" else os.path.abspath(sim)
        transport = LocalTransport(env_for=lambda n: {"CLUSTERKIT_SIM": sim_spec, "CLUSTERKIT_NODE": n.name})
        remote = [sys.executable, "-m", "clusterkit"]
    else:
        from clusterkit.transport.ssh import SSHTransport

        transport = SSHTransport(ssh_config=ssh_config, user=user, identity=identity,
                                 connect_timeout=connect_timeout, accept_new=accept_new_hostkeys)
        try:
            remote = shlex.split(remote_command)
        except ValueError as e:
            raise UsageError(f"--remote-command: {e}") from None
        if not remote:
            raise UsageError("--remote-command is empty")

    from clusterkit.report.terminal import ProgressReporter

    progress = ProgressReporter(len(node_list), enabled=(not no_progress) and sys.stderr.isatty())
    interrupted = False
    try:
        report = validate_fleet(node_list, transport, profile_for=profile_for, remote=remote,
                                checks=check_list, timeout=timeout, fanout=fanout, source=source,
                                on_done=lambda r: progress.advance(r.node, r.status))
    except KeyboardInterrupt as e:
        report = getattr(e, "report", None)
        if report is None:
            raise
        interrupted = True
    finally:
        progress.close()
        transport.close()

    from clusterkit.report import write_report

    if as_json and not output:
        click.echo(report.to_json())
    else:
        from clusterkit.report.terminal import render_terminal

        click.echo(render_terminal(report, verbose=verbose, color=None if sys.stdout.isatty() else False),
                   nl=False)
    if output:
        write_report(report, "json", output)
    if junit:
        write_report(report, "junit", junit)
    if interrupted:
        _err("interrupted: the report covers the nodes that answered")
        return EXIT_INTERRUPTED
    return report.summary.exit_code
