"""The command line: parses options, calls the library, maps errors to exit codes.

Exit codes (DESIGN.md): 0 healthy · 1 a node failed · 2 usage/config error · 3 incomplete
(unreachable nodes or checks that could not run, no failures) · 4 internal error · 130 interrupted.
Every error is one line on stderr, ``clusterkit: error: …``; never a traceback
(``CLUSTERKIT_DEBUG=1`` shows one for internal errors). Everything heavy is imported inside the
command that needs it.
"""

from __future__ import annotations

import os
import sys
from typing import Any, Optional

import click

from clusterkit import __version__
from clusterkit.errors import ClusterkitError
from clusterkit.lazygroup import LazyGroup

EXIT_OK, EXIT_FAIL, EXIT_USAGE, EXIT_INCOMPLETE, EXIT_INTERNAL, EXIT_INTERRUPTED = 0, 1, 2, 3, 4, 130


def _err(message: str) -> None:
    try:
        click.echo(f"clusterkit: error: {' '.join(message.split())}", err=True)
    except OSError:  # stderr closed too: nothing left to tell
        pass


def _warn(message: str) -> None:
    try:
        click.echo(f"clusterkit: warning: {' '.join(message.split())}", err=True)
    except OSError:
        pass


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100},
             lazy={"deploy": "clusterkit.deploy.cli:deploy_group", "inventory": "clusterkit.inventory_cli:inventory_group",
                   "nccl": "clusterkit.nccl.cli:nccl_group",
                   "slurm": "clusterkit.slurm.cli:slurm_group",
                   "telemetry": "clusterkit.telemetry.cli:telemetry_group"})
@click.version_option(__version__, prog_name="clusterkit")
def cli() -> None:
    """Validate GPU fleets over SSH and keep only healthy nodes in service."""


def _silence_stdout() -> None:
    """stdout is gone (closed pipe): point it at /dev/null so the interpreter's last flush
    does not print a second error."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError, AttributeError):
        pass


def _click_message(e: click.ClickException) -> str:
    msg = e.format_message()
    ctx = getattr(e, "ctx", None)
    if isinstance(e, click.UsageError) and ctx is not None:
        return f"{ctx.command_path}: {msg} (see '{ctx.command_path} --help')"
    return msg


_STDOUT_CLOSED = False


def main(argv: list[str] | None = None) -> None:
    """Entry point: runs the CLI and turns every outcome into one exit code."""
    global _STDOUT_CLOSED
    if sys.stdout is None:  # started with stdout closed: reports still go to their files
        _STDOUT_CLOSED = True
        sys.stdout = open(os.devnull, "w", encoding="utf-8")  # noqa: SIM115
    if sys.stderr is None:
        sys.stderr = open(os.devnull, "w", encoding="utf-8")  # noqa: SIM115
    try:
        rc = cli.main(args=argv, prog_name="clusterkit", standalone_mode=False)
    except (click.exceptions.Abort, KeyboardInterrupt):
        _err("interrupted")
        sys.exit(EXIT_INTERRUPTED)
    except click.ClickException as e:
        _err(_click_message(e))
        sys.exit(EXIT_USAGE if e.exit_code != 0 else 0)
    except click.exceptions.Exit as e:
        sys.exit(e.exit_code)
    except ClusterkitError as e:
        _err(str(e))
        sys.exit(e.exit_code)
    except BrokenPipeError:
        # stdout closed early (| head): not an error of ours.
        _silence_stdout()
        sys.exit(EXIT_OK)
    except Exception as e:  # noqa: BLE001 - last resort: one line, never a traceback
        if os.environ.get("CLUSTERKIT_DEBUG"):
            raise
        _err(f"internal error: {type(e).__name__}: {' '.join(str(e).split())} "
             "(a bug: please report it; set CLUSTERKIT_DEBUG=1 for a traceback)")
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


# --------------------------------------------------------------------------- checks
@cli.command("checks")
@click.option("--json", "as_json", is_flag=True, help="Print the registry as JSON.")
def checks_cmd(as_json: bool) -> int:
    """List every check id with its one-line description (what --checks accepts).

    --checks also takes a domain (gpu, system) or a group: a dotted prefix of ids (gpu.ecc).
    """
    from clusterkit.validate import registry

    if as_json:
        import json

        doc: dict[str, Any] = {"domains": {name: {"doc": registry.domain_module(name).DOC,
                                  "checks": {k: v for k, v in registry.node_checks().items()
                                             if k.split(".", 1)[0] == name}}
                           for name in registry.DOMAINS},
               "fleet": registry.fleet_checks()}
        click.echo(json.dumps(doc, indent=2))
        return EXIT_OK
    nodes = registry.node_checks()
    for name in registry.DOMAINS:
        click.echo(f"{name}: {registry.domain_module(name).DOC}")
        for cid, line in nodes.items():
            if cid.split(".", 1)[0] == name:
                click.echo(f"  {cid:28} {line}")
    click.echo("fleet: judged on the controller from every node's facts")
    for cid, line in registry.fleet_checks().items():
        click.echo(f"  {cid:28} {line}")
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


_IGNORED_SECTIONS: list[str] = []


def _load_profile_arg(spec: str | None, one_line: bool = False) -> Any:
    from clusterkit.profiles import load_profile, parse_controller_profile, parse_profile

    if spec == "-" and one_line:
        # from a controller (--lifeline): a newer controller may send sections this version
        # has no checks for; they are ignored (and reported in facts), not a refusal
        prof, ignored = parse_controller_profile(sys.stdin.readline())
        _IGNORED_SECTIONS[:] = ignored
        return prof
    if spec == "-":
        return parse_profile(sys.stdin.read(), "<stdin>")
    if spec is None:
        from clusterkit.validate.runner import default_profile_name

        spec = default_profile_name()
    return load_profile(spec)


def _watch_lifeline(on_close: Any) -> None:
    """End this process when stdin reaches end-of-file: the controller that started us went
    away (timeout, Ctrl-C, lost connection)."""
    import threading

    try:
        fd = sys.stdin.fileno()
    except (OSError, ValueError, AttributeError):
        return

    def watch() -> None:
        # the raw descriptor, not sys.stdin's buffer: a thread blocked inside the buffered
        # reader holds its lock, and the interpreter's shutdown would then abort on it
        try:
            while os.read(fd, 65536):
                pass
        except OSError:
            pass
        on_close()

    threading.Thread(target=watch, name="ck-lifeline", daemon=True).start()


#: node-check --healthcheck's deadline when --deadline is not given (seconds; Slurm kills the
#: HealthCheckProgram at 60, and a hung mount must not hold it that long)
HEALTHCHECK_DEADLINE = 10.0
#: node-check --format influx's deadline when --deadline is not given: inside Telegraf's default
#: inputs.exec timeout (5 s), with room for the interpreter and the output
INFLUX_DEADLINE = 4.0

# Nagios plugin exit codes and states (Nagios Plugin API)
NAGIOS_OK, NAGIOS_WARNING, NAGIOS_CRITICAL, NAGIOS_UNKNOWN = 0, 1, 2, 3
_NAGIOS_STATE = {NAGIOS_OK: "OK", NAGIOS_WARNING: "WARNING", NAGIOS_CRITICAL: "CRITICAL", NAGIOS_UNKNOWN: "UNKNOWN"}


def _nagios_text(text: str) -> str:
    """One line without the perfdata separator."""
    return " ".join(text.replace("|", "/").split())


def _nagios_exit(text: str) -> None:
    """A usage or internal error under --nagios: one UNKNOWN line on stdout, exit 3."""
    try:
        click.echo(f"CLUSTERKIT UNKNOWN - {_nagios_text(text)}")
    except OSError:
        pass
    raise click.exceptions.Exit(NAGIOS_UNKNOWN)


def _nagios_line(report: Any, duration_s: float) -> tuple[str, int]:
    """The plugin's one line and exit code: OK, WARNING (a warn), CRITICAL (a fail, naming the
    first ones), UNKNOWN (a check could not run); perfdata after the ``|``."""
    from clusterkit.models import NodeStatus, Status

    by: dict[Status, list[Any]] = {s: [] for s in Status}
    for c in report.checks:
        by[c.status].append(c)
    n = len(report.checks)
    code = {NodeStatus.PASS: NAGIOS_OK, NodeStatus.WARN: NAGIOS_WARNING,
            NodeStatus.FAIL: NAGIOS_CRITICAL}.get(report.status, NAGIOS_UNKNOWN)

    def named(items: list[Any], what: str) -> str:
        first = items[0]
        head = f"{first.check}{' ' + first.subject if first.subject else ''}"
        if first.message:
            head += f" ({first.message[:160]})"
        rest = [f"{c.check}{' ' + c.subject if c.subject else ''}" for c in items[1:3]]
        more = f" and {len(items) - 3} more" if len(items) > 3 else ""
        word = "check" if len(items) == 1 else "checks"
        return f"{len(items)} {word} {what}: {', '.join([head, *rest])}{more}"

    if code == NAGIOS_CRITICAL:
        text = named(by[Status.FAIL], "failed")
    elif code == NAGIOS_UNKNOWN:
        text = named(by[Status.ERROR], "could not run") if by[Status.ERROR] else (report.error or "no report")
    elif code == NAGIOS_WARNING:
        text = named(by[Status.WARN], "warned")
    else:
        skipped = len(by[Status.SKIP])
        text = f"{n - skipped} checks passed" + (f", {skipped} skipped" if skipped else "")
    perf = (f"checks={n} fail={len(by[Status.FAIL])} warn={len(by[Status.WARN])} "
            f"error={len(by[Status.ERROR])} duration={duration_s:.2f}s")
    return f"CLUSTERKIT {_NAGIOS_STATE[code]} - {_nagios_text(f'{report.node}: {text}')} | {perf}", code


class _NodeCheckCommand(click.Command):
    """node-check: with ``--nagios``, every way it can end is a Nagios plugin line on stdout and
    exit 0-3. A usage error (click's while parsing, or clusterkit's own: a bad profile, bad
    ``--checks``) is ``CLUSTERKIT UNKNOWN - usage: …``, exit 3 (not 2), as Nagios expects."""

    def make_context(self, info_name: Optional[str], args: list[str], parent: Optional[click.Context] = None,
                     **extra: Any) -> click.Context:
        if "--nagios" not in args:
            return super().make_context(info_name, args, parent=parent, **extra)
        try:
            return super().make_context(info_name, args, parent=parent, **extra)
        except click.ClickException as e:
            _nagios_exit(f"usage: {e.format_message()}")
            raise  # pragma: no cover - _nagios_exit raises

    def invoke(self, ctx: click.Context) -> Any:
        if not ctx.params.get("nagios"):
            return super().invoke(ctx)
        try:
            return super().invoke(ctx)
        except (click.exceptions.Exit, click.exceptions.Abort, KeyboardInterrupt):
            raise
        except ClusterkitError as e:
            _nagios_exit(f"usage: {e}" if e.exit_code == EXIT_USAGE else str(e))
        except click.ClickException as e:
            _nagios_exit(f"usage: {e.format_message()}")
        except Exception as e:  # noqa: BLE001 - a plugin ends with a plugin line, whatever happened
            if os.environ.get("CLUSTERKIT_DEBUG"):
                raise
            _nagios_exit(f"internal error: {type(e).__name__}: {e} (a bug: please report it)")
        return None  # pragma: no cover - _nagios_exit raises


def _healthcheck_selection(items: Optional[list[str]]) -> Any:
    """--healthcheck's domains (registry.HEALTHCHECK_DOMAINS), narrowed by --checks; a selector
    of another domain (topo, stress, fleet) is refused."""
    from clusterkit.errors import UsageError
    from clusterkit.validate.registry import HEALTHCHECK_DOMAINS, Selection, select

    if items is None:
        return Selection(list(HEALTHCHECK_DOMAINS), None)
    selection = select(items)
    outside = [s for s in items if s.split(".", 1)[0] not in HEALTHCHECK_DOMAINS]
    if outside:
        raise UsageError(f"--healthcheck runs {', '.join(HEALTHCHECK_DOMAINS)} only: --checks "
                         f"{', '.join(outside)} is not among them")
    return selection


@cli.command("node-check", cls=_NodeCheckCommand)
@click.option("--profile", "profile", metavar="NAME|FILE|-",
              help="Hardware profile: built-in name (h100-sxm, h200-sxm), a YAML file, or '-' "
                   "to read it from stdin. Default: $CLUSTERKIT_PROFILE, else the simulated "
                   "fleet's profile on a simulated node, else h100-sxm.")
@click.option("--checks", multiple=True, metavar="LIST",
              help="Checks, groups or domains to run (gpu, system, gpu.ecc, …; see `clusterkit "
                   "checks`). Default: all. An unknown name is refused.")
@click.option("--json", "as_json", is_flag=True, help="Print the node report as JSON.")
@click.option("--deadline", default=60.0, show_default=True, type=click.FloatRange(0.1, 86400),
              help="Seconds for the whole node-check: a probe still running then is reported as "
                   "error and the report is printed with what finished (--healthcheck: 10 unless given).")
@click.option("--sysfs-root", metavar="DIR", envvar="CLUSTERKIT_SYSFS_ROOT",
              help="Where the host's /sys is mounted (containers). Default: /sys.")
@click.option("--state-dir", metavar="DIR", envvar="CLUSTERKIT_STATE_DIR",
              help="The node's state directory (counters compared between runs).")
@click.option("--kernel-log", metavar="FILE", help="Read this saved kernel log instead of dmesg.")
@click.option("--xid-window", "xid_window", type=click.FloatRange(min=0, min_open=True, max=24 * 366),
              metavar="HOURS", help="Xid/SXid events count within this many hours (default: the "
                                    "profile's xid.window_h, 2).")
@click.option("--lifeline", is_flag=True,
              help="For controllers: with --profile -, the profile is the first line of stdin; "
                   "stdin then stays open, and node-check stops when it closes.")
@click.option("--ib-bw", "ib_bw", is_flag=True,
              help="Also run ib_write_bw loopback on every InfiniBand rail (ib.write_bw; opt-in: it "
                   "loads the links for a few seconds).")
@click.option("--storage-bench", "storage_bench", is_flag=True,
              help="Also run the metadata test and fio on every expected mount (storage.metadata, "
                   "storage.fio; opt-in: they load shared storage; give them a longer --deadline).")
@click.option("--weights-dir", "weights_dir", metavar="DIR",
              help="Also measure the read rate of this model-weights directory (storage.weights; "
                   "O_DIRECT, or the page cache evicted first).")
@click.option("--stress", "stress", is_flag=True,
              help="Also load the GPUs (stress.gemm, stress.hbm, stress.gpu_burn, stress.dcgm; opt-in: "
                   "time-boxed within --deadline; dcgmi diag -r 2 needs a longer one).")
@click.option("--healthcheck", is_flag=True,
              help="Slurm's HealthCheckProgram: only the fast node-local domains (gpu, system, nvlink, ib, "
                   "xid, storage mounts; no topo, no stress, no opt-ins), --deadline 10 unless given, plus the "
                   "cached verdicts of earlier deep runs; then drain or resume this node in Slurm.")
@click.option("--cache-max-age", "cache_max_age", type=click.FloatRange(min=0), default=168.0,
              show_default=True, metavar="HOURS",
              help="With --healthcheck: carry cached deep verdicts (--stress, --ib-bw, --storage-bench runs) "
                   "no older than this.")
@click.option("--no-slurm-action", "no_slurm_action", is_flag=True,
              help="With --healthcheck: only report; do not drain or resume the node.")
@click.option("--dry-run", "dry_run", is_flag=True,
              help="With --healthcheck: say what would be done in Slurm, change nothing.")
@click.option("--format", "out_format", type=click.Choice(["text", "json", "influx"]), default=None,
              help="Output: text (default), json (= --json), or influx: InfluxDB line protocol for "
                   "Telegraf's inputs.exec (data_format = \"influx\"): exit 0 whenever it measured (health is "
                   "in the fields), --deadline 4 unless given, and on SIGTERM what was measured so far.")
@click.option("--nagios", is_flag=True,
              help="Print one Nagios plugin line (OK/WARNING/CRITICAL/UNKNOWN with perfdata) and exit "
                   "0/1/2/3 as Nagios expects (a usage error is UNKNOWN, 3).")
def node_check_cmd(profile: str | None, checks: tuple[str, ...], as_json: bool, deadline: float,
                   sysfs_root: Optional[str], state_dir: Optional[str], kernel_log: Optional[str],
                   lifeline: bool, ib_bw: bool = False, xid_window: Optional[float] = None,
                   storage_bench: bool = False, weights_dir: Optional[str] = None, stress: bool = False,
                   healthcheck: bool = False, cache_max_age: float = 168.0, no_slurm_action: bool = False,
                   dry_run: bool = False, nagios: bool = False, out_format: Optional[str] = None) -> int:
    """Check this node's hardware against a profile (runs on the node itself).

    Exit 0 healthy, 1 a check failed, 3 a check could not run, 2 bad input.
    With --nagios: 0 OK, 1 WARNING, 2 CRITICAL, 3 UNKNOWN.
    """
    import time

    started = time.monotonic()
    from click.core import ParameterSource

    from clusterkit.errors import UsageError

    given = click.get_current_context().get_parameter_source
    deep = [opt for opt, on in (("--stress", stress), ("--ib-bw", ib_bw), ("--storage-bench", storage_bench),
                                ("--weights-dir", weights_dir is not None)) if on]
    if healthcheck and deep:
        raise UsageError(f"--healthcheck runs no deep check: drop {', '.join(deep)} (a deep run of its own "
                         "keeps its verdict for the health check)")
    if not healthcheck:
        alone = [opt for opt, name in (("--cache-max-age", "cache_max_age"), ("--no-slurm-action", "no_slurm_action"),
                                       ("--dry-run", "dry_run")) if given(name) is not ParameterSource.DEFAULT]
        if alone:
            raise UsageError(f"{', '.join(alone)} only {'goes' if len(alone) == 1 else 'go'} with --healthcheck")
    if dry_run and no_slurm_action:
        raise UsageError("--dry-run and --no-slurm-action exclude each other")
    if out_format is not None and as_json and out_format != "json":
        raise UsageError(f"--json and --format {out_format} exclude each other")
    as_json = as_json or out_format == "json"
    influx = out_format == "influx"
    if nagios and (as_json or influx):
        raise UsageError(f"--nagios and {'--json' if as_json else '--format influx'} exclude each other")
    if influx and given("deadline") is ParameterSource.DEFAULT:
        deadline = INFLUX_DEADLINE
    if healthcheck and given("deadline") is ParameterSource.DEFAULT:
        deadline = HEALTHCHECK_DEADLINE
    from clusterkit.models import NODE_SCHEMA, NodeReport, NodeStatus
    from clusterkit.validate.runner import make_context, run_node_check

    if healthcheck:
        selection = _healthcheck_selection(_split_checks(checks))
    else:
        from clusterkit.validate.registry import select

        selection = select(_split_checks(checks))
    if sysfs_root is not None and not os.path.isdir(sysfs_root):
        raise UsageError(f"--sysfs-root {sysfs_root}: not a directory")
    prof = _load_profile_arg(profile, one_line=lifeline)
    if xid_window is not None:
        from clusterkit.profiles import XidProfile

        prof = prof.model_copy(update={"xid": XidProfile(window_h=xid_window)})
    ctx = make_context(deadline=started + deadline, sysfs_root=sysfs_root, state_dir=state_dir,
                       kernel_log_file=kernel_log)
    if lifeline:
        def gone() -> None:
            ctx.procs.kill_all()
            os._exit(EXIT_INTERRUPTED)

        _watch_lifeline(gone)
    if influx:
        import signal

        def stop_now(_sig: int, _frame: Any) -> None:
            # Telegraf's timeout: end the probes now and print what was measured (runner.py
            # watches the deadline while it waits)
            ctx.deadline = time.monotonic()

        signal.signal(signal.SIGTERM, stop_now)
    filters = selection.filters or []
    if not healthcheck:  # (--healthcheck asks for no opt-in check, even one --checks names: its verdict is cached)
        if ib_bw or "ib.write_bw" in filters:  # naming the check asks for it too
            ctx.opt_in = ctx.opt_in | {"ib.write_bw"}
        if storage_bench or weights_dir is not None or any(f.startswith("storage.") for f in filters):
            from clusterkit.validate import storage as storage_domain

            if weights_dir is not None:  # never stat'ed here: it may sit on a hung mount
                prof = storage_domain.with_weights_dir(prof, os.path.abspath(weights_dir))
            ctx.opt_in = ctx.opt_in | storage_domain.opt_in(storage_bench, weights_dir, selection.filters)
        if stress or any(f.split(".", 1)[0] == "stress" for f in filters):  # naming one asks too
            from clusterkit.validate import stress as stress_domain

            ctx.opt_in = ctx.opt_in | stress_domain.opt_in(stress, selection.filters)
    report = run_node_check(prof, selection, ctx)
    if _IGNORED_SECTIONS:
        report.facts["profile_sections_ignored"] = list(_IGNORED_SECTIONS)
    from clusterkit.validate import verdicts

    action = None
    if healthcheck:
        cached = [r for r in verdicts.load(ctx, cache_max_age * 3600.0, facts=report.facts)
                  if selection.keeps(r.check)]
        if cached:
            report.checks.extend(cached)
            report.status = NodeReport.status_of(report.checks, report.error)
    elif ctx.opt_in:
        verdicts.save_deep(ctx, report)
    checked_s = time.monotonic() - started  # Slurm's own time below is not the checks'
    if healthcheck and not no_slurm_action:
        from clusterkit.slurm import healthcheck as slurm_healthcheck

        action = slurm_healthcheck.act(report, dry_run=dry_run)
        report.facts["slurm_action"] = {"action": action.action, "message": action.message, "dry_run": dry_run}
    if nagios:
        line, rc = _nagios_line(report, checked_s)
        click.echo(line)
    elif influx:
        from clusterkit.telemetry.lineproto import encode_line
        from clusterkit.telemetry.points import node_points

        # no timestamps: Telegraf stamps the points when it collects them
        out = [encode_line(p.measurement, p.tags, p.fields, None)
               for p in node_points(report, profile=prof.name, job_id=os.environ.get("SLURM_JOB_ID") or None)]
        click.echo("\n".join(line for line in out if line))
    elif as_json:
        import json

        doc = report.model_dump(mode="json")
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
    if influx:
        rc = EXIT_OK  # it measured: Telegraf drops every line of a command that exits non-zero
    elif not nagios:
        rc = {NodeStatus.PASS: EXIT_OK, NodeStatus.WARN: EXIT_OK, NodeStatus.FAIL: EXIT_FAIL}.get(
            report.status, EXIT_INCOMPLETE)
    if action is not None and action.action != "none":
        click.echo(f"clusterkit: healthcheck: {' '.join(str(action.message).split())}", err=True)
    if report.error_kind == "deadline":
        # a probe is stuck in a call that cannot be interrupted: do not wait for its thread
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(rc)
    if healthcheck and sys.argv[1:2] == ["node-check"]:
        # this process is `clusterkit node-check --healthcheck` (not a caller of main()): its
        # report is out, and the interpreter's teardown of every module it loaded would serve
        # no one. Nothing is left to write.
        _exit_now(rc)
    return rc


def _exit_now(rc: int) -> None:
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):  # a closed pipe: what could be said was said
            pass
    os._exit(rc)


# --------------------------------------------------------------------------- validate
def _telemetry_options(f: Any) -> Any:
    from clusterkit.telemetry.cli import telemetry_options

    return telemetry_options(f)


def _check_writable(path: str, option: str) -> None:
    """Refuse (exit 2, before the run) an output path that cannot be written."""
    from clusterkit.errors import UsageError

    if os.path.isdir(path):
        raise UsageError(f"{option} {path}: is a directory")
    if os.path.exists(path):
        if not os.access(path, os.W_OK):
            raise UsageError(f"{option} {path}: not writable")
        return
    parent = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(parent):
        raise UsageError(f"{option} {path}: directory {parent} does not exist")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise UsageError(f"{option} {path}: directory {parent} is not writable")


def _check_outputs(*pairs: tuple[Optional[str], str]) -> None:
    """Output files: each writable, no two the same file (checked before the run: exit 2)."""
    from clusterkit.errors import UsageError

    seen: dict[str, str] = {}
    for path, opt in pairs:
        if not path:
            continue
        _check_writable(path, opt)
        key = os.path.abspath(path)
        if key in seen and (os.path.isfile(path) or not os.path.exists(path)):  # /dev/null twice is fine
            raise UsageError(f"{seen[key]} and {opt} name the same file")
        seen[key] = opt


def _echo_stdout(text: str) -> bool:
    """Write the report to stdout; a closed or full stdout is reported, not fatal."""
    if _STDOUT_CLOSED:
        _warn("stdout is closed: the report was not printed (files given with --output/--junit are written)")
        return False
    try:
        sys.stdout.write(text)
        sys.stdout.flush()
        return True
    except (BrokenPipeError, OSError) as e:
        _silence_stdout()
        why = "closed" if isinstance(e, BrokenPipeError) else (e.strerror or str(e))
        _warn(f"could not write the report to stdout ({why}); files given with --output/--junit are written")
        return False


@cli.command("validate")
@click.option("--sim", "sim", is_flag=False, flag_value="builtin", default=None, metavar="[FLEET.yaml]",
              help="Run on a simulated fleet: the built-in one (8 HGX H100 nodes, two faults) or your "
                   "fleet file. Runs locally, no SSH.")
@click.option("--nodes", multiple=True, metavar="HOSTLIST",
              help="Nodes to validate, e.g. 'gpu-[001-032]' (repeat: the union).")
@click.option("--inventory", metavar="FILE", help="Inventory YAML (nodes with host, port, user, labels, profile).")
@click.option("--exclude", multiple=True, metavar="HOSTLIST", help="Nodes to leave out (repeat: the union).")
@click.option("--profile", metavar="NAME|FILE",
              help="Hardware profile (h100-sxm, h200-sxm, or a YAML file). Default: the inventory's or "
                   "sim fleet's, else h100-sxm.")
@click.option("--checks", multiple=True, metavar="LIST",
              help="Checks, groups or domains to run (default: all; see `clusterkit checks`).")
@click.option("--transport", "transport_name", type=click.Choice(["openssh", "paramiko"]), default=None,
              help="How to reach the nodes: openssh (the system ssh; default) or paramiko. "
                   "Default: the inventory's, else openssh.")
@click.option("--ssh-config", metavar="FILE", help="ssh_config to use (default: ~/.ssh/config).")
@click.option("--user", metavar="USER", help="SSH login user (overrides the inventory and ssh_config).")
@click.option("--identity", metavar="KEY", help="SSH private key file.")
@click.option("--accept-new-hostkeys", is_flag=True,
              help="Accept and record host keys of nodes not in known_hosts (changed keys are still refused).")
@click.option("--fanout", default=64, show_default=True, type=click.IntRange(1, 4096),
              help="Nodes in flight at once.")
@click.option("--timeout", default=120.0, show_default=True, type=click.FloatRange(0.1, 86400),
              help="Seconds for one node, connection included; node-check gets a deadline inside it.")
@click.option("--connect-timeout", default=10.0, show_default=True, type=click.FloatRange(0.1, 3600),
              help="Seconds for the SSH connection to one node (never more than --timeout).")
@click.option("--remote-command", default="clusterkit", show_default=True, metavar="CMD",
              help="How to start clusterkit on the nodes (e.g. '/opt/clusterkit/bin/clusterkit').")
@click.option("--json", "as_json", is_flag=True, help="Print the clusterkit.report/v1 JSON document.")
@click.option("--output", metavar="FILE", help="Write the JSON report to FILE.")
@click.option("--junit", metavar="FILE", help="Write a JUnit XML report to FILE.")
@click.option("--html", "html", metavar="FILE",
              help="Write a self-contained HTML report to FILE (no network: open it anywhere).")
@click.option("-v", "--verbose", is_flag=True, help="List every node and check in the terminal report.")
@click.option("--no-progress", is_flag=True, help="No progress bar on stderr.")
@click.option("--ib-bw", "ib_bw", is_flag=True,
              help="Also run ib_write_bw loopback on every node's InfiniBand rails (node-check --ib-bw).")
@click.option("--storage-bench", "storage_bench", is_flag=True,
              help="Also run the metadata test and fio on every node's expected mounts (node-check "
                   "--storage-bench); they load shared storage and need a longer --timeout.")
@click.option("--weights-dir", "weights_dir", metavar="DIR",
              help="Also measure every node's read rate of this model-weights directory, an absolute "
                   "path on the nodes (node-check --weights-dir).")
@click.option("--stress", "stress", is_flag=True,
              help="Also load every node's GPUs: GEMM, HBM copy, gpu-burn, dcgmi diag (node-check --stress).")
@click.option("--baseline", "baseline_spec", metavar="NAME|FILE",
              help="Compare the fleet's figures with a saved baseline (`clusterkit baseline save`): a "
                   "name in the baseline directory, or a file (a path with '/' or ending in .json).")
@click.option("--partition", metavar="NAME",
              help="Validate the nodes of this Slurm partition (with --nodes: only those of them). Nodes "
                   "that are down or drained by someone else are skipped and reported.")
@click.option("--include-drained", is_flag=True,
              help="With --partition: also validate nodes that are down or drained by someone else.")
@click.option("--via", "via", type=click.Choice(["ssh", "slurm"]), default="ssh", show_default=True,
              help="How node-check reaches the nodes: over SSH (--transport), or as one srun step over "
                   "the nodes (in the current allocation when inside one).")
@click.option("--slurm-gres", metavar="GRES",
              help="With --via slurm: the --gres each node's task asks for. Default: gpu:<the profile's "
                   "GPU count>; 'none' asks for none.")
@click.option("--drain", is_flag=True,
              help="Drain nodes with failed checks in Slurm, reason 'clusterkit: <check>: <detail>' "
                   "(never for errors; never over someone else's reason).")
@click.option("--dry-run", is_flag=True, help="With --drain: show every change as before -> after, change nothing.")
@click.option("--force", is_flag=True, help="With --drain: drain even beyond the --drain-limit circuit breaker.")
@click.option("--drain-limit", default="10%", show_default=True, metavar="N|P%",
              help="With --drain: the most nodes one run may drain, a count or a share of the partition "
                   "(at least one node); more drains nothing without --force.")
@click.option("--hold-with-reservation", "hold_reservation", metavar="NAME", default=None,
              is_flag=False, flag_value="clusterkit_hold",
              help="With --drain: hold the nodes in a Slurm maintenance reservation (default name "
                   "clusterkit_hold) while they are validated, instead of draining the failed ones; "
                   "nodes that pass are released from it.")
@click.option("--slurm-backend", "slurm_backend", type=click.Choice(["auto", "cli", "pyslurm"]), default="auto",
              show_default=True, help="How to talk to Slurm: its commands (cli) or pyslurm where it imports.")
@_telemetry_options
def validate_cmd(sim: str | None, nodes: tuple[str, ...], inventory: str | None, exclude: tuple[str, ...],
                 profile: str | None, checks: tuple[str, ...], transport_name: str | None,
                 ssh_config: str | None, user: str | None, identity: str | None, accept_new_hostkeys: bool,
                 fanout: int, timeout: float, connect_timeout: float, remote_command: str, as_json: bool,
                 output: str | None, junit: str | None, verbose: bool, no_progress: bool,
                 ib_bw: bool = False, baseline_spec: Optional[str] = None, html: Optional[str] = None,
                 storage_bench: bool = False, weights_dir: Optional[str] = None, stress: bool = False,
                 partition: Optional[str] = None, include_drained: bool = False, via: str = "ssh",
                 slurm_gres: Optional[str] = None, drain: bool = False, dry_run: bool = False,
                 force: bool = False, drain_limit: str = "10%", hold_reservation: Optional[str] = None,
                 slurm_backend: str = "auto", telemetry: Any = None) -> int:
    """Validate nodes: run node-check on each (over SSH, or locally with --sim) and report.

    Exit 0 all healthy, 1 a node failed, 2 usage/config error, 3 incomplete (unreachable
    nodes or checks that could not run, no failure), 4 internal error, 130 interrupted.
    """
    from clusterkit import inventory as inv
    from clusterkit.errors import UsageError
    from clusterkit.profiles import load_profile
    from clusterkit.selection import check_selectors, union
    from clusterkit.validate.controller import validate_fleet
    from clusterkit.validate.registry import select

    nodes_expr = union(nodes)
    exclude_expr = union(exclude)
    check_selectors(sim=sim, nodes_expr=nodes_expr, inventory=inventory, partition=partition)
    _check_slurm_options(drain=drain, dry_run=dry_run, force=force, drain_limit=drain_limit,
                         hold_reservation=hold_reservation, via=via, transport_name=transport_name,
                         include_drained=include_drained, partition=partition, slurm_gres=slurm_gres)
    check_list = _split_checks(checks)
    select(check_list)  # a typo is refused now, before any connection
    if weights_dir is not None and not weights_dir.startswith("/"):
        raise UsageError(f"--weights-dir {weights_dir}: give an absolute path (it is read on the nodes)")
    extra_args = (["--ib-bw"] if ib_bw else []) + (["--storage-bench"] if storage_bench else []) + \
        (["--weights-dir", weights_dir] if weights_dir is not None else []) + (["--stress"] if stress else [])
    _check_outputs((output, "--output"), (junit, "--junit"), (html, "--html"))
    telemetry_settings = telemetry.settings() if telemetry is not None else None  # bad options: exit 2 now
    baseline_obj: Any = None
    if baseline_spec is not None:  # an unknown name or a bad file: exit 2 before any node is contacted
        from clusterkit import baseline as baselines

        try:
            baseline_obj = baselines.load(baseline_spec)
        except UsageError as e:
            raise UsageError(f"--baseline: {e}") from None

    fleet = None
    inv_transport = None
    slurm: Any = None  # the Slurm backend, when Slurm takes part
    states: dict[str, Any] = {}  # node -> SlurmNode
    pool_size = 0  # the partition's size, for the circuit breaker
    skipped: list[Any] = []
    if partition or via == "slurm" or drain:
        from clusterkit.slurm.backend import make_backend

        slurm = make_backend(prefer=slurm_backend)
    if sim is not None:
        from clusterkit import sim as simmod

        fleet = simmod.load_fleet(sim if sim == "builtin" else os.path.abspath(sim))
    if partition:
        part_nodes = slurm.nodes(partition=partition)
        pool_size = len(part_nodes)
        if nodes_expr:
            wanted = {n.name for n in inv.nodes_from_hostlist(nodes_expr)}
            part_nodes = [n for n in part_nodes if n.name in wanted]
        states = {n.name: n for n in part_nodes}
        node_list = [inv.Node(name=n.name) for n in part_nodes]
        source = f"partition:{partition}" + (f" nodes:{nodes_expr}" if nodes_expr else "")
        if fleet is not None:
            source = f"sim:{fleet.name} {source}"
    elif fleet is not None:
        node_list = inv.nodes_from_hostlist(nodes_expr) if nodes_expr else \
            [inv.Node(name=n) for n in fleet.node_names()]
        source = f"sim:{fleet.name}"
    elif inventory:
        loaded = inv.load_inventory_file(inventory) if hasattr(inv, "load_inventory_file") else None
        if loaded is not None:
            node_list, inv_transport = list(loaded.nodes), loaded.transport
        else:
            node_list = inv.load_inventory(inventory)
        source = f"inventory:{inventory}"
    else:
        node_list = inv.nodes_from_hostlist(nodes_expr or "")
        source = f"nodes:{nodes_expr}"
    node_list = inv.exclude(node_list, exclude_expr)
    if slurm is not None and not states and node_list:
        states = {n.name: n for n in slurm.nodes(names=[n.name for n in node_list])}
    if slurm is not None and not pool_size:
        pool_size = len(node_list)
    if states:
        node_list, skipped = _skip_unusable(node_list, states, via=via, include_drained=include_drained)
    if not node_list:
        if skipped:
            raise UsageError(f"no nodes left to validate: all {len(skipped)} are down or drained "
                             f"({', '.join(f'{s.node} {s.state}' for s in skipped[:5])}); "
                             "--include-drained validates them over SSH")
        raise UsageError("no nodes left to validate")

    default_spec = profile or (fleet.profile if fleet is not None and fleet.profile else None) or "h100-sxm"
    cache: dict[str, Any] = {}

    def profile_for(node: Any) -> Any:
        spec = profile or node.profile or default_spec
        if spec not in cache:
            cache[spec] = load_profile(spec)
        return cache[spec]

    for n in node_list:  # a bad profile is a usage error before anything runs
        profile_for(n)

    from clusterkit.transport import DEFAULT_TRANSPORT, Transport, make_transport

    transport: Transport
    if via == "slurm":
        from clusterkit.slurm.srun import SrunTransport

        gres = slurm_gres
        if gres is None:
            counts = {profile_for(n).gpu.count for n in node_list}
            gres = f"gpu:{max(counts)}" if counts and max(counts) > 0 else None
        elif gres == "none":
            gres = None
        env = {"CLUSTERKIT_SIM": sim if sim == "builtin" else os.path.abspath(str(sim))} if fleet is not None else {}
        transport = SrunTransport(partition=partition, gres=gres, env=env, job_name="clusterkit-validate",
                                  reservation=hold_reservation if not dry_run else None)
        remote = [sys.executable, "-m", "clusterkit"] if fleet is not None else _remote_argv(remote_command)
    else:
        transport, remote = controller_transport(
            sim=sim, transport_name=transport_name or inv_transport or DEFAULT_TRANSPORT, ssh_config=ssh_config,
            user=user, identity=identity, connect_timeout=min(connect_timeout, timeout),
            accept_new_hostkeys=accept_new_hostkeys, remote_command=remote_command)

    try:
        transport.prepare(node_list)  # configuration errors: exit 2 before any node is contacted
    except BaseException:
        transport.close()
        raise

    from clusterkit.report.terminal import ProgressReporter

    held: list[str] = []
    if hold_reservation and not dry_run:
        held = _hold_nodes(slurm, hold_reservation, [n.name for n in node_list])
    progress = ProgressReporter(len(node_list), enabled=(not no_progress) and sys.stderr.isatty())
    report: Any
    try:
        report = validate_fleet(node_list, transport, profile_for=profile_for, remote=remote,
                                checks=check_list, timeout=timeout, fanout=fanout, source=source,
                                on_done=lambda r: progress.advance(r.node, r.status),
                                extra_args=extra_args or None, baseline=baseline_obj)
    except KeyboardInterrupt as e:
        report = getattr(e, "report", None)
        if report is None:
            raise
    finally:
        progress.close()
        transport.close()
    report.skipped = skipped
    report.partition = partition
    report.job_id = os.environ.get("SLURM_JOB_ID") or None  # a validation job's own id
    slurm_error: Optional[str] = None
    breaker: Optional[str] = None
    if drain and not report.summary.interrupted:
        slurm_error, breaker = _drain_after(report, slurm, pool_size=pool_size, limit=drain_limit, force=force,
                                            dry_run=dry_run, hold_reservation=hold_reservation, held=held)

    from clusterkit.report import write_report

    # Files first: a closed stdout must not cost them. A file that cannot be written does not
    # stop the others, and the exit code still gives the fleet's verdict.
    for target, fmt, opt in ((output, "json", "--output"), (junit, "junit", "--junit"), (html, "html", "--html")):
        if not target:
            continue
        try:
            write_report(report, fmt, target)
        except ClusterkitError as e:
            _err(f"{opt}: {e} (the verdict below stands)")
    if not report.summary.interrupted:  # every node's verdict, for `deploy serve`'s health gate
        from clusterkit import ledger

        try:
            ledger.record(report)
        except ClusterkitError as e:
            _warn(f"{e} (deploy serve will not see this run's verdicts)")
    from clusterkit.telemetry.cli import send_after_run

    send_after_run(report, telemetry_settings, warn=_warn)  # store trouble: warnings, never the verdict
    if as_json and not output:
        _echo_stdout(report.to_json() + "\n")
    else:
        from clusterkit.report.terminal import render_terminal

        text = render_terminal(report, verbose=verbose)
        extra = _slurm_lines(report, dry_run=dry_run)
        if extra:
            text = text.rstrip("\n") + "\n" + "\n".join(extra) + "\n"
        _echo_stdout(text)
    s = report.summary
    if breaker:
        _err(breaker)
    if slurm_error:
        _err(f"Slurm: {slurm_error}")
    if baseline_obj is not None:
        _warn_baseline_unused(report, baseline_obj)
    if s.interrupted:
        _err("interrupted: the report covers the nodes that answered")
    if s.internal_errors:
        bad = [n for n in report.nodes if n.error_kind == "internal"]
        _err(f"internal error on {len(bad)} node(s), e.g. {bad[0].node}: {bad[0].error} "
             "(a bug in clusterkit: please report it)")
    if slurm_error and s.exit_code == EXIT_OK:
        return EXIT_INCOMPLETE  # the nodes are fine, but what --drain had to change could not be
    return s.exit_code


def controller_transport(*, sim: Optional[str], transport_name: str, ssh_config: Optional[str],
                         user: Optional[str], identity: Optional[str], connect_timeout: float,
                         accept_new_hostkeys: bool, remote_command: str) -> tuple[Any, list[str]]:
    """How the controller reaches nodes: simulated nodes run locally (``--sim``), others over
    SSH. The transport and the argv that starts clusterkit on a node."""
    if sim is not None:
        from clusterkit.transport.local import LocalTransport

        sim_spec = sim if sim == "builtin" else os.path.abspath(str(sim))
        return (LocalTransport(env_for=lambda n: {"CLUSTERKIT_SIM": sim_spec, "CLUSTERKIT_NODE": n.name}),
                [sys.executable, "-m", "clusterkit"])
    from clusterkit.transport import make_transport

    remote = _remote_argv(remote_command)
    return make_transport(transport_name, ssh_config=ssh_config, user=user, identity=identity,
                          connect_timeout=connect_timeout, accept_new=accept_new_hostkeys), remote


def _remote_argv(remote_command: str) -> list[str]:
    """--remote-command as an argv (how clusterkit starts on a node)."""
    import shlex

    from clusterkit.errors import UsageError

    try:
        remote = shlex.split(remote_command)
    except ValueError as e:
        raise UsageError(f"--remote-command: {e}") from None
    if not remote:
        raise UsageError("--remote-command is empty")
    return remote


def _check_slurm_options(*, drain: bool, dry_run: bool, force: bool, drain_limit: str,
                         hold_reservation: Optional[str], via: str, transport_name: Optional[str],
                         include_drained: bool, partition: Optional[str], slurm_gres: Optional[str]) -> None:
    """Slurm options that make no sense together: refused before anything runs."""
    from clusterkit.errors import UsageError

    if not drain:
        from click.core import ParameterSource

        limit_given = click.get_current_context().get_parameter_source("drain_limit") is not ParameterSource.DEFAULT
        for flag, on in (("--dry-run", dry_run), ("--force", force), ("--hold-with-reservation", hold_reservation),
                         ("--drain-limit", limit_given)):
            if on:
                raise UsageError(f"{flag} goes with --drain")
    else:
        from clusterkit.slurm.actions import parse_limit

        parse_limit(drain_limit)
    if hold_reservation is not None:
        import re

        if not re.match(r"^[A-Za-z0-9_.-]{1,64}$", hold_reservation):
            raise UsageError(f"--hold-with-reservation {hold_reservation!r}: letters, digits, '_', '.', '-'")
    if via == "slurm" and transport_name:
        raise UsageError("--transport picks an SSH transport; --via slurm runs through srun instead")
    if via != "slurm" and slurm_gres:
        raise UsageError("--slurm-gres goes with --via slurm")
    if include_drained and not partition:
        raise UsageError("--include-drained goes with --partition")


def _skip_unusable(node_list: list[Any], states: dict[str, Any], *, via: str,
                   include_drained: bool) -> tuple[list[Any], list[Any]]:
    """Leave out nodes that cannot or should not be validated: down, drained by someone else
    (unless --include-drained), and under srun every drained node (it takes no jobs)."""
    from clusterkit.models import SkippedNode
    from clusterkit.slurm import reason as reasons

    keep, skipped = [], []
    for n in node_list:
        st = states.get(n.name)
        why = None
        if st is None:
            if via == "slurm":
                why = "not a Slurm node: srun cannot run there"
        elif via == "slurm" and (st.drained or st.down):
            why = ("drained: takes no srun jobs (`clusterkit slurm resume` re-checks it over SSH)"
                   if st.drained else "down: srun cannot run there")
        elif not include_drained and st.down:
            why = "down (--include-drained tries it anyway)"
        elif not include_drained and st.drained and not reasons.is_owned(st.reason):
            why = "drained by someone else (--include-drained validates it anyway)"
        if why is None:
            keep.append(n)
        else:
            skipped.append(SkippedNode(node=n.name, state=st.state_text if st else None,
                                       reason=st.reason if st else None, why=why))
    return keep, skipped


def _hold_nodes(slurm: Any, name: str, nodes: list[str]) -> list[str]:
    """Put ``nodes`` in the maintenance reservation ``name`` (created when missing): no new
    jobs start on them while they are validated. The nodes now held."""
    res = slurm.reservation(name)
    if res is None:
        slurm.create_reservation(name, nodes)
        return list(nodes)
    union = sorted(set(res.nodes) | set(nodes))
    slurm.update_reservation(name, union)
    return list(nodes)


def _drain_after(report: Any, slurm: Any, *, pool_size: int, limit: str, force: bool, dry_run: bool,
                 hold_reservation: Optional[str], held: list[str]) -> tuple[Optional[str], Optional[str]]:
    """--drain after the run: plan, apply (or hold), and attach the actions to the report.
    Returns (Slurm error, circuit-breaker message)."""
    from clusterkit.slurm import actions as act
    from clusterkit.slurm.backend import SlurmError

    try:
        states = {n.name: n for n in slurm.nodes(names=[n.node for n in report.nodes])}
    except SlurmError as e:
        return f"{e}; nothing was drained", None
    planned, breaker = act.plan_drains(report, states, pool_size=pool_size, limit=limit, force=force)
    if hold_reservation:
        error = act.apply_hold(planned, report, slurm, hold_reservation, held=held, dry_run=dry_run)
    else:
        error = act.apply_drains(planned, slurm, dry_run=dry_run)
        if not dry_run:
            act.refresh_after(planned, slurm)
    report.actions = planned
    return error, breaker


def _slurm_lines(report: Any, *, dry_run: bool) -> list[str]:
    from clusterkit.slurm.actions import format_actions

    lines: list[str] = []
    if report.skipped:
        lines.append(f"skipped {len(report.skipped)} node(s):")
        width = max(len(s.node) for s in report.skipped)
        for sk in report.skipped:
            why = f" reason {sk.reason!r}" if sk.reason else ""
            lines.append(f"  {sk.node:{width}}  {sk.state or '?'}{why}: {sk.why}")
    lines += format_actions(report.actions, dry_run=dry_run)
    return lines


# --------------------------------------------------------------------------- baseline
def _warn_baseline_unused(report: Any, baseline: Any) -> None:
    """--baseline given, but nothing of this run could be compared with it: say so (a silent
    green run would read as "no regression")."""
    from clusterkit.validate.fleet import figure_groups

    groups = figure_groups(report.nodes)
    compared = [k for k, g in groups.items() if (f := baseline.figure(*k)) is not None and f.unit == g.unit]
    if compared:
        return
    have = "; ".join(f"{p}: {', '.join(sorted(figs))}" for p, figs in sorted(baseline.profiles.items())) or "nothing"
    run = "; ".join(sorted({f"{p}: {k}" for p, k in groups})) or "no figures (ib.write_bw needs --ib-bw)"
    _warn(f"--baseline {baseline.name}: nothing compared: the baseline has {have}; this run measured {run}")


_BASELINE_DIR_HELP = ("Baseline directory. Default: $CLUSTERKIT_BASELINE_DIR, else /var/lib/clusterkit/baselines "
                      "as root, else $XDG_DATA_HOME/clusterkit/baselines (~/.local/share/clusterkit/baselines).")


@cli.group("report")
def report_group() -> None:
    """Saved reports: render one again (HTML, JUnit, terminal)."""


@report_group.command("render")
@click.argument("report_file", metavar="REPORT.json")
@click.option("--html", "html", metavar="FILE", help="Write the self-contained HTML report to FILE.")
@click.option("--junit", metavar="FILE", help="Write the JUnit XML report to FILE.")
@click.option("-v", "--verbose", is_flag=True, help="With the terminal report: every node and check.")
def report_render_cmd(report_file: str, html: Optional[str], junit: Optional[str], verbose: bool) -> int:
    """Render a saved JSON report (validate --output) again: HTML and/or JUnit files, else the
    terminal report on stdout. Exit 0, or 2 when the report cannot be read."""
    from clusterkit.baseline import read_report
    from clusterkit.report import write_report

    _check_outputs((html, "--html"), (junit, "--junit"))
    report = read_report(report_file)
    for target, fmt in ((html, "html"), (junit, "junit")):
        if target:
            write_report(report, fmt, target)
    if not html and not junit:
        from clusterkit.report.terminal import render_terminal

        _echo_stdout(render_terminal(report, verbose=verbose))
    return EXIT_OK


@cli.group("baseline")
def baseline_group() -> None:
    """Per-cluster baselines: the fleet's figures from a good run, for `validate --baseline`."""


@baseline_group.command("save")
@click.argument("report_file", metavar="REPORT.json")
@click.option("--name", required=True, metavar="NAME", help="The baseline's name (the cluster's): letters, digits, "
                                                              "'.', '_', '-'.")
@click.option("--dir", "directory", metavar="DIR", help=_BASELINE_DIR_HELP)
@click.option("--force", is_flag=True, help="Replace a baseline of that name.")
def baseline_save_cmd(report_file: str, name: str, directory: Optional[str], force: bool) -> int:
    """Keep the figures of a saved JSON report (validate --output) as baseline NAME: the fleet
    median of every figure (ib.write_bw, …) per profile."""
    from clusterkit import baseline as baselines
    from clusterkit.errors import UsageError

    baselines.check_name(name)
    report = baselines.read_report(report_file)
    b = baselines.from_report(report, name)
    if not b.profiles:
        raise UsageError(f"{report_file}: no figures to keep: the report has no numeric result of a figure "
                         "check (ib.write_bw needs validate --ib-bw; `clusterkit checks` lists fleet.outlier)")
    path = baselines.save(b, directory, force=force)
    if report.summary.failed or report.summary.warned:
        _warn(f"{report_file}: {report.summary.failed} failed and {report.summary.warned} warned node(s); their "
              "figures are part of the medians")
    click.echo(f"saved baseline {name}: {b.count()} figure(s) of {len(b.profiles)} profile(s) from {b.nodes} "
               f"node(s) to {path}")
    return EXIT_OK


@baseline_group.command("list")
@click.option("--dir", "directory", metavar="DIR", help=_BASELINE_DIR_HELP)
@click.option("--json", "as_json", is_flag=True, help="Print the list as JSON.")
def baseline_list_cmd(directory: Optional[str], as_json: bool) -> int:
    """List the saved baselines."""
    import json

    from clusterkit import baseline as baselines
    from clusterkit.errors import UsageError

    where = directory or baselines.default_dir()
    rows: list[dict[str, Any]] = []
    for name, path in baselines.entries(where):
        try:
            b = baselines.read(path)
        except UsageError as e:
            rows.append({"name": name, "path": path, "error": str(e)})
            continue
        rows.append({"name": name, "path": path, "created": b.created, "source": b.source, "nodes": b.nodes,
                     "figures": b.count(), "profiles": sorted(b.profiles)})
    if as_json:
        click.echo(json.dumps({"dir": where, "baselines": rows}, indent=2))
        return EXIT_OK
    if not rows:
        click.echo(f"no baselines in {where}")
        return EXIT_OK
    width = max(len(r["name"]) for r in rows)
    for r in rows:
        if "error" in r:
            click.echo(f"{r['name']:{width}}  unreadable: {r['error']}")
        else:
            click.echo(f"{r['name']:{width}}  {r['created']}  {r['nodes']} nodes  {r['figures']} figures  "
                       f"{', '.join(r['profiles'])}  ({r['source']})")
    return EXIT_OK


@baseline_group.command("show")
@click.argument("spec", metavar="NAME|FILE")
@click.option("--dir", "directory", metavar="DIR", help=_BASELINE_DIR_HELP)
@click.option("--json", "as_json", is_flag=True, help="Print the baseline document.")
def baseline_show_cmd(spec: str, directory: Optional[str], as_json: bool) -> int:
    """Show one baseline: its figures per profile."""
    from clusterkit import baseline as baselines

    b = baselines.load(spec, directory)
    if as_json:
        click.echo(b.to_json(), nl=False)
        return EXIT_OK
    click.echo(f"baseline {b.name} · {b.created} · {b.nodes} nodes · from {b.source or '?'} "
               f"(report {b.report_created or '?'}) · clusterkit {b.clusterkit_version or '?'}")
    for profile, figs in sorted(b.profiles.items()):
        click.echo(profile)
        width = max(len(k) for k in figs)
        for key, f in sorted(figs.items()):
            unit = f" {f.unit}" if f.unit else ""
            click.echo(f"  {key:{width}}  {f.median:g}{unit}  ({f.direction} is better; {f.nodes} nodes, "
                       f"{f.samples} samples)")
    return EXIT_OK
