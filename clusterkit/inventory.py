"""Where nodes come from: a hostlist, an inventory YAML file, or a simulated fleet."""

from __future__ import annotations

from typing import Optional

from pydantic import BaseModel, ConfigDict, Field

from clusterkit.errors import ConfigError
from clusterkit.models import Node


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class InventoryDefaults(_Strict):
    user: Optional[str] = None
    port: Optional[int] = Field(default=None, ge=1, le=65535)
    profile: Optional[str] = None
    labels: dict[str, str] = Field(default_factory=dict)


class InventoryEntry(_Strict):
    name: str = Field(min_length=1)  # a name or a hostlist expression
    host: Optional[str] = None
    port: Optional[int] = Field(default=None, ge=1, le=65535)
    user: Optional[str] = None
    labels: dict[str, str] = Field(default_factory=dict)
    profile: Optional[str] = None


class Inventory(_Strict):
    defaults: InventoryDefaults = Field(default_factory=InventoryDefaults)
    nodes: list[InventoryEntry]


def nodes_from_hostlist(expr: str) -> list[Node]:
    from clusterkit import hostlist

    return [Node(name=n) for n in hostlist.expand(expr, unique=True)]


def parse_inventory(text: str, origin: str) -> list[Node]:
    from clusterkit import hostlist
    from clusterkit.config import load_yaml_model

    inv = load_yaml_model(text, Inventory, f"inventory {origin}", "a mapping with a 'nodes' list")
    d = inv.defaults
    out: dict[str, Node] = {}
    for i, entry in enumerate(inv.nodes):
        names = hostlist.expand(entry.name)
        if entry.host and len(names) > 1:
            raise ConfigError(f"inventory {origin}: nodes.{i}: 'host' given for {len(names)} nodes ({entry.name})")
        for name in names:
            if name in out:
                raise ConfigError(f"inventory {origin}: nodes.{i}: node {name} listed twice")
            out[name] = Node(name=name, host=entry.host, port=entry.port or d.port, user=entry.user or d.user,
                             labels={**d.labels, **entry.labels}, profile=entry.profile or d.profile)
    if not out:
        raise ConfigError(f"inventory {origin}: no nodes")
    return list(out.values())


def load_inventory(path: str) -> list[Node]:
    from clusterkit.config import read_text

    text = read_text(path, "inventory")
    return parse_inventory(text, path)


def exclude(nodes: list[Node], expr: Optional[str]) -> list[Node]:
    if not expr:
        return nodes
    from clusterkit import hostlist

    drop = set(hostlist.expand(expr))
    return [n for n in nodes if n.name not in drop]
