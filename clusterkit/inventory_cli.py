"""``clusterkit inventory …``: one list of nodes for clusterkit and the tools beside it.

``clusterkit inventory export --ansible`` prints an Ansible inventory made from a clusterkit
inventory file, a Slurm partition or a hostlist, so that the playbooks in ``playbooks/`` and
``clusterkit validate`` work on the same nodes (docs/commands/inventory.md).

Exit codes: 0 printed, 2 bad input (an unreadable inventory, an unknown partition, a value
that cannot be written in the chosen format), 4 internal error.
"""

from __future__ import annotations

from typing import Optional

import click

EXIT_OK = 0


@click.group("inventory")
def inventory_group() -> None:
    """Inventories: export clusterkit's list of nodes for other tools (Ansible)."""


@inventory_group.command("export")
@click.option("--ansible", "ansible", is_flag=True,
              help="Print an Ansible inventory (the only export format; required).")
@click.option("--inventory", "inventory_file", metavar="FILE",
              help="A clusterkit inventory YAML (host, port, user, labels, profile of every node).")
@click.option("--partition", metavar="NAME",
              help="The nodes of this Slurm partition (with --nodes: only those of them).")
@click.option("--nodes", "nodes_expr", multiple=True, metavar="HOSTLIST",
              help="These nodes, e.g. 'gpu-[001-032]' (repeat: the union). With --inventory or "
                   "--partition: only those of them.")
@click.option("--exclude", "exclude_expr", multiple=True, metavar="HOSTLIST",
              help="Nodes to leave out (repeat: the union).")
@click.option("--group", "group", default="gpu", show_default=True, metavar="NAME",
              help="The Ansible group that holds the nodes (what the playbooks' hosts: take).")
@click.option("--group-by", "group_by", multiple=True, metavar="LABEL",
              help="Also make child groups <LABEL>_<value> from this label (repeat): --group-by leaf "
                   "puts gpu-001 with label leaf=l1 in group leaf_l1.")
@click.option("--format", "fmt", type=click.Choice(["yaml", "ini"]), default="yaml", show_default=True,
              help="YAML (the inventory plugin 'yaml') or INI.")
@click.option("--slurm-backend", type=click.Choice(["auto", "cli", "pyslurm"]), default="auto",
              show_default=True, help="With --partition: how to ask Slurm.")
@click.option("-o", "--output", "output", metavar="FILE",
              help="Write the inventory to FILE (atomically) instead of stdout.")
def export_cmd(ansible: bool, inventory_file: Optional[str], partition: Optional[str],
               nodes_expr: tuple[str, ...], exclude_expr: tuple[str, ...], group: str,
               group_by: tuple[str, ...], fmt: str, slurm_backend: str, output: Optional[str]) -> int:
    """Print an inventory for another tool from clusterkit's nodes.

    The nodes come from --inventory (with each node's host, port, user, profile and labels),
    --partition (Slurm) or --nodes; with --inventory and --partition/--nodes, the inventory's
    nodes among those. Host variables: ansible_host, ansible_port, ansible_user (where the
    inventory gives them), clusterkit_profile, each label whose name can be a variable, and
    clusterkit_labels (all of them). Hosts are in natural order (gpu-2 before gpu-10).
    """
    from clusterkit import inventory as inv
    from clusterkit.errors import UsageError
    from clusterkit.fsutil import emit_text

    if not ansible:
        raise UsageError("say which inventory to print: --ansible (the only export format)")
    if not (inventory_file or partition or nodes_expr):
        raise UsageError("no nodes: give --inventory FILE, --partition NAME or --nodes HOSTLIST")
    from clusterkit.selection import union

    nodes = select_nodes(inventory_file, partition, union(nodes_expr), union(exclude_expr), slurm_backend)
    if not nodes:
        raise UsageError("no nodes left to export")
    doc = inv.ansible_inventory(nodes, group=group, group_by=group_by)
    text = inv.render_ansible_yaml(doc) if fmt == "yaml" else inv.render_ansible_ini(doc)
    emit_text(text, output, "--output")
    return EXIT_OK


def select_nodes(inventory_file: Optional[str], partition: Optional[str], nodes_expr: Optional[str],
                 exclude_expr: Optional[str], slurm_backend: str = "auto") -> list:
    """The nodes to export: an inventory's, a partition's, a hostlist's, or the inventory's
    details for the names the partition / hostlist select."""
    from clusterkit import inventory as inv

    details: dict = {}
    if inventory_file:
        details = {n.name: n for n in inv.load_inventory(inventory_file)}
    names: Optional[list[str]] = None
    if partition:
        from clusterkit.slurm.backend import make_backend

        names = [n.name for n in make_backend(prefer=slurm_backend).nodes(partition=partition)]
    if nodes_expr:
        wanted = [n.name for n in inv.nodes_from_hostlist(nodes_expr)]
        if names is None:
            names = wanted
        else:
            chosen = set(wanted)
            names = [n for n in names if n in chosen]
    if names is None:
        nodes = list(details.values())
    elif inventory_file:
        nodes = [details[n] for n in names if n in details]
    else:
        nodes = [inv.Node(name=n) for n in names]
    return inv.exclude(nodes, exclude_expr)
