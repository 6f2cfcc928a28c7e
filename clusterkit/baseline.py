"""Per-cluster baselines: the fleet's figures (medians) kept from a good run, to compare later runs with.

``clusterkit baseline save REPORT.json --name NAME`` keeps, for every profile and every figure
of the report (the :data:`clusterkit.validate.fleet.FIGURES` checks: ``ib.write_bw``, fio, …),
the median over every node's every sample, computed exactly as ``validate`` computes the fleet
median, so that ``validate --baseline NAME`` compares like with like
(:func:`clusterkit.validate.fleet.judge_baseline`).

One JSON file per baseline, ``NAME.json`` (schema ``clusterkit.baseline/v1``, documented in
docs/checks/fleet.md), in the baseline directory:

1. ``--dir DIR`` (the ``baseline`` commands);
2. ``$CLUSTERKIT_BASELINE_DIR``;
3. ``/var/lib/clusterkit/baselines`` when running as root;
4. ``$XDG_DATA_HOME/clusterkit/baselines`` (``~/.local/share/clusterkit/baselines``).

Files are written atomically (a temporary file in the same directory, then a rename). Every
problem with a name, a file or a report is a :class:`~clusterkit.errors.UsageError` (one line,
exit 2), raised before any node is contacted.
"""

from __future__ import annotations

import datetime as _dt
import json
import os
import re
from typing import Literal, Optional

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from clusterkit.config import first_error
from clusterkit.errors import UsageError
from clusterkit.models import FleetReport, schema_major
from clusterkit.record import ValidationError as RecordValidationError

BASELINE_SCHEMA = "clusterkit.baseline/v1"
BASELINE_FAMILY = "clusterkit.baseline"
REPORT_FAMILY = "clusterkit.report"
#: a baseline name: a file name without its ``.json``
NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
#: a baseline file larger than this is refused (it holds a few numbers per figure)
MAX_BASELINE_BYTES = 16 * 1024 * 1024


class BaselineFigure(BaseModel):
    """One figure of one profile: the fleet median when the baseline was saved."""

    model_config = ConfigDict(extra="ignore")

    median: float = Field(allow_inf_nan=False)
    unit: Optional[str] = None
    direction: Literal["higher", "lower"]
    nodes: int = Field(ge=1)  # nodes with this figure
    samples: int = Field(ge=1)  # samples (node x subject) behind the median


class Baseline(BaseModel):
    """A saved baseline (``clusterkit.baseline/v1``)."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    schema_: str = Field(default=BASELINE_SCHEMA, alias="schema")
    name: str
    created: str = Field(
        default_factory=lambda: _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"))
    clusterkit_version: str = ""
    #: the report it was made from: its ``created`` and ``source``
    report_created: Optional[str] = None
    source: str = ""
    #: nodes that gave at least one figure
    nodes: int = 0
    #: profile -> figure key (``ib.write_bw``, ``storage.fio.read_bw[/mnt/weights]``) -> figure
    profiles: dict[str, dict[str, BaselineFigure]] = Field(default_factory=dict)

    def figure(self, profile: str, key: str) -> Optional[BaselineFigure]:
        return self.profiles.get(profile, {}).get(key)

    def count(self) -> int:
        return sum(len(f) for f in self.profiles.values())

    def to_json(self) -> str:
        return self.model_dump_json(by_alias=True, indent=2) + "\n"


# --------------------------------------------------------------------------- where
def default_dir() -> str:
    """The baseline directory when no ``--dir`` is given."""
    env = os.environ.get("CLUSTERKIT_BASELINE_DIR")
    if env:
        return env
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        return "/var/lib/clusterkit/baselines"
    data = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return os.path.join(data, "clusterkit", "baselines")


def check_name(name: str) -> str:
    if not NAME_RE.match(name):
        raise UsageError(f"baseline name {name!r}: use letters, digits, '.', '_' and '-' (at most 64, "
                         "starting with a letter or digit)")
    return name


def is_file_spec(spec: str) -> bool:
    """``--baseline`` takes a NAME or a FILE: a FILE has a '/' or ends with '.json'."""
    return "/" in spec or os.sep in spec or spec.endswith(".json")


def path_of(name: str, directory: Optional[str] = None) -> str:
    return os.path.join(directory or default_dir(), check_name(name) + ".json")


# --------------------------------------------------------------------------- make
def read_report(path: str) -> FleetReport:
    """A saved ``clusterkit.report/v1`` JSON report (``validate --output``)."""
    try:
        with open(path, "rb") as fh:
            text = fh.read()
    except OSError as e:
        raise UsageError(f"cannot read report {path}: {e.strerror or e}") from None
    try:
        doc = json.loads(text)
    except ValueError as e:
        raise UsageError(f"{path}: not a JSON report ({e})") from None
    if not isinstance(doc, dict) or schema_major(doc.get("schema"), REPORT_FAMILY) is None:
        got = doc.get("schema") if isinstance(doc, dict) else None
        raise UsageError(f"{path}: not a clusterkit report (schema {got!r}; want clusterkit.report/v1, "
                         "from validate --output)")
    if schema_major(doc.get("schema"), REPORT_FAMILY) != 1:
        raise UsageError(f"{path}: report schema {doc.get('schema')} (this clusterkit reads clusterkit.report/v1)")
    try:
        return FleetReport.model_validate(doc)
    except RecordValidationError as e:  # FleetReport is a Record (clusterkit.record)
        raise UsageError(f"{path}: unreadable report: {first_error(e, top='document')}") from None


def from_report(report: FleetReport, name: str) -> Baseline:
    """The baseline of a report: per profile and figure, the median of every sample."""
    from clusterkit import __version__
    from clusterkit.validate.fleet import figure_groups

    groups = figure_groups(report.nodes)
    profiles: dict[str, dict[str, BaselineFigure]] = {}
    nodes: set[str] = set()
    for (profile, key), g in sorted(groups.items()):
        profiles.setdefault(profile, {})[key] = BaselineFigure(
            median=round(g.median(), 6), unit=g.unit, direction="lower" if g.direction == "lower" else "higher",
            nodes=len(g.samples), samples=len(g.values()))
        nodes.update(g.samples)
    return Baseline(name=check_name(name), clusterkit_version=__version__, report_created=report.created,
                    source=report.source, nodes=len(nodes), profiles=profiles)


# --------------------------------------------------------------------------- store
def save(baseline: Baseline, directory: Optional[str] = None, *, force: bool = False) -> str:
    """Write ``NAME.json`` into the baseline directory atomically; returns its path. An existing
    baseline of that name is replaced only with ``force``."""
    directory = directory or default_dir()
    path = path_of(baseline.name, directory)
    if os.path.exists(path) and not force:
        raise UsageError(f"baseline {baseline.name} exists ({path}); --force replaces it")
    try:
        os.makedirs(directory, exist_ok=True)
    except OSError as e:
        raise UsageError(f"cannot create the baseline directory {directory}: {e.strerror or e}") from None
    if not os.path.isdir(directory):
        raise UsageError(f"baseline directory {directory}: not a directory")
    from clusterkit.fsutil import write_atomic

    try:
        write_atomic(path, baseline.to_json(), prefix=f".{baseline.name}.", fsync=True)
    except OSError as e:
        raise UsageError(f"cannot write baseline {path}: {e.strerror or e}") from None
    return path


def read(path: str, label: Optional[str] = None) -> Baseline:
    """Read and check one baseline file."""
    label = label or path
    try:
        with open(path, "rb") as fh:
            text = fh.read(MAX_BASELINE_BYTES + 1)
    except OSError as e:
        raise UsageError(f"cannot read baseline {label}: {e.strerror or e}") from None
    if len(text) > MAX_BASELINE_BYTES:
        raise UsageError(f"baseline {label}: larger than {MAX_BASELINE_BYTES // (1024 * 1024)} MiB")
    try:
        doc = json.loads(text)
    except ValueError as e:
        raise UsageError(f"baseline {label}: not JSON ({e})") from None
    got = doc.get("schema") if isinstance(doc, dict) else None
    major = schema_major(got, BASELINE_FAMILY)
    if major is None:
        raise UsageError(f"baseline {label}: not a clusterkit baseline (schema {got!r}; want {BASELINE_SCHEMA}, "
                         "from `clusterkit baseline save`)")
    if major != 1:
        raise UsageError(f"baseline {label}: schema {got} (this clusterkit reads {BASELINE_SCHEMA})")
    try:
        return Baseline.model_validate(doc)
    except ValidationError as e:
        raise UsageError(f"baseline {label}: {first_error(e, top='document')}") from None


def load(spec: str, directory: Optional[str] = None) -> Baseline:
    """``--baseline NAME|FILE``: a FILE has a '/' or ends with '.json'; anything else is the
    name of a saved baseline in the baseline directory."""
    if is_file_spec(spec):
        if not os.path.isfile(spec):
            why = "not a file" if os.path.exists(spec) else "no such file"
            raise UsageError(f"baseline {spec}: {why}")
        return read(spec)
    directory = directory or default_dir()
    path = path_of(spec, directory)
    if not os.path.isfile(path):
        names = [n for n, _ in entries(directory)]
        known = f"baselines there: {', '.join(names[:10])}{' …' if len(names) > 10 else ''}" if names \
            else "none saved there"
        raise UsageError(f"no baseline named {spec!r} in {directory} ({known}; a file path needs a '/' "
                         "or '.json')")
    return read(path, f"{spec} ({path})")


def entries(directory: Optional[str] = None) -> list[tuple[str, str]]:
    """(name, path) of every ``NAME.json`` in the directory, by name; none when it is missing."""
    directory = directory or default_dir()
    try:
        names = os.listdir(directory)
    except OSError:
        return []
    out = []
    for f in sorted(names):
        if f.endswith(".json") and NAME_RE.match(f[:-5]) and os.path.isfile(os.path.join(directory, f)):
            out.append((f[:-5], os.path.join(directory, f)))
    return out

