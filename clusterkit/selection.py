"""Which nodes a command works on, and what is known about them: the Slurm state, the
simulated fleet, the switch topology. Shared by ``nccl single`` / ``nccl localize`` and
``deploy agent``; ``validate`` shares the selector rules (:func:`check_selectors`).

The node selectors: ``--sim [FLEET]``, ``--nodes HOSTLIST``, ``--partition NAME`` (with
``--nodes``: those of its nodes), ``--inventory FILE``, ``--exclude``. For tests, nodes that are
down or drained are left out and listed (a drained node takes no srun job, and a node someone
took out of service is not ours to load with a network test); ``deploy agent`` keeps drained
nodes (a node back from repair needs the agent before it can be validated).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, Optional

from clusterkit.errors import UsageError
from clusterkit.models import Node, SkippedNode


def union(values: tuple[str, ...]) -> Optional[str]:
    """Repeated hostlist options (``--nodes``, ``--exclude``) are one union (a comma joins
    hostlists); None when none was given."""
    items = [v for v in values if v and v.strip()]
    return ",".join(items) if items else None


@dataclass
class Selection:
    nodes: list[Node]
    source: str
    sim_spec: Optional[str] = None  # what CLUSTERKIT_SIM holds for the simulated nodes
    fleet: Any = None  # the SimFleet
    slurm: Any = None  # the Slurm backend, when Slurm takes part
    skipped: list[SkippedNode] = field(default_factory=list)
    inventory_transport: Optional[str] = None

    @property
    def names(self) -> list[str]:
        return [n.name for n in self.nodes]


def check_selectors(*, sim: Optional[str], nodes_expr: Optional[str], inventory: Optional[str],
                    partition: Optional[str]) -> None:
    """The selector combinations that make no sense: a usage error (exit 2) before anything runs."""
    if sim is None and not nodes_expr and not inventory and not partition:
        raise UsageError("say which nodes: --partition NAME, --nodes HOSTLIST, --inventory FILE, or --sim [FLEET]")
    if nodes_expr and inventory:
        raise UsageError("--nodes and --inventory are exclusive")
    if partition and inventory:
        raise UsageError("--partition and --inventory are exclusive (combine --partition with --nodes)")
    if sim is not None and inventory:
        raise UsageError("--sim and --inventory are exclusive (use --sim FLEET --nodes HOSTLIST to pick nodes)")


def select_nodes(*, sim: Optional[str], nodes_expr: Optional[str], inventory: Optional[str],
                 partition: Optional[str], exclude_expr: Optional[str], need_slurm: bool = False,
                 slurm_backend: str = "auto", keep_drained: bool = False) -> Selection:
    """The nodes to work on; a usage error (exit 2) names what is wrong before anything runs.
    Down nodes are left out (and listed in ``skipped``); drained ones too unless
    ``keep_drained``."""
    from clusterkit import inventory as inv

    check_selectors(sim=sim, nodes_expr=nodes_expr, inventory=inventory, partition=partition)
    sel = Selection(nodes=[], source="")
    if partition or need_slurm:
        from clusterkit.slurm.backend import make_backend

        sel.slurm = make_backend(prefer=slurm_backend)
    if sim is not None:
        from clusterkit import sim as simmod

        sel.sim_spec = sim if sim == "builtin" else os.path.abspath(sim)
        sel.fleet = simmod.load_fleet(sel.sim_spec)
    states: dict[str, Any] = {}
    if partition:
        part_nodes = sel.slurm.nodes(partition=partition)
        if nodes_expr:
            wanted = {n.name for n in inv.nodes_from_hostlist(nodes_expr)}
            part_nodes = [n for n in part_nodes if n.name in wanted]
        states = {n.name: n for n in part_nodes}
        sel.nodes = [Node(name=n.name) for n in part_nodes]
        sel.source = f"partition:{partition}" + (f" nodes:{nodes_expr}" if nodes_expr else "")
        if sel.fleet is not None:
            sel.source = f"sim:{sel.fleet.name} {sel.source}"
    elif sel.fleet is not None:
        sel.nodes = inv.nodes_from_hostlist(nodes_expr) if nodes_expr else \
            [Node(name=n) for n in sel.fleet.node_names()]
        sel.source = f"sim:{sel.fleet.name}"
    elif inventory:
        loaded = inv.load_inventory_file(inventory)
        sel.nodes, sel.inventory_transport = list(loaded.nodes), loaded.transport
        sel.source = f"inventory:{inventory}"
    else:
        sel.nodes = inv.nodes_from_hostlist(nodes_expr or "")
        sel.source = f"nodes:{nodes_expr}"
    sel.nodes = inv.exclude(sel.nodes, exclude_expr)
    if sel.slurm is not None and not states and sel.nodes:
        states = {n.name: n for n in sel.slurm.nodes(names=[n.name for n in sel.nodes])}
    if states:
        keep: list[Node] = []
        for n in sel.nodes:
            st = states.get(n.name)
            if st is not None and (st.down or (st.drained and not keep_drained)):
                why = "drained: takes no jobs" if st.drained else "down"
                sel.skipped.append(SkippedNode(node=n.name, state=st.state_text, reason=st.reason, why=why))
            elif st is None and need_slurm:
                sel.skipped.append(SkippedNode(node=n.name, why="not a Slurm node: srun cannot run there"))
            else:
                keep.append(n)
        sel.nodes = keep
    if not sel.nodes:
        if sel.skipped:
            shown = ", ".join(f"{s.node} {s.state or ''}".strip() for s in sel.skipped[:5])
            raise UsageError(f"no nodes left to test: all {len(sel.skipped)} are down, drained or not in Slurm "
                             f"({shown})")
        raise UsageError("no nodes left to test")
    return sel


def leaves_for(sel: Selection, topology_file: Optional[str]) -> tuple[dict[str, list[str]], str]:
    """Leaf switch -> nodes (only the selected ones), and where it came from: ``--topology FILE``
    (Slurm's topology.conf format), the sim fleet's ``switches``, the inventory's ``leaf`` labels,
    or ``scontrol show topology``; ``({}, "none")`` when none is known."""
    from clusterkit.nccl import topology

    wanted = set(sel.names)
    leaves: dict[str, list[str]] = {}
    origin = "none"
    if topology_file is not None:
        from clusterkit.config import read_text

        leaves = topology.parse_topology_conf(read_text(topology_file, "topology file"))
        origin = f"file:{topology_file}"
    elif sel.fleet is not None and getattr(sel.fleet, "switches", None):
        leaves = topology.from_sim(sel.fleet)
        origin = "sim fleet"
    elif any(n.labels.get("leaf") for n in sel.nodes):
        leaves = topology.from_labels(sel.nodes)
        origin = "inventory labels"
    elif sel.slurm is not None:
        text = sel.slurm.topology()
        if text:
            leaves = topology.parse_topology_conf(text)
            origin = "slurm"
    out = {leaf: [n for n in members if n in wanted] for leaf, members in leaves.items()}
    return {k: v for k, v in out.items() if v}, origin
