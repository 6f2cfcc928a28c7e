"""The data of a localization: the tests of a round, what a launcher measured, the report.

A launcher turns :class:`NcclTest` s into :class:`Measured` s (raw evidence, no verdict); the
localizer (:mod:`clusterkit.nccl.localize`) scores them and writes the :class:`LocalizeReport`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Optional

from pydantic import BaseModel, Field

#: What a test runs:
#: ``allreduce``  a multi-node all_reduce_perf across ``nodes`` (ring forced: the network);
#: ``single``     an intra-node all_reduce_perf on ``nodes[0]`` (NVLink alone);
#: ``ib_sweep``   ``ib_write_bw`` from ``nodes[0]`` to ``nodes[1]`` on every rail of ``nodes[0]``.
TestKind = Literal["allreduce", "single", "ib_sweep"]

#: Why a test gave no bandwidth: it hung (ended by its timeout), a rank failed at NCCL init, it
#: crashed later, or the launcher could not start it at all (no binary, no allocation, SSH).
Failure = Literal["hang", "init", "crash", "launch"]


#: The algorithm a test runs: ``ring`` (``NCCL_ALGO=Ring``, ``NCCL_NVLS_ENABLE=0``: forced for
#: every network test, since on 2 nodes NCCL would pick tree/NVLS-tree, which can exceed the network
#: bottleneck), or ``nvls`` (NCCL's own choice on NVSwitch: one node's NVLS figure).
Algo = Literal["ring", "nvls"]


@dataclass(frozen=True)
class NcclTest:
    key: str  # unique in a localization: "r1-t003"
    kind: TestKind
    nodes: tuple[str, ...]
    algo: Algo = "ring"


@dataclass
class Measured:
    """What a launcher got from one test: evidence, not a verdict."""

    test: NcclTest
    busbw_gbps: Optional[float] = None  # allreduce / single: busbw at the judged message size
    wrong: Optional[int] = None  # nccl-tests '#wrong' total (data corruption when > 0)
    failure: Optional[Failure] = None
    failed_node: Optional[str] = None  # the node a failure names, when the output names one
    message: str = ""  # one line: the cause of a failure, or what was measured
    rails_gbps: dict[str, float] = field(default_factory=dict)  # ib_sweep: device -> Gb/s
    rails_failed: dict[str, str] = field(default_factory=dict)  # ib_sweep: device -> why no figure
    duration_s: float = 0.0  # wall time of the test here
    test_time_s: Optional[float] = None  # the tool's own time for the test (the simulator's figure)
    log: str = ""  # the tool's output (kept for --json evidence and debugging; may be trimmed)


TestStatus = Literal["pass", "slow", "hang", "init_fail", "crash", "wrong", "error"]


class TestRecord(BaseModel):
    kind: TestKind
    nodes: list[str]
    busbw_gbps: Optional[float] = None
    z: Optional[float] = None  # robust z-score against the fleet reference
    rails_gbps: dict[str, float] = Field(default_factory=dict)
    status: TestStatus
    message: str = ""


class RoundRecord(BaseModel):
    round: int
    tests: list[TestRecord]
    elapsed_s: float = 0.0
    test_time_s: float = 0.0  # the longest test of the round (tests of a round run at once)
    #: tests of a round run at once only when disjoint; a round whose tests share nodes (round 3)
    #: runs as waves one after another, and its test time is the sum of each wave's longest test
    waves: int = 1


class BadNode(BaseModel):
    node: str
    kind: Literal["slow", "hang", "init_fail", "crash", "wrong"] = "slow"
    evidence: list[str]


class BadLink(BaseModel):
    node: str
    device: str
    evidence: list[str]


class BadUplink(BaseModel):
    switch: str
    evidence: list[str]


class LocalizeReport(BaseModel):
    schema_: str = Field("clusterkit.nccl-localize/v1", alias="schema")
    reference_busbw_gbps: Optional[float] = None
    floor_busbw_gbps: Optional[float] = None
    rounds: list[RoundRecord] = Field(default_factory=list)
    bad_nodes: list[BadNode] = Field(default_factory=list)
    bad_links: list[BadLink] = Field(default_factory=list)
    bad_uplinks: list[BadUplink] = Field(default_factory=list)
    healthy: list[str] = Field(default_factory=list)
    undetermined: list[str] = Field(default_factory=list)  # suspects the rounds could not settle
    #: uplinks that slow tests point to but the rounds could not tell apart (e.g. two leaves: every
    #: test across one crosses the other); they condemn nothing
    undetermined_uplinks: list[BadUplink] = Field(default_factory=list)
    exclude: str = ""  # Slurm hostlist: bad nodes and nodes with a bad rail
    elapsed_s: float = 0.0
    test_time_s: float = 0.0  # sum over rounds of each round's longest test

    model_config = {"populate_by_name": True}
