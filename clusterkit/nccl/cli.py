"""``clusterkit nccl …``: NCCL all-reduce validation.

``nccl check FILE`` judges a captured nccl-tests log (:mod:`clusterkit.nccl.judge`). Exit
codes follow the one table: 0 every run passed · 1 a run failed (data corruption, busbw below
the floor) · 2 usage error (no such file, not nccl-tests output, a bad profile) · 3 a run could
not run to the end (init failure, crash, cut-off output), no failures.
"""

from __future__ import annotations

import sys
from typing import Optional, cast

import click

from clusterkit.lazygroup import LazyGroup

EXIT_OK, EXIT_FAIL, EXIT_USAGE, EXIT_INCOMPLETE = 0, 1, 2, 3

#: the keys of one check in ``nccl check --json`` (a report's check results)
CHECK_KEYS = ("check", "subject", "status", "value", "threshold", "unit", "message")


@click.group("nccl", cls=LazyGroup, lazy={"single": "clusterkit.nccl.cli_run:single_cmd",
                                          "localize": "clusterkit.nccl.cli_run:localize_cmd"})
def nccl_group() -> None:
    """NCCL all-reduce: judge nccl-tests logs, test nodes, localize slow nodes and links."""


def _read(file: str) -> tuple[str, str]:
    """(text, label) of FILE, or of stdin for '-'."""
    from clusterkit.errors import UsageError

    if file == "-":
        return sys.stdin.buffer.read().decode("utf-8", errors="replace"), "<stdin>"
    try:
        with open(file, "rb") as fh:
            data = fh.read()
    except OSError as e:
        raise UsageError(f"cannot read {file}: {e.strerror or e}") from None
    return data.decode("utf-8", errors="replace"), file


@nccl_group.command("check")
@click.argument("file", metavar="FILE")
@click.option("--profile", metavar="NAME|FILE",
              help="Profile with the busbw floors (its nccl section). Default: $CLUSTERKIT_PROFILE, else h100-sxm.")
@click.option("--mode", type=click.Choice(["single", "multi"]), default=None,
              help="Judge all_reduce against the one-node or the several-node floor. Default: from the log "
                   "(the hosts of its ranks; else --nodes; else its rank count against the profile's GPUs).")
@click.option("--algo", type=click.Choice(["nvls", "ring"]), default=None,
              help="Which one-node floor: nvls (NCCL's default on NVSwitch; the default here) or ring "
                   "(a run with NCCL_ALGO=Ring).")
@click.option("--nodes", "nodes", type=click.IntRange(1, 100_000), default=None, metavar="N",
              help="The node count the run was meant to have: a log on another count is a warning.")
@click.option("--json", "as_json", is_flag=True, help="Print the check results as JSON.")
def check_cmd(file: str, profile: Optional[str], mode: Optional[str], algo: Optional[str], nodes: Optional[int],
              as_json: bool) -> int:
    """Judge a captured nccl-tests log FILE ('-' for stdin): every run in it.

    A run with wrong elements fails (data corruption); a run that could not run to the end
    (init failure, crash) is an error naming its cause and node; otherwise all_reduce's busbw
    at the profile's message size is judged against the floor (other collectives: reported).
    Exit 0 all passed, 1 a run failed, 2 usage error, 3 a run could not run (no failures).
    """
    from clusterkit.errors import ParseError, UsageError
    from clusterkit.nccl import judge
    from clusterkit.parsers.nccl_tests import parse_nccl_tests
    from clusterkit.profiles import load_profile
    from clusterkit.validate.runner import default_profile_name

    if algo is not None and mode == "multi":
        raise UsageError("--algo picks the one-node floor: it does not go with --mode multi")
    prof = load_profile(profile or default_profile_name())
    text, label = _read(file)
    try:
        output = parse_nccl_tests(text)
    except ParseError as e:
        raise ParseError(f"{label}: {e}") from None
    checks = judge.judge_output(output, prof, mode=cast(Optional[judge.Mode], mode),
                                algo=cast(Optional[judge.Algo], algo), nodes=nodes)
    rc = judge.exit_code(checks)
    if as_json:
        import json

        doc = {"file": label,
               "checks": [{k: v for k, v in c.model_dump(mode="json").items() if k in CHECK_KEYS} for c in checks]}
        click.echo(json.dumps(doc, indent=2))
        return rc
    counts: dict[str, int] = {}
    for c in checks:
        subj = f" {c.subject}" if c.subject else ""
        click.echo(f"{c.status.value.upper():5} {c.check}{subj}: {c.message}")
        counts[c.status.value] = counts.get(c.status.value, 0) + 1
    verdict = {EXIT_FAIL: "fail", EXIT_INCOMPLETE: "error"}.get(rc, "warn" if "warn" in counts else "pass")
    tally = ", ".join(f"{counts[s]} {s}" for s in ("pass", "warn", "fail", "error", "skip") if s in counts)
    runs = len(output.runs)
    click.echo(f"{label}: {verdict} ({runs} run{'s' if runs != 1 else ''}, {len(checks)} checks: {tally}; "
               f"profile {prof.name})")
    return rc
