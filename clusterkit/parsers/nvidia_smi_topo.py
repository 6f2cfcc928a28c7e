"""Parser for ``nvidia-smi topo -m`` (the GPU/NIC connection matrix).

The matrix is tab separated as nvidia-smi prints it (header line starting with a tab); copies
with the leading tab lost, or with tabs turned into spaces, are read too. Columns after the
device columns ("CPU Affinity", "NUMA Affinity", "GPU NUMA ID") become per-device maps; the
"NIC Legend" maps NICn to the RDMA device name.
"""

from __future__ import annotations

import re

from clusterkit.record import Field

from clusterkit.parsers.base import ParsedOutput, fail, split_lines
from clusterkit.parsers.nvidia_smi import ELISIONS, detect_failure, is_na

TOOL = "nvidia-smi-topo"

#: A connection cell: X (self), SYS, NODE, PHB, PXB, PIX, NV18, SOC (old name of SYS), ...
_CELL_RE = re.compile(r"X|[A-Z][A-Z0-9]{1,7}")
_GPU_COL_RE = re.compile(r"GPU\d+")
_MULTIWORD = (("GPU", "NUMA", "ID"), ("CPU", "Affinity"), ("NUMA", "Affinity"))
_LEGEND_RE = re.compile(r"(NIC\d+)\s*:\s*(\S+)")


class NvidiaSmiTopo(ParsedOutput):
    """``nvidia-smi topo -m``."""

    devices: list[str] = Field(default_factory=list, description="Matrix columns, in order.")
    matrix: dict[str, dict[str, str]] = Field(
        default_factory=dict, description="row device -> column device -> connection ('X' = self)."
    )
    cpu_affinity: dict[str, str | None] = Field(default_factory=dict)
    numa_affinity: dict[str, str | None] = Field(default_factory=dict)
    gpu_numa_id: dict[str, str | None] = Field(default_factory=dict)
    nic_legend: dict[str, str] = Field(default_factory=dict, description="NIC0 -> mlx5_0")
    error: str | None = Field(default=None, description="nvidia-smi's own failure message, if any.")

    def summary(self) -> str:
        gpus = [d for d in self.devices if d.startswith("GPU")]
        nics = [d for d in self.devices if not d.startswith("GPU")]
        out = [f"nvidia-smi topo -m: {len(gpus)} GPU(s), {len(nics)} NIC(s)"]
        if self.error:
            out.append(f"  ERROR: {self.error}")
        kinds: dict[str, int] = {}
        for i, a in enumerate(gpus):
            for b in gpus[i + 1:]:
                kind = self.matrix.get(a, {}).get(b, "?")
                kinds[kind] = kinds.get(kind, 0) + 1
        if kinds:
            out.append(
                "  GPU pairs: " + ", ".join(f"{k} x{v}" for k, v in sorted(kinds.items()))
            )
        for g in gpus:
            row = self.matrix.get(g, {})
            near = [n for n in nics if row.get(n) == "PIX"]
            out.append(
                f"  {g}: CPUs {self.cpu_affinity.get(g) or '?'}, NUMA "
                f"{self.numa_affinity.get(g) or '?'}"
                + (f", PIX NICs: {', '.join(self.nic_legend.get(n, n) for n in near)}"
                   if near else "")
            )
        return "\n".join(out)


def _header_columns(line: str) -> list[str]:
    if "\t" in line:
        return [c.strip() for c in line.split("\t") if c.strip()]
    tokens = line.split()
    cols: list[str] = []
    i = 0
    while i < len(tokens):
        for words in _MULTIWORD:
            if tuple(tokens[i:i + len(words)]) == words:
                cols.append(" ".join(words))
                i += len(words)
                break
        else:
            cols.append(tokens[i])
            i += 1
    return cols


def _cells(line: str) -> list[str]:
    if "\t" in line:
        return [c.strip() for c in line.split("\t")]
    return line.split()


def parse_topo(text: str) -> NvidiaSmiTopo:
    """Parse ``nvidia-smi topo -m`` output."""
    lines = split_lines(text)
    failure = detect_failure(lines)
    if failure is not None:
        return NvidiaSmiTopo(error=failure[1])

    # header: the first non-blank line
    hdr_no = next((i for i, ln in enumerate(lines) if ln.strip()), None)
    if hdr_no is None:
        raise fail(TOOL, "empty input")
    header = lines[hdr_no]
    columns = _header_columns(header)
    if not any(_GPU_COL_RE.fullmatch(c) for c in columns):
        raise fail(TOOL, "not nvidia-smi topo -m output (no GPUn column in the header)",
                   hdr_no + 1, header)
    n_dev = next((i for i, c in enumerate(columns) if "Affinity" in c or "NUMA" in c),
                 len(columns))
    devices = columns[:n_dev]
    extra = columns[n_dev:]
    if len(set(devices)) != len(devices):
        raise fail(TOOL, "a device appears twice in the header", hdr_no + 1, header)

    model = NvidiaSmiTopo(devices=devices)
    i = hdr_no + 1
    while i < len(lines):
        line = lines[i]
        stripped = line.strip()
        if not stripped or stripped.lower().startswith("legend"):
            break
        i += 1
        if stripped in ELISIONS:
            continue
        cells = _cells(line)
        name = cells[0].strip() if cells else ""
        if not name or len(cells) < 1 + n_dev:
            raise fail(TOOL, f"matrix row has fewer than {n_dev} connection cells", i, line)
        row = cells[1:1 + n_dev]
        for cell in row:
            if not _CELL_RE.fullmatch(cell):
                raise fail(TOOL, f"unexpected connection cell {cell!r}", i, line)
        if name in model.matrix:
            raise fail(TOOL, f"device {name} has two matrix rows", i, line)
        model.matrix[name] = dict(zip(devices, row))
        rest = cells[1 + n_dev:]
        if len(rest) != len(extra):  # nvidia-smi prints an empty cell before 'GPU NUMA ID'
            rest = [c for c in rest if c]
        if len(rest) > len(extra):
            raise fail(TOOL, "matrix row has more cells than the header", i, line)
        for col, val in zip(extra, rest):
            if not val:
                continue
            value = None if is_na(val) else val
            if col == "CPU Affinity":
                model.cpu_affinity[name] = value
            elif col == "NUMA Affinity":
                model.numa_affinity[name] = value
            elif col == "GPU NUMA ID":
                model.gpu_numa_id[name] = value
    if not model.matrix:
        raise fail(TOOL, "no matrix rows under the header", hdr_no + 1, header)

    # legends
    in_nic_legend = False
    for line in lines[i:]:
        stripped = line.strip()
        if stripped.lower().startswith("nic legend"):
            in_nic_legend = True
            continue
        if in_nic_legend and stripped:
            m = _LEGEND_RE.fullmatch(stripped)
            if m is not None:
                model.nic_legend[m.group(1)] = m.group(2)
    return model
