"""Plain data models that flow between the stages (DESIGN.md, "Data flow").

Node side:   probe -> measurement (domain models in clusterkit.validate.*) -> judge -> CheckResult
Controller:  NodeReport per node -> fleet judges -> FleetReport (schema clusterkit.report/v1)
"""

from __future__ import annotations

import datetime as _dt
from enum import Enum
from typing import Any, Optional, Union

from clusterkit.record import ConfigDict, Field, Record, field_validator

REPORT_SCHEMA = "clusterkit.report/v1"
NODE_SCHEMA = "clusterkit.node/v1"


def _new_run_id() -> str:
    import uuid  # here, not at the top: node-check imports this module and never needs it

    return uuid.uuid4().hex


def schema_major(value: Any, family: str) -> Optional[int]:
    """The major version of a schema string of ``family`` ("clusterkit.node/v1",
    "clusterkit.node/v1.2" -> 1), or None when it is not of that family at all."""
    if not isinstance(value, str) or not value.startswith(family + "/v"):
        return None
    head = value[len(family) + 2:].split(".", 1)[0]
    return int(head) if head.isdigit() and len(head) < 6 else None


# Report models ignore fields they do not know: a newer node (or a newer clusterkit that wrote a
# saved report) may add fields, and an older reader must still read the rest. Users' own input
# files (profiles, inventories, fleets) are strict instead; they live in other modules.
_TOLERANT = ConfigDict(extra="ignore")
#: the controller's models: built on first use, so that node-check does not pay for them
_CONTROLLER = ConfigDict(extra="ignore", defer_build=True)

Scalar = Union[bool, int, float, str, None]


class Status(str, Enum):
    """Status of one check (DESIGN.md, "Check results")."""

    PASS = "pass"
    WARN = "warn"
    FAIL = "fail"
    ERROR = "error"
    SKIP = "skip"

    def __str__(self) -> str:  # pragma: no cover - cosmetic
        return self.value


class NodeStatus(str, Enum):
    """Status of one node: the worst of its checks, or why it has none."""

    PASS = "pass"
    WARN = "warn"
    FAIL = "fail"
    ERROR = "error"  # some check could not run (never drains)
    UNREACHABLE = "unreachable"  # nothing ran on it (connect, host key, auth, timeout)

    def __str__(self) -> str:  # pragma: no cover - cosmetic
        return self.value


class CheckResult(Record):
    """One verdict: a stable dotted id, what it is about, what was measured and against what."""

    model_config = _TOLERANT

    check: str
    subject: Optional[str] = None
    # The subject as fields (set with it through clusterkit.validate.subjects; None: not part of it):
    gpu: Optional[int] = None  # the GPU index it is about (gpu5: 5; a pair gpu2-gpu5: 2)
    peer_gpu: Optional[int] = None  # the other GPU of a pair (gpu2-gpu5: 5)
    device: Optional[str] = None  # an RDMA device (HCA, NIC): mlx5_2
    port: Optional[int] = None  # that device's port (mlx5_2/1: 1)
    link: Optional[int] = None  # an NVLink link index of the GPU (gpu3/link7: 7)
    path: Optional[str] = None  # a file system path: a mount point, a directory
    status: Status
    value: Scalar = None
    threshold: Scalar = None
    unit: Optional[str] = None
    message: str = ""

    @field_validator("status", mode="before")
    @classmethod
    def _unknown_status_is_error(cls, v: Any) -> Any:
        # A status this version does not know (a newer node's) is not evidence: error, never fail.
        if isinstance(v, str) and v not in Status._value2member_map_:
            return Status.ERROR
        return v


class Node(Record):
    """A node of the fleet and how to reach it."""

    model_config = ConfigDict(extra="forbid", frozen=False, defer_build=True)

    name: str
    host: Optional[str] = None  # address or ssh_config alias; defaults to name
    port: Optional[int] = None
    user: Optional[str] = None
    labels: dict[str, str] = Field(default_factory=dict)
    profile: Optional[str] = None

    @property
    def address(self) -> str:
        return self.host or self.name


class NodeReport(Record):
    """What one node reported (node-check's JSON), or why it reported nothing."""

    model_config = _TOLERANT

    node: str
    status: NodeStatus
    checks: list[CheckResult] = Field(default_factory=list)
    facts: dict[str, Any] = Field(default_factory=dict)  # driver/CUDA/VBIOS, GPU model, kernel…
    measurements: dict[str, Any] = Field(default_factory=dict)  # raw probe output per domain
    error: Optional[str] = None  # why nothing (or not everything) ran
    #: what kind of problem ``error`` is: unreachable, hostkey, auth, lost, timeout, internal,
    #: interrupted, schema, no-report, deadline (None when the node reported normally)
    error_kind: Optional[str] = None
    #: ``error`` without addresses or names, so that nodes that failed alike group together
    cause: Optional[str] = None
    #: the end of what the command printed before it was cut off (timeouts, lost connections)
    output_tail: Optional[str] = None
    duration_s: Optional[float] = None

    @field_validator("status", mode="before")
    @classmethod
    def _unknown_status_is_error(cls, v: Any) -> Any:
        if isinstance(v, str) and v not in NodeStatus._value2member_map_:
            return NodeStatus.ERROR
        return v

    @staticmethod
    def status_of(checks: list[CheckResult], error: Optional[str] = None) -> NodeStatus:
        """The node's status from its checks: the worst of them; a node-level error (not
        everything ran) makes a node without failures ``error``."""
        seen = {c.status for c in checks}
        if Status.FAIL in seen:
            return NodeStatus.FAIL
        if Status.ERROR in seen or error:
            return NodeStatus.ERROR
        if Status.WARN in seen:
            return NodeStatus.WARN
        return NodeStatus.PASS


class FleetFinding(Record):
    """A verdict about the fleet as a whole (drift, outliers), naming the nodes concerned."""

    model_config = _CONTROLLER

    check: str
    status: Status
    nodes: list[str] = Field(default_factory=list)
    value: Scalar = None
    expected: Scalar = None
    message: str = ""


class SkippedNode(Record):
    """A node chosen (by --partition) but not validated: down, or drained by someone else."""

    model_config = _CONTROLLER

    node: str
    state: Optional[str] = None  # as sinfo writes it: down*, idle+drain
    reason: Optional[str] = None  # Slurm's reason, as set
    why: str = ""  # why clusterkit left it out


class SlurmAction(Record):
    """One change to Slurm a run made, would make (--dry-run), or refused to make."""

    model_config = _CONTROLLER

    node: str
    #: drain | resume | hold | release | left-alone | already-drained | not-in-slurm
    action: str
    #: applied | dry-run | refused | failed | none
    outcome: str = "none"
    state_before: Optional[str] = None
    state_after: Optional[str] = None
    reason_before: Optional[str] = None
    reason_after: Optional[str] = None
    message: str = ""


class Summary(Record):
    model_config = _CONTROLLER

    nodes: int = 0
    passed: int = 0
    warned: int = 0
    failed: int = 0
    errored: int = 0
    unreachable: int = 0
    checks: dict[str, int] = Field(default_factory=dict)  # status -> count
    #: 0 healthy · 1 a node failed · 3 incomplete · 4 internal error · 130 interrupted
    exit_code: int = 0
    interrupted: bool = False
    internal_errors: int = 0


class FleetReport(Record):
    """The one JSON document of a run; every other sink renders from it."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True, defer_build=True)

    schema_: str = Field(default=REPORT_SCHEMA, alias="schema")
    clusterkit_version: str = ""
    created: str = Field(
        default_factory=lambda: _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    )
    source: str = ""  # how the nodes were chosen: "sim:builtin", "nodes:gpu-[001-004]", …
    run_id: str = Field(default_factory=_new_run_id)  # this run's id (uuid4 hex), fresh per run
    job_id: Optional[str] = None  # the Slurm job id, when the controller ran inside a job (set by the CLI)
    partition: Optional[str] = None  # the Slurm partition the nodes were chosen from (--partition)
    profile: Optional[str] = None
    #: the --checks selection of the run; null: every check (a full validation)
    checks: Optional[list[str]] = None
    duration_s: Optional[float] = None
    summary: Summary = Field(default_factory=Summary)
    nodes: list[NodeReport] = Field(default_factory=list)
    fleet: list[FleetFinding] = Field(default_factory=list)
    #: nodes --partition chose but left out (down, drained by someone else)
    skipped: list[SkippedNode] = Field(default_factory=list)
    #: what --drain / --hold-with-reservation changed in Slurm (or would: --dry-run)
    actions: list[SlurmAction] = Field(default_factory=list)

    def finalize(self, *, interrupted: bool = False) -> "FleetReport":
        """Sort nodes naturally and compute the summary and exit code.

        Exit code: 130 when the run was interrupted (the report covers the nodes that
        answered); else 4 when clusterkit hit a bug on some node; else 1 when a node or the
        fleet failed; else 3 when a node was unreachable or a check could not run; else 0.
        """
        from clusterkit.hostlist import natural_key

        self.nodes.sort(key=lambda n: natural_key(n.node))
        s = Summary(nodes=len(self.nodes), interrupted=interrupted or self.summary.interrupted)
        for n in self.nodes:
            if n.status is NodeStatus.PASS:
                s.passed += 1
            elif n.status is NodeStatus.WARN:
                s.warned += 1
            elif n.status is NodeStatus.FAIL:
                s.failed += 1
            elif n.status is NodeStatus.ERROR:
                s.errored += 1
            else:
                s.unreachable += 1
            if n.error_kind == "internal":
                s.internal_errors += 1
            for c in n.checks:
                s.checks[c.status.value] = s.checks.get(c.status.value, 0) + 1
        fleet_fail = any(f.status is Status.FAIL for f in self.fleet)
        fleet_error = any(f.status is Status.ERROR for f in self.fleet)
        if s.interrupted:
            s.exit_code = 130
        elif s.internal_errors:
            s.exit_code = 4
        elif s.failed or fleet_fail:
            s.exit_code = 1
        elif s.unreachable or s.errored or fleet_error:
            s.exit_code = 3
        else:
            s.exit_code = 0
        self.summary = s
        return self

    def to_json(self, indent: int | None = 2) -> str:
        return self.model_dump_json(by_alias=True, indent=indent)

