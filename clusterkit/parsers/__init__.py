"""Pure text -> model parsers for every external tool's output.

Each parser is a function ``parse(text: str) -> <Record>`` (``clusterkit.record``); it does no I/O and raises
only :class:`clusterkit.errors.ParseError` (which quotes the offending line). Every result model
derives from :class:`ParsedOutput`, which adds a short human ``summary()``.

``TOOLS`` maps the names ``clusterkit parse TOOL`` accepts to ``"module:function"``; modules are
imported only when used, so ``node-check`` never pays for parsers it does not need.
"""

from __future__ import annotations

import importlib
from typing import Any, Callable

TOOLS: dict[str, str] = {
    "nvidia-smi-q": "clusterkit.parsers.nvidia_smi:parse_query",
    "nvidia-smi-topo": "clusterkit.parsers.nvidia_smi_topo:parse_topo",
    "nvidia-smi-nvlink": "clusterkit.parsers.nvidia_smi_nvlink:parse_nvlink",
    "nvidia-smi-csv": "clusterkit.parsers.nvidia_smi_csv:parse_csv",
    "nccl-tests": "clusterkit.parsers.nccl_tests:parse_nccl_tests",
    "ibstat": "clusterkit.parsers.infiniband:parse_ibstat",
    "ibstatus": "clusterkit.parsers.infiniband:parse_ibstatus",
    "ibv_devinfo": "clusterkit.parsers.infiniband:parse_ibv_devinfo",
    "perfquery": "clusterkit.parsers.perfquery:parse_perfquery",
    "ib_write_bw": "clusterkit.parsers.perftest:parse_ib_write_bw",
    "ib_write_lat": "clusterkit.parsers.perftest:parse_ib_write_lat",
    "fio": "clusterkit.parsers.fio:parse_fio",
    "dcgmi-diag": "clusterkit.parsers.dcgmi:parse_dcgmi_diag",
    "gpu-burn": "clusterkit.parsers.gpu_burn:parse_gpu_burn",
    "nvbandwidth": "clusterkit.parsers.nvbandwidth:parse_nvbandwidth",
    "dmesg-xid": "clusterkit.parsers.xid:parse_xid",
    "sinfo": "clusterkit.parsers.slurm:parse_sinfo",
    "scontrol-node": "clusterkit.parsers.slurm:parse_scontrol_node",
}


def get_parser(tool: str) -> Callable[[str], Any]:
    """The parse function for a tool name of ``TOOLS`` (KeyError if unknown)."""
    module_name, func_name = TOOLS[tool].split(":")
    module = importlib.import_module(module_name)
    return getattr(module, func_name)
