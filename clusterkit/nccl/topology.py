"""Switch topology: which leaf switch each node hangs off.

Localization tells a bad switch uplink from a bad node by testing pairs inside one leaf and
across leaves, so it needs ``leaf switch -> nodes``. Three sources, all giving the same shape
(``dict[leaf, list[node]]``, a node in at most one leaf):

* Slurm's ``topology.conf`` (topology/tree): ``SwitchName=leaf1 Nodes=gpu-[001-016]`` lines; the
  switches with ``Nodes=`` are the leaves, ``Switches=`` lines only build the levels above;
* inventory labels: ``labels: {leaf: ib-leaf-03}`` per node (or any other label key);
* the simulator's fleet: its ``switches:`` map.

Pure functions; no I/O (the caller reads the file).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Optional

from clusterkit.errors import ConfigError, HostlistError

if TYPE_CHECKING:
    from clusterkit.models import Node

Leaves = dict[str, list[str]]

#: LinkSpeed and Level (``scontrol show topology`` prints it) are read and ignored
_KNOWN_KEYS = ("switchname", "switches", "nodes", "linkspeed", "level")
_PAIR_RE = re.compile(r'([A-Za-z][A-Za-z0-9_]*)=("[^"]*"|\S*)')
_NAME_RE = re.compile(r"^[A-Za-z0-9_.:+-]{1,255}$")
_MAX_TEXT = 16 * 1024 * 1024


def _logical_lines(text: str) -> list[tuple[int, str]]:
    """(first line number, text) per logical line: comments (``#`` to the end of the line, but
    not ``\\#``) removed, a line ending in a backslash joined with the next one (as is: no
    space put between them), as Slurm's configuration parser does."""
    out: list[tuple[int, str]] = []
    pending: Optional[tuple[int, str]] = None
    for no, raw in enumerate(text.splitlines(), 1):
        line = raw
        cut = -1
        i = 0
        while i < len(line):
            if line[i] == "\\" and i + 1 < len(line) and line[i + 1] == "#":
                i += 2
                continue
            if line[i] == "#":
                cut = i
                break
            i += 1
        if cut >= 0:
            line = line[:cut]
        line = line.replace("\\#", "#").rstrip()
        cont = line.endswith("\\")
        if cont:
            line = line[:-1]
        if pending is not None:
            pending = (pending[0], pending[1] + line)
        else:
            pending = (no, line)
        if not cont:
            if pending[1].strip():
                out.append((pending[0], pending[1].strip()))
            pending = None
    if pending is not None and pending[1].strip():
        out.append((pending[0], pending[1].strip()))
    return out


def parse_topology_conf(text: str, origin: str = "topology.conf") -> Leaves:
    """Leaf switch -> its nodes (file order of the switches, the nodes as their hostlist
    expands), from Slurm's ``topology.conf`` text.

    Keys are case-insensitive (``SwitchName``, ``Nodes``, ``Switches``, ``LinkSpeed``, and
    ``Level`` as ``scontrol show topology`` prints the same lines); ``LinkSpeed`` and ``Level``
    are ignored; ``Switches=`` must name switches of the file. Anything else (a
    line without ``SwitchName``, an unknown key, a bad hostlist, a switch named twice, a node
    under two leaves) is a :class:`ConfigError` naming the line."""
    from clusterkit import hostlist

    if len(text) > _MAX_TEXT:
        raise ConfigError(f"{origin}: larger than {_MAX_TEXT // (1024 * 1024)} MiB")
    leaves: Leaves = {}
    defined: dict[str, int] = {}
    children: list[tuple[int, str, str]] = []  # (line, switch, child expression)
    owner: dict[str, str] = {}

    def bad(no: int, why: str) -> ConfigError:
        return ConfigError(f"{origin}: line {no}: {why}")

    for no, line in _logical_lines(text):
        pairs: dict[str, str] = {}
        pos = 0
        for m in _PAIR_RE.finditer(line):
            gap = line[pos:m.start()]
            if gap.strip():
                raise bad(no, f"expected key=value, found {gap.strip()!r}")
            pos = m.end()
            key, value = m.group(1).lower(), m.group(2)
            if value.startswith('"') and value.endswith('"') and len(value) >= 2:
                value = value[1:-1]
            if key == "blockname":
                raise bad(no, "BlockName (topology/block) gives no switch tree: only SwitchName lines "
                              "(topology/tree) are read")
            if key not in _KNOWN_KEYS:
                raise bad(no, f"unknown key {m.group(1)!r} (SwitchName, Nodes, Switches, LinkSpeed, Level)")
            if key in pairs:
                raise bad(no, f"{m.group(1)} given twice")
            pairs[key] = value
        rest = line[pos:]
        if rest.strip():
            raise bad(no, f"expected key=value, found {rest.strip()!r}")
        name = pairs.get("switchname")
        if not name:
            raise bad(no, "no SwitchName=")
        if not _NAME_RE.match(name):
            raise bad(no, f"SwitchName {name!r} is not a switch name")
        if name in defined:
            raise bad(no, f"switch {name} is defined twice (first on line {defined[name]})")
        defined[name] = no
        if "switches" in pairs:
            if not pairs["switches"]:
                raise bad(no, f"switch {name}: empty Switches=")
            children.append((no, name, pairs["switches"]))
        if "nodes" in pairs:
            try:
                nodes = hostlist.expand(pairs["nodes"], unique=True)
            except HostlistError as e:
                raise bad(no, f"switch {name}: Nodes=: {e}") from None
            if not nodes:
                raise bad(no, f"switch {name}: empty Nodes=")
            for node in nodes:
                if node in owner:
                    raise bad(no, f"node {node} is under switch {name} and switch {owner[node]}: a node hangs "
                                  "off one leaf")
                owner[node] = name
            leaves[name] = nodes
        elif "switches" not in pairs:
            raise bad(no, f"switch {name} has neither Nodes= nor Switches=")
    for no, name, expr in children:
        try:
            names = hostlist.expand(expr, unique=True)
        except HostlistError as e:
            raise bad(no, f"switch {name}: Switches=: {e}") from None
        for child in names:
            if child not in defined:
                raise bad(no, f"switch {name}: Switches= names {child}, which no SwitchName line defines")
    return leaves


def from_labels(nodes: Iterable["Node"], key: str = "leaf") -> Leaves:
    """Leaf -> nodes from the inventory label ``key`` (``labels: {leaf: ib-leaf-03}``); nodes
    without the label are in no leaf. Empty when no node has it."""
    from clusterkit.hostlist import natural_key

    leaves: Leaves = {}
    for n in nodes:
        leaf = (n.labels.get(key) or "").strip()
        if leaf:
            members = leaves.setdefault(leaf, [])
            if n.name not in members:
                members.append(n.name)
    return {leaf: sorted(members, key=natural_key) for leaf, members in
            sorted(leaves.items(), key=lambda kv: natural_key(kv[0]))}


def from_sim(fleet: Any) -> Leaves:
    """Leaf -> nodes from a simulated fleet's ``switches`` map (leaf -> hostlist); empty for a
    fleet without one."""
    from clusterkit import hostlist

    switches: Mapping[str, str] = getattr(fleet, "switches", None) or {}
    leaves: Leaves = {}
    for leaf, expr in switches.items():
        try:
            leaves[leaf] = hostlist.expand(expr, unique=True)
        except HostlistError as e:
            raise ConfigError(f"sim fleet: switches.{leaf}: {e}") from None
    return leaves


def leaf_of(leaves: Mapping[str, Sequence[str]]) -> dict[str, str]:
    """Node -> its leaf (the inverse of a leaves map)."""
    return {node: leaf for leaf, nodes in leaves.items() for node in nodes}
