"""A run's results for node_exporter's textfile collector (Prometheus text exposition format).

:func:`write_prom_textfile` writes ``FILE.prom`` through a temporary file in the same directory
and a rename (the collector reads only ``*.prom``; the temporary name is ``.clusterkit-prom-*.tmp``),
so a scrape never sees half a file. No timestamps (the collector refuses them): when the run
was is ``clusterkit_run_timestamp_seconds``. Labels are the tags of docs/metrics.md (``host``,
``partition``, ``profile``, ``check``, ``gpu``, ``device``, ``port``, …); run and job ids are
not labels.
"""

from __future__ import annotations

from collections import defaultdict
from typing import TYPE_CHECKING, Union

from clusterkit.telemetry.lineproto import format_float
from clusterkit.telemetry.points import (
    CHECK_MEASUREMENT,
    FLEET_MEASUREMENT,
    NODE_MEASUREMENT,
    NODE_STATUS_CODES,
    RUN_MEASUREMENT,
    STATUS_CODES,
    number,
    report_points,
    time_ms_of,
)

if TYPE_CHECKING:
    from clusterkit.models import FleetReport

_CODES = ", ".join(f"{c} {s}" for s, c in STATUS_CODES.items())
_NODE_CODES = ", ".join(f"{c} {s}" for s, c in NODE_STATUS_CODES.items())

#: metric -> help text (every metric is a gauge)
HELP: dict[str, str] = {
    "clusterkit_check_status": f"Status of one check result: {_CODES}.",
    "clusterkit_check_value": "Measured value of one check result (numeric results only), in the check's unit.",
    "clusterkit_check_threshold": "Threshold the value was judged against (numeric thresholds only).",
    "clusterkit_node_status": f"Status of one node: {_NODE_CODES}.",
    "clusterkit_node_checks": "Check results of one node by status.",
    "clusterkit_fleet_status": f"Status of one fleet finding (drift, outlier, baseline): {_CODES}.",
    "clusterkit_run_exit_code": "Exit code of the last validate run (0 healthy, 1 failed, 3 incomplete, 4 internal error, "
                                "130 interrupted).",
    "clusterkit_run_nodes": "Nodes of the last run by status.",
    "clusterkit_run_checks": "Check results of the last run by status.",
    "clusterkit_run_duration_seconds": "Wall time of the last run.",
    "clusterkit_run_timestamp_seconds": "When the last run started (Unix time).",
}

Number = Union[int, float]


def escape_label_value(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def escape_help(text: str) -> str:
    return text.replace("\\", "\\\\").replace("\n", "\\n")


def _fmt(v: Number) -> str:
    if isinstance(v, bool):
        return "1" if v else "0"
    if isinstance(v, int):
        return str(v)
    return format_float(v)


def _n(value: object) -> Number:
    if isinstance(value, (int, float)):
        return value
    raise TypeError(f"not a number: {value!r}")


def _labels(labels: dict[str, str]) -> str:
    if not labels:
        return ""
    return "{" + ",".join(f'{k}="{escape_label_value(v)}"' for k, v in labels.items()) + "}"


def _ordered(tags: dict[str, str]) -> dict[str, str]:
    order = ("host", "partition", "profile", "check", "gpu", "peer_gpu", "device", "port", "link", "path", "subject",
             "n")
    out = {k: tags[k] for k in order if k in tags}
    out.update({k: v for k, v in sorted(tags.items()) if k not in out})
    return out


def prom_text(report: "FleetReport") -> str:
    """The exposition text of a run (ends with a newline)."""
    samples: dict[str, list[tuple[dict[str, str], Number]]] = defaultdict(list)
    for p in report_points(report, string_fields=False):
        tags = _ordered(p.tags)
        f = p.fields
        if p.measurement == CHECK_MEASUREMENT:
            samples["clusterkit_check_status"].append((tags, _n(f["status_code"])))
            for name in ("value", "threshold"):
                v = number(f.get(name))
                if v is not None:
                    samples[f"clusterkit_check_{name}"].append((tags, v))
        elif p.measurement == NODE_MEASUREMENT:
            samples["clusterkit_node_status"].append((tags, _n(f["status_code"])))
            for s in STATUS_CODES:
                samples["clusterkit_node_checks"].append(({**tags, "status": s}, _n(f.get(f"checks_{s}", 0))))
        elif p.measurement == FLEET_MEASUREMENT:
            samples["clusterkit_fleet_status"].append((tags, _n(f["status_code"])))
        elif p.measurement == RUN_MEASUREMENT:
            for s, key in (("pass", "passed"), ("warn", "warned"), ("fail", "failed"), ("error", "errored"),
                           ("unreachable", "unreachable")):
                samples["clusterkit_run_nodes"].append(({**tags, "status": s}, _n(f[key])))
            for s in STATUS_CODES:
                samples["clusterkit_run_checks"].append(({**tags, "status": s}, _n(f[f"checks_{s}"])))
            samples["clusterkit_run_exit_code"].append((tags, _n(f["exit_code"])))
            if "duration_s" in f:
                samples["clusterkit_run_duration_seconds"].append((tags, _n(f["duration_s"])))
            samples["clusterkit_run_timestamp_seconds"].append((tags, time_ms_of(report.created) / 1000))
    out: list[str] = []
    for name in HELP:
        rows = samples.get(name)
        if not rows:
            continue
        out.append(f"# HELP {name} {escape_help(HELP[name])}")
        out.append(f"# TYPE {name} gauge")
        out.extend(f"{name}{_labels(labels)} {_fmt(v)}" for labels, v in rows)
    return "\n".join(out) + "\n"


def write_prom_textfile(report: "FleetReport", path: str) -> None:
    """Write :func:`prom_text` to ``path`` atomically. OutputError (one line) when it cannot."""
    from clusterkit.errors import OutputError
    from clusterkit.fsutil import write_atomic

    text = prom_text(report)
    try:
        write_atomic(path, text, prefix=".clusterkit-prom-")
    except OSError as e:
        raise OutputError(f"cannot write {path}: {e.strerror or type(e).__name__}") from None
