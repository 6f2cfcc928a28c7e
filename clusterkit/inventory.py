"""Where nodes come from: a hostlist, an inventory YAML file, or a simulated fleet."""

from __future__ import annotations

import re
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


# --------------------------------------------------------------------------- Ansible export
#: Ansible's own and reserved variable names a label must not shadow as a host variable
#: (labels always stay complete under ``clusterkit_labels``).
_ANSIBLE_RESERVED = frozenset({
    # ansible-core 2.19's reserved names (play and task keywords, template globals)
    "action", "always", "any_errors_fatal", "args", "async", "async_val", "become", "become_exe",
    "become_flags", "become_method", "become_user", "block", "changed_when", "check_mode", "collections",
    "connection", "cycler", "debugger", "delay", "delegate_facts", "delegate_to", "dict", "diff",
    "environment", "fact_path", "failed_when", "force_handlers", "gather_facts", "gather_timeout",
    "handlers", "hosts", "ignore_errors", "ignore_unreachable", "joiner", "lipsum", "local_action",
    "lookup", "loop", "loop_control", "loop_with", "max_fail_percentage", "module_defaults", "name",
    "namespace", "no_log", "notify", "now", "omit", "order", "poll", "port", "post_tasks", "pre_tasks",
    "q", "query", "range", "register", "remote_user", "rescue", "retries", "roles", "run_once", "serial",
    "strategy", "tags", "tasks", "throttle", "timeout", "undef", "until", "vars", "vars_files",
    "vars_prompt", "when", "with_",
    # magic variables
    "group_names", "groups", "hostvars", "inventory_dir", "inventory_file", "inventory_hostname",
    "inventory_hostname_short", "play_hosts", "playbook_dir", "role_name", "role_path", "item",
})
_TEMPLATE_MARKERS = ("{{", "{%", "{#")
_GROUP_CHARS = re.compile(r"[^A-Za-z0-9_]")


def _label_var(key: str) -> Optional[str]:
    """``key`` as a host variable name, or None when it cannot be one (not an identifier, a
    keyword, an Ansible name, or one of ours)."""
    import keyword

    if not key.isidentifier() or not key.isascii() or keyword.iskeyword(key):
        return None
    low = key.lower()
    if low.startswith(("ansible_", "clusterkit_")) or low in _ANSIBLE_RESERVED:
        return None
    return key


def ansible_group_name(text: str) -> str:
    """A valid Ansible group name made from ``text`` (other characters become ``_``; a name
    starting with a digit gets a ``_`` in front)."""
    name = _GROUP_CHARS.sub("_", text) or "_"
    return f"_{name}" if name[0].isdigit() else name


def ansible_host_vars(node: Node) -> dict[str, object]:
    """One node's Ansible host variables: ``ansible_host`` / ``ansible_port`` / ``ansible_user``
    where the clusterkit inventory says so, ``clusterkit_profile``, every label whose key can be
    a variable name, and all labels under ``clusterkit_labels``."""
    out: dict[str, object] = {}
    if node.host:
        out["ansible_host"] = node.host
    if node.port:
        out["ansible_port"] = int(node.port)
    if node.user:
        out["ansible_user"] = node.user
    if node.profile:
        out["clusterkit_profile"] = node.profile
    for key in sorted(node.labels):
        var = _label_var(key)
        if var is not None:
            out[var] = node.labels[key]
    if node.labels:
        out["clusterkit_labels"] = {k: node.labels[k] for k in sorted(node.labels)}
    return out


def ansible_inventory(nodes: list[Node], group: str = "gpu", group_by: tuple[str, ...] = ()) -> dict:
    """An Ansible inventory (the YAML inventory plugin's shape) of ``nodes``::

        {"all": {"children": {group: {"hosts": {name: {host vars}}, "children": {...}}}}}

    Hosts in natural order (gpu-2 before gpu-10). ``group_by`` labels make child groups of
    ``group`` named ``<label>_<value>`` (e.g. ``leaf_l1``), hosts without the label in none."""
    from clusterkit.hostlist import natural_key

    if not group or ansible_group_name(group) != group or group in ("all", "ungrouped"):
        raise ConfigError(f"--group {group!r}: not a valid Ansible group name (letters, digits, '_'; "
                          "not starting with a digit; not 'all' or 'ungrouped')")
    ordered = sorted(nodes, key=lambda n: natural_key(n.name))
    seen: set[str] = set()
    for n in ordered:
        if n.name in seen:
            raise ConfigError(f"node {n.name} listed twice")
        seen.add(n.name)
        if not n.name or any(c.isspace() for c in n.name) or any(c in n.name for c in ",:[]"):
            raise ConfigError(f"node name {n.name!r} cannot be an Ansible host name")
    body: dict[str, object] = {"hosts": {n.name: ansible_host_vars(n) for n in ordered}}
    children: dict[str, dict] = {}
    for label in group_by:
        for n in ordered:
            if label in n.labels:
                child = ansible_group_name(f"{label}_{n.labels[label]}")
                if child in (group, "all", "ungrouped"):
                    raise ConfigError(f"--group-by {label}: group name {child!r} clashes with --group")
                children.setdefault(child, {"hosts": {}})["hosts"][n.name] = None
    if children:
        body["children"] = {k: children[k] for k in sorted(children, key=natural_key)}
    return {"all": {"children": {group: body}}}


def _unsafe_needed(value: str) -> bool:
    return any(m in value for m in _TEMPLATE_MARKERS)


def render_ansible_yaml(inventory: dict) -> str:
    """The inventory as YAML. PyYAML quotes whatever YAML 1.1 would read as something else
    (``yes``, ``007``, ``1e3``); a string holding Jinja2 markers is tagged ``!unsafe`` so that
    Ansible never templates it."""
    import yaml

    class _Unsafe(str):
        pass

    class _Dumper(yaml.SafeDumper):
        pass

    def rep_unsafe(dumper: yaml.SafeDumper, value: _Unsafe) -> yaml.Node:
        return dumper.represent_scalar("!unsafe", str(value), style="'")

    def rep_none(dumper: yaml.SafeDumper, _value: None) -> yaml.Node:
        return dumper.represent_scalar("tag:yaml.org,2002:null", "")

    _Dumper.add_representer(_Unsafe, rep_unsafe)
    _Dumper.add_representer(type(None), rep_none)

    def mark(obj: object) -> object:
        if isinstance(obj, dict):
            return {k: mark(v) for k, v in obj.items()}
        if isinstance(obj, str) and _unsafe_needed(obj):
            return _Unsafe(obj)
        return obj

    text = yaml.dump(mark(inventory), Dumper=_Dumper, sort_keys=False, default_flow_style=False,
                     allow_unicode=True, width=4096)
    return "---\n" + text


def _ini_value(value: object) -> str:
    """A value on an INI host line: Ansible splits the line like a shell and reads each value
    with ``ast.literal_eval``; plain words stay bare, anything else is a quoted Python literal
    (so ``'007'`` stays a string)."""
    import ast
    import json
    import shlex
    import warnings

    if isinstance(value, bool) or value is None:
        raise ConfigError(f"cannot write {value!r} in an INI inventory")
    if isinstance(value, int):
        return str(value)
    if isinstance(value, str) and re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.@/:-]*", value):
        try:  # what Ansible does with it: a word it cannot read as a literal stays the string
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", SyntaxWarning)
                ast.literal_eval(value)
        except (ValueError, SyntaxError):
            return value
    literal = json.dumps(value, ensure_ascii=False)  # a Python literal too, for str and dict of str
    return f"'{literal}'" if "'" not in literal else shlex.quote(repr(value))


def render_ansible_ini(inventory: dict) -> str:
    """The inventory as INI (``[group]`` host lines, ``[group:children]``). INI has no way to keep
    Ansible from templating a value: a value holding Jinja2 markers is refused (use YAML)."""
    def check(obj: object, where: str) -> None:
        if isinstance(obj, dict):
            for k, v in obj.items():
                check(v, f"{where}.{k}")
        elif isinstance(obj, str) and (_unsafe_needed(obj) or "\n" in obj or "\r" in obj):
            raise ConfigError(f"{where}: {obj!r} cannot be written safely in an INI inventory; use --format yaml")

    lines: list[str] = []
    for group, body in inventory["all"]["children"].items():
        lines.append(f"[{group}]")
        for host, hvars in body["hosts"].items():
            check(hvars, host)
            parts = [host] + [f"{k}={_ini_value(v)}" for k, v in hvars.items()]
            lines.append(" ".join(parts))
        children = body.get("children") or {}
        if children:
            lines.append("")
            lines.append(f"[{group}:children]")
            lines.extend(children)
            for child, cbody in children.items():
                lines.append("")
                lines.append(f"[{child}]")
                lines.extend(cbody["hosts"])
        lines.append("")
    return "\n".join(lines)
