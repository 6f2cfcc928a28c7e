"""Plain data models that flow between the stages (DESIGN.md, "Data flow").

Node side:   probe -> measurement (domain models in clusterkit.validate.*) -> judge -> CheckResult
Controller:  NodeReport per node -> fleet judges -> FleetReport (schema clusterkit.report/v1)
"""

from __future__ import annotations

import datetime as _dt
from enum import Enum
from typing import Any, Optional, Union

from pydantic import BaseModel, ConfigDict, Field

REPORT_SCHEMA = "clusterkit.report/v1"
NODE_SCHEMA = "clusterkit.node/v1"

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


class CheckResult(BaseModel):
    """One verdict: a stable dotted id, what it is about, what was measured and against what."""

    model_config = ConfigDict(extra="forbid")

    check: str
    subject: Optional[str] = None
    status: Status
    value: Scalar = None
    threshold: Scalar = None
    unit: Optional[str] = None
    message: str = ""


class Node(BaseModel):
    """A node of the fleet and how to reach it."""

    model_config = ConfigDict(extra="forbid")

    name: str
    host: Optional[str] = None  # address or ssh_config alias; defaults to name
    port: Optional[int] = None
    user: Optional[str] = None
    labels: dict[str, str] = Field(default_factory=dict)
    profile: Optional[str] = None

    @property
    def address(self) -> str:
        return self.host or self.name


class NodeReport(BaseModel):
    """What one node reported (node-check's JSON), or why it reported nothing."""

    model_config = ConfigDict(extra="forbid")

    node: str
    status: NodeStatus
    checks: list[CheckResult] = Field(default_factory=list)
    facts: dict[str, Any] = Field(default_factory=dict)  # driver/CUDA/VBIOS, GPU model, kernel…
    measurements: dict[str, Any] = Field(default_factory=dict)  # raw probe output per domain
    error: Optional[str] = None  # why nothing (or not everything) ran
    duration_s: Optional[float] = None

    @staticmethod
    def status_of(checks: list[CheckResult]) -> NodeStatus:
        seen = {c.status for c in checks}
        if Status.FAIL in seen:
            return NodeStatus.FAIL
        if Status.ERROR in seen:
            return NodeStatus.ERROR
        if Status.WARN in seen:
            return NodeStatus.WARN
        return NodeStatus.PASS


class FleetFinding(BaseModel):
    """A verdict about the fleet as a whole (drift, outliers), naming the nodes concerned."""

    model_config = ConfigDict(extra="forbid")

    check: str
    status: Status
    nodes: list[str] = Field(default_factory=list)
    value: Scalar = None
    expected: Scalar = None
    message: str = ""


class Summary(BaseModel):
    model_config = ConfigDict(extra="forbid")

    nodes: int = 0
    passed: int = 0
    warned: int = 0
    failed: int = 0
    errored: int = 0
    unreachable: int = 0
    checks: dict[str, int] = Field(default_factory=dict)  # status -> count
    exit_code: int = 0


class FleetReport(BaseModel):
    """The one JSON document of a run; every other sink renders from it."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    schema_: str = Field(default=REPORT_SCHEMA, alias="schema")
    clusterkit_version: str = ""
    created: str = Field(
        default_factory=lambda: _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    )
    source: str = ""  # how the nodes were chosen: "sim:builtin", "nodes:gpu-[001-004]", …
    profile: Optional[str] = None
    duration_s: Optional[float] = None
    summary: Summary = Field(default_factory=Summary)
    nodes: list[NodeReport] = Field(default_factory=list)
    fleet: list[FleetFinding] = Field(default_factory=list)

    def finalize(self) -> "FleetReport":
        """Sort nodes naturally and compute the summary and exit code."""
        from clusterkit.hostlist import natural_key

        self.nodes.sort(key=lambda n: natural_key(n.node))
        s = Summary(nodes=len(self.nodes))
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
            for c in n.checks:
                s.checks[c.status.value] = s.checks.get(c.status.value, 0) + 1
        fleet_fail = any(f.status is Status.FAIL for f in self.fleet)
        fleet_error = any(f.status is Status.ERROR for f in self.fleet)
        if s.failed or fleet_fail:
            s.exit_code = 1
        elif s.unreachable or s.errored or fleet_error:
            s.exit_code = 3
        else:
            s.exit_code = 0
        self.summary = s
        return self

    def to_json(self, indent: int | None = 2) -> str:
        return self.model_dump_json(by_alias=True, indent=indent)

