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
    except click.exceptions.NoArgsOmittedError:  # pragma: no cover - click internals
        sys.exit(EXIT_USAGE)
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

    Like `scontrol show hostnames` / `scontrol show hostlist`.
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
