"""The NCCL environment of a test: which rails (``NCCL_IB_HCA``), which socket interface
(``NCCL_SOCKET_IFNAME``), which algorithm, and debug output only when asked.

``NCCL_IB_HCA`` comes from the rails the fabric checks discovered on the nodes, never from a
hard-coded list: a rail is a port whose ``ib.port.state`` passed and whose ``ib.port.rate`` did
not fail. A rail trained down to 100G left in the list caps the test's busbw (NCCL spreads the
traffic evenly over the rails it is given: the slowest sets the pace), and a port flipped to
Ethernet is no rail at all (the ib checks do not judge it, so it is never listed). Names are
always given in NCCL's exact form (``=mlx5_0:1,mlx5_1:1``): without ``=`` NCCL matches
prefixes, and ``mlx5_1`` would also pick ``mlx5_10``.

``NCCL_SOCKET_IFNAME`` comes from the inventory's ``socket_ifname`` label (the label
``clusterkit deploy serve`` reads for the same variable), per node or in ``defaults``.

Pure functions; no I/O.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Optional

from clusterkit.errors import ConfigError
from clusterkit.models import NodeReport, Status

if TYPE_CHECKING:
    from clusterkit.models import Node

#: the inventory label naming a node's socket interface (NCCL_SOCKET_IFNAME, GLOO_SOCKET_IFNAME)
SOCKET_IFNAME_LABEL = "socket_ifname"
#: what NCCL_DEBUG / NCCL_DEBUG_SUBSYS become with --debug (and only then)
DEBUG_ENV = {"NCCL_DEBUG": "INFO", "NCCL_DEBUG_SUBSYS": "INIT,NET"}

_PORT_SUBJECT_RE = re.compile(r"^([A-Za-z0-9_.-]+)/([0-9]{1,3})$")
_IFNAME_RE = re.compile(r"^[A-Za-z0-9_.:@-]{1,15}$")


def _port_of(check: "object") -> Optional[tuple[str, int]]:
    device = getattr(check, "device", None)
    port = getattr(check, "port", None)
    if device:
        return device, port if port is not None else 1
    m = _PORT_SUBJECT_RE.match(getattr(check, "subject", None) or "")  # an older node's report
    return (m.group(1), int(m.group(2))) if m else None


def rails_from_report(report: NodeReport) -> Optional[list[str]]:
    """The node's usable rails as ``device:port`` (``mlx5_0:1``), natural order: ports whose
    ``ib.port.state`` passed and whose ``ib.port.rate`` passed (or was skipped: the profile sets
    no rate). None when the ib checks did not run on the node (no ib verdicts, the domain was
    skipped, or the RDMA devices could not be read): unknown, not "no rails"."""
    from clusterkit.hostlist import natural_key

    states = [c for c in report.checks if c.check == "ib.port.state"]
    if not states:
        return None
    rate_bad = set()
    for c in report.checks:
        if c.check == "ib.port.rate" and c.status not in (Status.PASS, Status.SKIP):
            at = _port_of(c)
            if at is not None:
                rate_bad.add(at)
    good = set()
    for c in states:
        at = _port_of(c)
        if at is not None and c.status is Status.PASS and at not in rate_bad:
            good.add(at)
    return sorted((f"{d}:{p}" for d, p in good), key=natural_key)


def ib_hca_value(rails_by_node: Mapping[str, Optional[Sequence[str]]], nodes: Sequence[str]) -> Optional[str]:
    """``NCCL_IB_HCA`` for a test on ``nodes``: ``=`` and the rails good on every one of them
    (``=mlx5_0:1,mlx5_1:1``, natural order). None (leave NCCL_IB_HCA unset) when any node's
    rails are unknown, or no rail is good on all of them (``=`` with an empty list would leave
    NCCL no HCA at all)."""
    from clusterkit.hostlist import natural_key

    common: Optional[set[str]] = None
    for node in nodes:
        rails = rails_by_node.get(node)
        if rails is None:
            return None
        common = set(rails) if common is None else common & set(rails)
    if not common:
        return None
    return "=" + ",".join(sorted(common, key=natural_key))


def nccl_env(algo: Optional[str] = None, ib_hca: Optional[str] = None, socket_ifname: Optional[str] = None,
             debug: bool = False) -> dict[str, str]:
    """The NCCL variables of one test.

    ``algo``: ``ring`` forces the ring algorithm (``NCCL_ALGO=Ring``, ``NCCL_NVLS_ENABLE=0``);
    ``nvls`` or None leaves NCCL's choice (NVLS on NVSwitch systems). ``ib_hca`` /
    ``socket_ifname``: set when given. ``debug``: ``NCCL_DEBUG=INFO`` and
    ``NCCL_DEBUG_SUBSYS=INIT,NET``; never set otherwise (INFO output slows the run down and
    buries the result table)."""
    env: dict[str, str] = {}
    if algo is not None:
        low = algo.lower()
        if low == "ring":
            env["NCCL_ALGO"] = "Ring"
            env["NCCL_NVLS_ENABLE"] = "0"
        elif low != "nvls":
            raise ConfigError(f"unknown NCCL algorithm {algo!r}: nvls or ring")
    if ib_hca:
        env["NCCL_IB_HCA"] = ib_hca
    if socket_ifname:
        env["NCCL_SOCKET_IFNAME"] = socket_ifname
    if debug:
        env.update(DEBUG_ENV)
    return env


def socket_ifname_from_labels(nodes: Iterable["Node"], label: str = SOCKET_IFNAME_LABEL) -> Optional[str]:
    """``NCCL_SOCKET_IFNAME`` for a test on ``nodes`` from their inventory label: None when no
    node has the label; the one value when they agree; several interfaces as NCCL's list
    (``ens3,eth0``, or ``=ens3,eth0`` when every value is an exact ``=`` name). A label on some
    of the nodes only, or a value that is no interface name, is a ConfigError (the variable is
    one value for every rank of the test)."""
    from clusterkit.hostlist import natural_key

    values: dict[str, str] = {}
    missing: list[str] = []
    for n in nodes:
        v = (n.labels.get(label) or "").strip()
        if v:
            values[n.name] = v
        else:
            missing.append(n.name)
    if not values:
        return None
    if missing:
        have = sorted(values, key=natural_key)[0]
        raise ConfigError(f"inventory label {label} is set on {have} but not on {missing[0]}: set it on "
                          "every node of a test (or in defaults.labels)")
    exact = {v.startswith("=") for v in values.values()}
    if len(exact) > 1:
        raise ConfigError(f"inventory label {label}: mixes exact (=name) and prefix names")
    names: list[str] = []
    for node, v in values.items():
        body = v[1:] if v.startswith("=") else v
        for name in body.split(","):
            if not _IFNAME_RE.match(name):
                raise ConfigError(f"inventory label {label} of {node}: {name!r} is not a network interface name")
            if name not in names:
                names.append(name)
    names.sort(key=natural_key)
    return ("=" if exact == {True} else "") + ",".join(names)
