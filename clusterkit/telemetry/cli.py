"""``clusterkit telemetry …`` and the telemetry options of ``validate``.

For ``validate``::

    from clusterkit.telemetry.cli import telemetry_options

    @cli.command("validate")
    ...
    @telemetry_options                      # adds --influx-url … --prom-textfile; passes telemetry=
    def validate_cmd(..., telemetry: TelemetryOptions) -> int:
        settings = telemetry.settings()     # before any node is contacted: bad options exit 2
        ...run...
        send_after_run(report, settings, warn=_warn)   # never raises for store trouble

Exit codes of the commands here: 0 every point reached the store, 2 bad input, 3 points had to
be spooled (or were rejected, or could not be kept).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Optional

import click

if TYPE_CHECKING:
    from clusterkit.models import FleetReport
    from clusterkit.telemetry.emit import EmitResult

EXIT_OK, EXIT_USAGE, EXIT_INCOMPLETE = 0, 2, 3
#: validate's budget for metrics (replay + write), seconds
VALIDATE_TIMEOUT_S = 10.0
#: the telemetry commands' budget, seconds
COMMAND_TIMEOUT_S = 60.0

_SPOOL_HELP = ("Spool for points the store did not take. Default: $CLUSTERKIT_SPOOL_DIR, else /var/spool/clusterkit "
               "as root, else $XDG_STATE_HOME/clusterkit/spool (~/.local/state/clusterkit/spool).")


def _warn(message: str) -> None:
    try:
        click.echo(f"clusterkit: warning: {' '.join(message.split())}", err=True)
    except OSError:
        pass


@dataclass(frozen=True)
class TelemetrySettings:
    """Checked telemetry options. ``url`` None: no store (only a textfile, or nothing)."""

    url: Optional[str]
    org: str
    bucket: str
    token: Optional[str]
    spool_dir: str
    spool_max_bytes: int
    timeout_s: float
    string_fields: bool
    prom_textfile: Optional[str] = None

    def __repr__(self) -> str:  # never the token
        return (f"TelemetrySettings(url={self.url!r}, org={self.org!r}, bucket={self.bucket!r}, "
                f"token={'***' if self.token else None}, spool_dir={self.spool_dir!r})")


@dataclass(frozen=True)
class TelemetryOptions:
    """The raw option values; :meth:`settings` checks them."""

    influx_url: Optional[str] = None
    influx_org: Optional[str] = None
    influx_bucket: Optional[str] = None
    influx_token_file: Optional[str] = None
    spool_dir: Optional[str] = None
    spool_max: int = 256
    telemetry_timeout: Optional[float] = None
    influx_numbers_only: bool = False
    prom_textfile: Optional[str] = None

    def settings(self, *, require_url: bool = False, default_timeout: float = VALIDATE_TIMEOUT_S
                 ) -> Optional[TelemetrySettings]:
        """Checked settings; None when neither a store nor a textfile was asked for. UsageError
        (exit 2, one line) for options that cannot work — before the run, not after it."""
        from clusterkit.errors import UsageError
        from clusterkit.telemetry.sink import check_url, resolve_token
        from clusterkit.telemetry.spool import default_spool_dir

        if not self.influx_url:
            if require_url:
                raise UsageError("--influx-url is required (or $CLUSTERKIT_INFLUX_URL)")
            for value, opt in ((self.influx_org, "--influx-org"), (self.influx_bucket, "--influx-bucket"),
                               (self.influx_token_file, "--influx-token-file")):
                if value:
                    raise UsageError(f"{opt} needs --influx-url")
            if not self.prom_textfile:
                return None
        url = check_url(self.influx_url) if self.influx_url else None
        if url is not None:
            missing = [opt for value, opt in ((self.influx_org, "--influx-org"), (self.influx_bucket, "--influx-bucket"))
                       if not value]
            if missing:
                raise UsageError(f"--influx-url needs {' and '.join(missing)} (any value for a store that ignores "
                                 "them, such as VictoriaMetrics)")
        if self.prom_textfile:
            directory = os.path.dirname(os.path.abspath(self.prom_textfile))
            if not os.path.isdir(directory):
                raise UsageError(f"--prom-textfile {self.prom_textfile}: no directory {directory}")
            if not self.prom_textfile.endswith(".prom"):
                raise UsageError(f"--prom-textfile {self.prom_textfile}: node_exporter reads only *.prom files")
        token = resolve_token(self.influx_token_file) if url is not None else None
        return TelemetrySettings(
            url=url, org=self.influx_org or "", bucket=self.influx_bucket or "", token=token,
            spool_dir=os.path.abspath(self.spool_dir or default_spool_dir()),
            spool_max_bytes=int(self.spool_max) * 1024 * 1024,
            timeout_s=float(self.telemetry_timeout if self.telemetry_timeout is not None else default_timeout),
            string_fields=not self.influx_numbers_only, prom_textfile=self.prom_textfile)


_FIELDS = ("influx_url", "influx_org", "influx_bucket", "influx_token_file", "spool_dir", "spool_max",
           "telemetry_timeout", "influx_numbers_only")


def _store_options(timeout_default: float) -> list[Callable[[Any], Any]]:
    return [
        click.option("--influx-url", "influx_url", metavar="URL", envvar="CLUSTERKIT_INFLUX_URL",
                     help="Send the run's metrics to this InfluxDB v2 write API (InfluxDB 2.x/3.x, Telegraf's "
                          "influxdb_v2_listener, VictoriaMetrics): http://HOST:PORT. $CLUSTERKIT_INFLUX_URL."),
        click.option("--influx-org", "influx_org", metavar="ORG", envvar="CLUSTERKIT_INFLUX_ORG",
                     help="Organization ($CLUSTERKIT_INFLUX_ORG)."),
        click.option("--influx-bucket", "influx_bucket", metavar="BUCKET", envvar="CLUSTERKIT_INFLUX_BUCKET",
                     help="Bucket ($CLUSTERKIT_INFLUX_BUCKET)."),
        click.option("--influx-token-file", "influx_token_file", metavar="FILE",
                     help="File holding the write token. Default: $INFLUX_TOKEN, else the file "
                          "$CLUSTERKIT_INFLUX_TOKEN_FILE names. (Never on the command line.)"),
        click.option("--spool-dir", "spool_dir", metavar="DIR", help=_SPOOL_HELP),
        click.option("--spool-max", "spool_max", type=click.IntRange(1, 1024 * 1024), default=256, show_default=True,
                     metavar="MIB", help="Most the spool may hold, MiB; beyond it new points are refused (not older "
                                         "ones dropped)."),
        click.option("--telemetry-timeout", "telemetry_timeout", type=click.FloatRange(0.1, 3600),
                     default=timeout_default, show_default=True, metavar="SECONDS",
                     help="Most time spent sending metrics (replay of the spool included); what is not sent by "
                          "then is spooled."),
        click.option("--influx-numbers-only", "influx_numbers_only", is_flag=True,
                     help="Leave out string fields (status words, messages, ids): for stores that keep only "
                          "numbers."),
    ]


def _apply(f: Callable[..., Any], options: list[Callable[[Any], Any]]) -> Callable[..., Any]:
    for opt in reversed(options):
        f = opt(f)
    return f


def telemetry_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """Add the telemetry options (store, spool, ``--prom-textfile``) to a command; the command
    gets them as one keyword argument, ``telemetry: TelemetryOptions``."""
    names = _FIELDS + ("prom_textfile",)

    @functools.wraps(f)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        kwargs["telemetry"] = TelemetryOptions(**{k: kwargs.pop(k) for k in names if k in kwargs})
        return f(*args, **kwargs)

    prom = click.option("--prom-textfile", "prom_textfile", metavar="FILE.prom",
                        help="Also write the results for node_exporter's textfile collector (atomically).")
    return _apply(wrapper, [*_store_options(VALIDATE_TIMEOUT_S), prom])


def store_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """The store and spool options alone (no textfile), as ``telemetry: TelemetryOptions``: for
    commands whose metrics are not a report's (``deploy serve``)."""

    @functools.wraps(f)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        kwargs["telemetry"] = TelemetryOptions(**{k: kwargs.pop(k) for k in _FIELDS if k in kwargs})
        return f(*args, **kwargs)

    return _apply(wrapper, _store_options(VALIDATE_TIMEOUT_S))


def send_lines(lines: list[str], settings: Optional[TelemetrySettings],
               warn: Callable[[str], None] = _warn) -> Optional["EmitResult"]:
    """Send lines already built (replay + write + spool, as after a validation); every problem
    is one ``warn`` line, nothing raises. None when there is no store."""
    if settings is None or settings.url is None or not lines:
        return None
    from clusterkit.telemetry.emit import emit_lines

    result = emit_lines(lines, url=settings.url, org=settings.org, bucket=settings.bucket, token=settings.token,
                        spool_dir=settings.spool_dir, deadline_s=settings.timeout_s,
                        spool_max_bytes=settings.spool_max_bytes)
    for line in result.warnings:
        warn(line)
    return result


def send_after_run(report: "FleetReport", settings: Optional[TelemetrySettings],
                   warn: Callable[[str], None] = _warn) -> Optional["EmitResult"]:
    """What ``validate`` calls once the report is final (files written): the textfile, then
    replay + write + spool. Every problem is one ``warn`` line; nothing raises for a store, a
    spool or a textfile that fails. None when there is no store."""
    if settings is None:
        return None
    from clusterkit.errors import ClusterkitError

    if settings.prom_textfile:
        from clusterkit.telemetry.prom import write_prom_textfile

        try:
            write_prom_textfile(report, settings.prom_textfile)
        except ClusterkitError as e:
            warn(f"--prom-textfile: {e}")
    if settings.url is None:
        return None
    from clusterkit.telemetry.emit import emit

    result = emit(report, url=settings.url, org=settings.org, bucket=settings.bucket, token=settings.token,
                  spool_dir=settings.spool_dir, deadline_s=settings.timeout_s,
                  spool_max_bytes=settings.spool_max_bytes, string_fields=settings.string_fields)
    for line in result.warnings:
        warn(line)
    return result


# ------------------------------------------------------------------------------ commands
def _lazy_group() -> Any:
    from clusterkit.lazygroup import LazyGroup

    return LazyGroup


# telegraf-config (clusterkit/telemetry/cli_telegraf.py) is imported only when it runs: this
# module is imported by every clusterkit command (validate's options), node-check included
@click.group("telemetry", cls=_lazy_group(),
             lazy={"telegraf-config": "clusterkit.telemetry.cli_telegraf:telegraf_config_cmd"})
def telemetry_group() -> None:
    """Metrics: push a saved report to the store, replay the spool."""


def _command_options(f: Callable[..., Any]) -> Callable[..., Any]:
    return _apply(f, _store_options(COMMAND_TIMEOUT_S))


def read_report(path: str) -> "FleetReport":
    """A saved ``clusterkit.report/v1`` JSON report; UsageError (one line) when it is not one."""
    from clusterkit.errors import UsageError
    from clusterkit.models import REPORT_SCHEMA, FleetReport, schema_major
    from clusterkit.record import ValidationError

    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except OSError as e:
        raise UsageError(f"cannot read report {path}: {e.strerror or type(e).__name__}") from None
    try:
        report = FleetReport.model_validate_json(data)
    except ValidationError as e:
        errors = e.errors()
        where = ".".join(str(x) for x in errors[0]["loc"]) if errors else ""
        msg = errors[0]["msg"] if errors else "invalid"
        raise UsageError(f"{path}: not a clusterkit report ({where or 'document'}: {msg})") from None
    family = REPORT_SCHEMA.rsplit("/", 1)[0]
    if "schema_" not in report.model_fields_set or schema_major(report.schema_, family) != 1:
        raise UsageError(f"{path}: not a clusterkit report (want schema {REPORT_SCHEMA}, from validate --output)")
    return report


def _summary(result: "EmitResult", url: str) -> str:
    from clusterkit.telemetry.sink import display_url

    parts = [f"wrote {result.written} of {result.points} points to {display_url(url)}"]
    if result.replayed:
        parts.append(f"replayed {result.replayed} spooled points first")
    if result.spooled:
        parts.append(f"spooled {result.spooled}")
    if result.rejected:
        parts.append(f"{result.rejected} rejected")
    if result.lost:
        parts.append(f"{result.lost} neither sent nor kept")
    return "; ".join(parts)


@telemetry_group.command("push")
@click.argument("report_file", metavar="REPORT.json")
@_command_options
def push_cmd(report_file: str, **options: Any) -> int:
    """Send the metrics of a saved report (validate --output) to the store, after replaying the
    spool. Its points carry the run's start as timestamp: pushing a report twice overwrites.

    Exit 0 every point written, 2 bad input, 3 points spooled, rejected or not kept.
    """
    from clusterkit.telemetry.emit import emit

    settings = TelemetryOptions(**options).settings(require_url=True, default_timeout=COMMAND_TIMEOUT_S)
    assert settings is not None and settings.url is not None
    report = read_report(report_file)
    result = emit(report, url=settings.url, org=settings.org, bucket=settings.bucket, token=settings.token,
                  spool_dir=settings.spool_dir, deadline_s=settings.timeout_s,
                  spool_max_bytes=settings.spool_max_bytes, string_fields=settings.string_fields)
    click.echo(_summary(result, settings.url))
    for line in result.warnings:
        _warn(line)
    return result.exit_code


@telemetry_group.command("replay")
@click.option("--rejected", "include_rejected", is_flag=True,
              help="Also send the batches the store once rejected (from the spool's rejected/), once more.")
@_command_options
def replay_cmd(include_rejected: bool, **options: Any) -> int:
    """Send the spooled batches to the store, oldest first; each is deleted once the store took
    it. Stops at the first batch the store does not take.

    Exit 0 the spool is empty, 2 bad input, 3 batches are still waiting (or were rejected).
    """
    import time

    from clusterkit.telemetry.emit import _batches, _store_line
    from clusterkit.telemetry.sink import InfluxSink, display_url
    from clusterkit.telemetry.spool import Spool, replay

    settings = TelemetryOptions(**options).settings(require_url=True, default_timeout=COMMAND_TIMEOUT_S)
    assert settings is not None and settings.url is not None
    spool = Spool(settings.spool_dir, max_bytes=settings.spool_max_bytes)
    with InfluxSink(settings.url, org=settings.org, bucket=settings.bucket, token=settings.token) as sink:
        r = replay(spool, sink, deadline=time.monotonic() + settings.timeout_s, include_rejected=include_rejected)
    if r.busy:
        _warn(f"telemetry: another clusterkit is replaying {spool.directory}; nothing done")
        return EXIT_INCOMPLETE
    for w in r.warnings:
        _warn(f"telemetry: {w}")
    waiting = len(spool.pending())
    click.echo(f"replayed {r.lines} points ({_batches(r.files)}) from {spool.directory} to "
               f"{display_url(settings.url)}; {_batches(waiting)} waiting")
    if r.stopped is not None:

        _warn(f"telemetry: {_store_line(settings.url, r.stopped, settings.token)}; stopped with {_batches(r.left)} "
              "left")
    elif r.out_of_time:
        _warn(f"telemetry: out of time ({settings.timeout_s:g} s) with {_batches(r.left)} left")
    if r.rejected_files:
        _warn(f"telemetry: the store rejected {r.rejected_lines} points ({_batches(r.rejected_files)}; "
              f"{r.rejected_detail}): kept in {spool.rejected_dir}")
    return EXIT_OK if waiting == 0 and not r.rejected_files and not r.warnings else EXIT_INCOMPLETE
