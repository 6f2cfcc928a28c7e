"""Where nodes come from: a hostlist, an inventory YAML file, or a simulated fleet."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Optional

from pydantic import BaseModel, ConfigDict, Field

from clusterkit.config import Int
from clusterkit.errors import ConfigError, HostlistError
from clusterkit.models import Node

#: How the controller reaches the nodes (``validate --transport`` names the same ones).
Transport = Literal["openssh", "paramiko"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class InventoryDefaults(_Strict):
    user: Optional[str] = None
    port: Optional[Int] = Field(default=None, ge=1, le=65535)
    profile: Optional[str] = None
    labels: dict[str, str] = Field(default_factory=dict)
    #: The fleet-wide transport; ``--transport`` on the command line wins.
    transport: Optional[Transport] = None


class InventoryEntry(_Strict):
    name: str = Field(min_length=1)  # a name or a hostlist expression
    host: Optional[str] = None
    port: Optional[Int] = Field(default=None, ge=1, le=65535)
    user: Optional[str] = None
    labels: dict[str, str] = Field(default_factory=dict)
    profile: Optional[str] = None


class Inventory(_Strict):
    defaults: InventoryDefaults = Field(default_factory=InventoryDefaults)
    nodes: list[InventoryEntry]


@dataclass
class InventoryFile:
    """What an inventory file says: its nodes (defaults applied) and fleet-wide settings."""

    nodes: list[Node] = field(default_factory=list)
    #: ``defaults.transport``, or None when the file does not name one.
    transport: Optional[str] = None


def nodes_from_hostlist(expr: str) -> list[Node]:
    from clusterkit import hostlist

    return [Node(name=n) for n in hostlist.expand(expr, unique=True)]


def parse_inventory_file(text: str, origin: str) -> InventoryFile:
    from clusterkit import hostlist
    from clusterkit.config import load_yaml_model

    label = f"inventory {origin}"
    inv = load_yaml_model(text, Inventory, label, "a mapping with a 'nodes' list")
    d = inv.defaults
    expanded: list[list[str]] = []
    total = 0
    for i, entry in enumerate(inv.nodes):  # names first: a huge inventory stops before any Node exists
        try:
            names = hostlist.expand(entry.name)
        except HostlistError as e:
            raise ConfigError(f"{label}: nodes.{i}.name: {e}") from None
        total += len(names)
        if total > hostlist.MAX_NAMES:
            raise ConfigError(f"{label}: nodes.{i}: more than {hostlist.MAX_NAMES:,} nodes in all")
        if entry.host and len(names) > 1:
            raise ConfigError(f"{label}: nodes.{i}: 'host' given for {len(names)} nodes ({entry.name})")
        expanded.append(names)
    out: dict[str, Node] = {}
    for i, (entry, names) in enumerate(zip(inv.nodes, expanded)):
        for name in names:
            if name in out:
                raise ConfigError(f"{label}: nodes.{i}: node {name} listed twice")
            out[name] = Node(name=name, host=entry.host, port=entry.port or d.port, user=entry.user or d.user,
                             labels={**d.labels, **entry.labels}, profile=entry.profile or d.profile)
    if not out:
        raise ConfigError(f"{label}: no nodes")
    return InventoryFile(nodes=list(out.values()), transport=d.transport)


def parse_inventory(text: str, origin: str) -> list[Node]:
    return parse_inventory_file(text, origin).nodes


def load_inventory_file(path: str) -> InventoryFile:
    """An inventory file's nodes and settings (``.nodes``, ``.transport``)."""
    from clusterkit.config import read_text

    text = read_text(path, "inventory")
    return parse_inventory_file(text, path)


def load_inventory(path: str) -> list[Node]:
    return load_inventory_file(path).nodes


def inventory_transport(path: str) -> Optional[str]:
    """The transport an inventory file names (``defaults.transport``), or None."""
    return load_inventory_file(path).transport


def exclude(nodes: list[Node], expr: Optional[str]) -> list[Node]:
    if not expr:
        return nodes
    from clusterkit import hostlist

    drop = set(hostlist.expand(expr))
    return [n for n in nodes if n.name not in drop]
