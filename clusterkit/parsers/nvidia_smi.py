"""Parser for ``nvidia-smi -q`` / ``nvidia-smi -a`` (text) and ``nvidia-smi -q -x`` (XML).

Both forms are first read into one generic tree of ``key: value`` nodes (text: nesting by
indentation, tabs or spaces; XML: nesting by element), with keys normalised to snake case
(``GPU Current Temp`` -> ``gpu_current_temp``). One mapper then reads the model from that tree,
trying the text key and the XML tag of every field, so both forms and all driver versions seen
so far (R375 ... R565) land in the same model. "N/A", "Not Supported" and "[N/A]" become null.

Also home of :func:`detect_failure`, shared by the other nvidia-smi parsers: the messages
nvidia-smi prints instead of its report when the driver or a GPU is gone.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from typing import Iterable, Iterator

from clusterkit.record import ConfigDict, Field, Record

from clusterkit.errors import ParseError
from clusterkit.parsers.base import ParsedOutput, fail, split_lines

TOOL = "nvidia-smi-q"

#: Values nvidia-smi prints for "no such value here"; they become null.
NA_VALUES = frozenset(
    {"n/a", "[n/a]", "not supported", "[not supported]", "not available", "[not available]"}
)

#: Lines an author put where they cut a sample short.
ELISIONS = frozenset({"...", "[...]", "…", "[…]", "<...>", "(...)"})

#: Messages nvidia-smi prints (instead of, or inside, its output) when it cannot do its job.
FAILURE_MARKERS = (
    "nvidia-smi has failed",
    "no devices were found",
    "unable to determine the device handle",
    "couldn't communicate with the nvidia driver",
    "failed to initialize nvml",
    "gpu is lost",
    "driver/library version mismatch",
)


def detect_failure(lines: Iterable[str]) -> tuple[int, str] | None:
    """First ``(line_no, line)`` (1-based) that carries an nvidia-smi failure message, if any."""
    lines = list(lines)
    whole = "\n".join(lines).lower()
    if not any(marker in whole for marker in FAILURE_MARKERS):
        return None
    for no, line in enumerate(lines, 1):
        low = line.lower()
        if any(marker in low for marker in FAILURE_MARKERS):
            return no, line.strip()
    return None


def is_na(value: str | None) -> bool:
    """True for a missing value or one of nvidia-smi's "no value" spellings."""
    return value is None or value.strip().lower() in NA_VALUES or not value.strip()


# --------------------------------------------------------------------------- model
class _Model(Record):
    model_config = ConfigDict(extra="forbid")


class EccCounts(_Model):
    """ECC error counts of one scope (volatile: since the driver loaded; aggregate: lifetime)."""

    correctable: int | None = Field(
        default=None,
        description="Total correctable errors (SRAM+DRAM, or single-bit total on old GPUs).",
    )
    uncorrectable: int | None = Field(
        default=None,
        description="Total uncorrectable errors (SRAM parity+SEC-DED+DRAM, or double-bit total).",
    )
    counters: dict[str, int | None] = Field(
        default_factory=dict, description="Every counter as printed, snake-cased."
    )


class RemappedRows(_Model):
    """Row remapping state (Ampere and later)."""

    correctable: int | None = None
    uncorrectable: int | None = None
    pending: bool | None = None
    failure: bool | None = None
    histogram_banks: dict[str, int | None] = Field(
        default_factory=dict, description="Bank remap availability: max/high/partial/low/none."
    )


class MigDevice(_Model):
    index: int | None = None
    gpu_instance_id: int | None = None
    compute_instance_id: int | None = None
    fb_memory_total_mib: int | None = None
    fb_memory_used_mib: int | None = None


class GpuProcess(_Model):
    pid: int | None = None
    type: str | None = None
    name: str | None = None
    used_memory_mib: int | None = None
    gpu_instance_id: int | None = None
    compute_instance_id: int | None = None


class GpuInfo(_Model):
    """One GPU of the report. ``index`` is its position in the report (nvidia-smi order)."""

    index: int
    pci_bus_id: str | None = None
    product_name: str | None = None
    product_architecture: str | None = None
    uuid: str | None = None
    serial: str | None = None
    vbios_version: str | None = None
    minor_number: int | None = None
    module_id: int | None = None
    persistence_mode: str | None = None
    performance_state: str | None = None
    gpu_recovery_action: str | None = None
    reset_required: bool | None = None
    drain_and_reset_recommended: bool | None = None

    mig_mode_current: str | None = None
    mig_mode_pending: str | None = None
    mig_devices: list[MigDevice] = Field(default_factory=list)

    fb_memory_total_mib: int | None = None
    fb_memory_reserved_mib: int | None = None
    fb_memory_used_mib: int | None = None
    fb_memory_free_mib: int | None = None

    ecc_mode_current: str | None = None
    ecc_mode_pending: str | None = None
    ecc_volatile: EccCounts = Field(default_factory=lambda: EccCounts())
    ecc_aggregate: EccCounts = Field(default_factory=lambda: EccCounts())
    ecc_sram_threshold_exceeded: bool | None = None
    ecc_aggregate_uncorrectable_sram_sources: dict[str, int | None] = Field(default_factory=dict)

    retired_pages_single_bit: int | None = None
    retired_pages_double_bit: int | None = None
    retired_pages_pending: bool | None = None
    remapped_rows: RemappedRows | None = None

    clocks_event_reasons: dict[str, bool | None] = Field(
        default_factory=dict,
        description="Reason -> active (older drivers: 'Clocks Throttle Reasons').",
    )

    temperature_c: int | None = None
    temp_shutdown_c: int | None = None
    temp_slowdown_c: int | None = None
    temp_max_operating_c: int | None = None
    temp_tlimit_c: int | None = Field(
        default=None,
        description="Margin to the slowdown limit ('GPU T.Limit Temp'), newer drivers.",
    )
    temp_shutdown_tlimit_c: int | None = None
    temp_slowdown_tlimit_c: int | None = None
    temp_max_operating_tlimit_c: int | None = None
    memory_temperature_c: int | None = None
    memory_temp_max_operating_c: int | None = None
    memory_temp_max_operating_tlimit_c: int | None = None

    power_draw_w: float | None = None
    power_draw_instant_w: float | None = None
    power_limit_w: float | None = Field(
        default=None,
        description="Current (enforced) power limit: 'Current Power Limit' or 'Enforced'.",
    )
    power_limit_enforced_w: float | None = None
    power_limit_requested_w: float | None = None
    power_limit_default_w: float | None = None
    power_limit_min_w: float | None = None
    power_limit_max_w: float | None = None

    pcie_gen_current: int | None = None
    pcie_gen_max: int | None = None
    pcie_gen_host_max: int | None = None
    pcie_width_current: int | None = None
    pcie_width_max: int | None = None
    pcie_replay_count: int | None = None

    utilization_gpu_pct: int | None = None
    utilization_memory_pct: int | None = None
    clocks_sm_mhz: int | None = None
    clocks_memory_mhz: int | None = None
    clocks_max_sm_mhz: int | None = None
    clocks_max_memory_mhz: int | None = None

    fabric_state: str | None = None
    fabric_status: str | None = None

    processes: list[GpuProcess] = Field(default_factory=list)


class NvidiaSmiQuery(ParsedOutput):
    """``nvidia-smi -q`` (text) or ``nvidia-smi -q -x`` (XML)."""

    format: str = Field(description="'text' or 'xml'")
    timestamp: str | None = None
    driver_version: str | None = None
    cuda_version: str | None = None
    attached_gpus: int | None = None
    gpus: list[GpuInfo] = Field(default_factory=list)
    error: str | None = Field(
        default=None,
        description="nvidia-smi's own failure message (driver gone, GPU lost), if any.",
    )

    def summary(self) -> str:
        head = (
            f"nvidia-smi -q ({self.format}): driver {self.driver_version or '?'}, "
            f"CUDA {self.cuda_version or '?'}, {len(self.gpus)} GPU(s)"
        )
        if self.attached_gpus is not None and self.attached_gpus != len(self.gpus):
            head += f" of {self.attached_gpus} attached"
        out = [head]
        if self.error:
            out.append(f"  ERROR: {self.error}")
        for g in self.gpus:
            def show(v: object, unit: str = "") -> str:
                return "?" if v is None else f"{v}{unit}"

            remap = g.remapped_rows
            active = [k for k, v in g.clocks_event_reasons.items() if v and k != "idle"]
            out.append(
                f"  GPU{g.index} {g.pci_bus_id or '?'} {g.product_name or '?'}: "
                f"{show(g.temperature_c, ' C')}, {show(g.power_draw_w)}/{show(g.power_limit_w)} W, "
                f"ECC unc vol/agg {show(g.ecc_volatile.uncorrectable)}/"
                f"{show(g.ecc_aggregate.uncorrectable)}, "
                f"remap pending {show(remap.pending if remap else None)}"
                + (f", clock events: {', '.join(active)}" if active else "")
            )
        return "\n".join(out)


# --------------------------------------------------------------------------- generic tree
_NORM_RE = re.compile(r"[^a-z0-9]+")


def _norm(key: str) -> str:
    return _NORM_RE.sub("_", key.lower()).strip("_")


class _Node:
    __slots__ = ("key", "norm", "value", "children", "line_no", "line")

    def __init__(self, key: str, value: str | None, line_no: int | None, line: str | None):
        self.key = key
        self.norm = _norm(key)
        self.value = value
        self.children: list[_Node] = []
        self.line_no = line_no
        self.line = line

    def child(self, norm: str) -> _Node | None:
        for c in self.children:
            if c.norm == norm:
                return c
        return None

    def find(self, path: str) -> _Node | None:
        cur: _Node | None = self
        for part in path.split("/"):
            if cur is None:
                return None
            cur = cur.child(part)
        return cur

    def where(self) -> tuple[int | None, str]:
        """Line number and the line to quote in an error."""
        if self.line is not None:
            return self.line_no, self.line
        return None, f"<{self.key}>{self.value or ''}</{self.key}>"


def _split_kv(content: str) -> tuple[str, str | None]:
    """``Key   : value`` -> (key, value); the separator is a colon after white space."""
    if content.startswith(":"):
        return "", content[1:].strip() or None
    i = content.find(" :")
    while i != -1:
        j = i + 2
        if j == len(content) or content[j] in " \t":
            return content[:i].strip(), content[j:].strip() or None
        i = content.find(" :", i + 1)
    return content.strip(), None


def _text_tree(lines: list[str], skip: set[int]) -> _Node:
    root = _Node("", None, None, None)
    stack: list[tuple[int, _Node]] = [(-1, root)]
    for no, raw in enumerate(lines, 1):
        stripped = raw.strip()
        if not stripped or no in skip or stripped in ELISIONS:
            continue
        if stripped.startswith("=") and "NVSMI LOG" in stripped.upper():
            continue
        lead = len(raw) - len(raw.lstrip(" \t"))
        indent = len(raw[:lead].expandtabs(4))
        key, value = _split_kv(raw[lead:].replace("\t", " "))
        if not key:
            # a value printed on its own line under its key ("Fan Speed" / ": N/A")
            owner = stack[-1][1]
            if owner is not root and owner.value is None:
                owner.value = value
            continue
        while stack[-1][0] >= indent:
            stack.pop()
        node = _Node(key, value, no, raw)
        stack[-1][1].children.append(node)
        stack.append((indent, node))
    return root


def _xml_tree(elem: ET.Element) -> _Node:
    """Element tree -> generic tree (iterative: no recursion limit on hostile nesting)."""

    def make(e: ET.Element) -> _Node:
        text = (e.text or "").strip() or None
        if e.tag == "gpu" and e.get("id"):
            text = e.get("id")
        return _Node(str(e.tag), text, None, None)

    root = make(elem)
    todo: list[tuple[ET.Element, _Node]] = [(elem, root)]
    while todo:
        e, n = todo.pop()
        for sub in e:
            if not isinstance(sub.tag, str):  # comments, processing instructions
                continue
            child = make(sub)
            n.children.append(child)
            todo.append((sub, child))
    return root


# --------------------------------------------------------------------------- value readers
_NUM_RE = re.compile(r"([+-]?\d+(?:\.\d+)?)\s*(.*)")
_BUS_ID_RE = re.compile(r"GPU\s+([0-9A-Fa-f]{4,8}:[0-9A-Fa-f]{2}:[0-9A-Fa-f]{2}\.[0-9A-Fa-f])")

_TRUE = frozenset({"yes", "active", "enabled", "true", "on"})
_FALSE = frozenset({"no", "not active", "disabled", "false", "off", "none"})


def _pick(node: _Node | None, *paths: str) -> _Node | None:
    """The first of ``paths`` under ``node`` that has a real value (not N/A)."""
    if node is None:
        return None
    for path in paths:
        found = node.find(path)
        if found is not None and not is_na(found.value):
            return found
    return None


def _str(node: _Node | None, *paths: str) -> str | None:
    found = _pick(node, *paths)
    return found.value if found is not None else None


def _number(found: _Node, units: tuple[str, ...]) -> float | int:
    value = found.value or ""
    m = _NUM_RE.fullmatch(value.strip())
    if m is None or (m.group(2) and m.group(2).lower() not in units):
        line_no, line = found.where()
        want = f" (unit {'/'.join(u for u in units if u) or 'none'})" if units else ""
        raise fail(TOOL, f"expected a number{want} for {found.key!r}", line_no, line)
    text = m.group(1)
    return float(text) if "." in text else int(text)


def _int(node: _Node | None, *paths: str, units: tuple[str, ...] = ("",)) -> int | None:
    found = _pick(node, *paths)
    if found is None:
        return None
    num = _number(found, units)
    if isinstance(num, float):
        if not num.is_integer():
            line_no, line = found.where()
            raise fail(TOOL, f"expected a whole number for {found.key!r}", line_no, line)
        num = int(num)
    return num


def _float(node: _Node | None, *paths: str, units: tuple[str, ...] = ("",)) -> float | None:
    found = _pick(node, *paths)
    return None if found is None else float(_number(found, units))


def _bool(node: _Node | None, *paths: str) -> bool | None:
    found = _pick(node, *paths)
    if found is None:
        return None
    low = (found.value or "").strip().lower()
    if low in _TRUE:
        return True
    if low in _FALSE:
        return False
    line_no, line = found.where()
    raise fail(TOOL, f"expected Yes/No or Active/Not Active for {found.key!r}", line_no, line)


def _soft_int(value: str | None) -> int | None:
    """Counter value -> int; None for N/A and for anything that is not a whole number."""
    if is_na(value):
        return None
    m = _NUM_RE.fullmatch((value or "").strip())
    if m is None or "." in m.group(1):
        return None
    return int(m.group(1))


_MIB = ("mib",)
_C = ("c",)
_W = ("w",)
_MHZ = ("mhz",)
_PCT = ("%",)


# --------------------------------------------------------------------------- mapping
def _flatten(node: _Node, prefix: str = "") -> Iterator[tuple[str, _Node]]:
    """(joined_key, leaf) for every node with a value below ``node``."""
    todo = [(prefix, c) for c in reversed(node.children)]
    while todo:
        pre, n = todo.pop()
        name = f"{pre}_{n.norm}" if pre else n.norm
        name = name.replace("sec_ded", "secded")  # text 'SEC-DED' == XML 'secded'
        if n.children:
            todo.extend((name, c) for c in reversed(n.children))
            if n.value is not None:
                yield name, n
        else:
            yield name, n


def _ecc_counts(scope: _Node | None) -> tuple[EccCounts, bool | None]:
    if scope is None:
        return EccCounts(), None
    counters: dict[str, int | None] = {}
    threshold: bool | None = None
    for name, leaf in _flatten(scope):
        if "threshold" in name:
            low = (leaf.value or "").strip().lower()
            threshold = True if low in _TRUE else False if low in _FALSE else threshold
            continue
        if is_na(leaf.value):
            counters[name] = None
            continue
        num = _soft_int(leaf.value)
        if num is not None:
            counters[name] = num
    old_style = any(k.startswith(("single_bit", "double_bit")) for k in counters)

    def total(keys: list[str]) -> int | None:
        vals = [counters[k] for k in keys if counters.get(k) is not None]
        return sum(v for v in vals if v is not None) if vals else None

    if old_style:
        corr = counters.get("single_bit_total")
        unc = counters.get("double_bit_total")
        if corr is None:
            corr = total([k for k in counters if k.startswith("single_bit")])
        if unc is None:
            unc = total([k for k in counters if k.startswith("double_bit")])
    else:
        unc_keys = [k for k in counters if "uncorrectable" in k]
        split = [k for k in unc_keys if k.startswith("sram_uncorrectable_")]
        if split:  # Hopper: parity + SEC-DED; never count a combined figure twice
            unc_keys = [k for k in unc_keys if k != "sram_uncorrectable"]
        corr_keys = [k for k in counters if "correctable" in k and "uncorrectable" not in k]
        corr, unc = total(corr_keys), total(unc_keys)
    return EccCounts(correctable=corr, uncorrectable=unc, counters=counters), threshold


_REASON_RENAMES = {"gpu_idle": "idle", "display_clocks_setting": "display_clock_setting"}


def _clock_reasons(section: _Node | None) -> dict[str, bool | None]:
    reasons: dict[str, bool | None] = {}
    if section is None:
        return reasons
    todo = list(reversed(section.children))
    while todo:
        n = todo.pop()
        todo.extend(reversed(n.children))
        name = n.norm
        for prefix in ("clocks_throttle_reason_", "clocks_event_reason_"):
            if name.startswith(prefix):
                name = name[len(prefix):]
        name = _REASON_RENAMES.get(name, name)
        if n.value is None and n.children:
            continue
        reasons[name] = _reason_state(n)
    return reasons


def _reason_state(n: _Node) -> bool | None:
    if is_na(n.value):
        return None
    low = (n.value or "").strip().lower()
    if low in _TRUE:
        return True
    if low in _FALSE:
        return False
    line_no, line = n.where()
    raise fail(TOOL, f"expected Active/Not Active for {n.key!r}", line_no, line)


def _remapped_rows(section: _Node | None) -> RemappedRows | None:
    if section is None or not section.children:
        return None
    hist_node = section.find("bank_remap_availability_histogram") or section.find(
        "row_remapper_histogram"
    )
    hist: dict[str, int | None] = {}
    if hist_node is not None:
        for c in hist_node.children:
            name = c.norm.replace("row_remapper_histogram_", "")
            hist[name] = _int(hist_node, c.norm, units=("bank(s)", "banks", "bank", ""))
    return RemappedRows(
        correctable=_int(section, "correctable_error", "remapped_row_corr"),
        uncorrectable=_int(section, "uncorrectable_error", "remapped_row_unc"),
        pending=_bool(section, "pending", "remapped_row_pending"),
        failure=_bool(section, "remapping_failure_occurred", "remapped_row_failure"),
        histogram_banks=hist,
    )


def _mig_devices(section: _Node | None) -> list[MigDevice]:
    if section is None:
        return []
    out = []
    for dev in section.children:
        if dev.norm != "mig_device":
            continue
        out.append(
            MigDevice(
                index=_int(dev, "index"),
                gpu_instance_id=_int(dev, "gpu_instance_id"),
                compute_instance_id=_int(dev, "compute_instance_id"),
                fb_memory_total_mib=_int(dev, "fb_memory_usage/total", units=_MIB),
                fb_memory_used_mib=_int(dev, "fb_memory_usage/used", units=_MIB),
            )
        )
    return out


def _processes(section: _Node | None) -> list[GpuProcess]:
    if section is None:
        return []
    out: list[GpuProcess] = []
    # XML: <process_info> per process
    for info in section.children:
        if info.norm == "process_info":
            out.append(
                GpuProcess(
                    pid=_int(info, "pid"),
                    type=_str(info, "type"),
                    name=_str(info, "process_name"),
                    used_memory_mib=_int(info, "used_memory", units=_MIB),
                    gpu_instance_id=_int(info, "gpu_instance_id"),
                    compute_instance_id=_int(info, "compute_instance_id"),
                )
            )
    # text: "GPU instance ID", "Compute instance ID", then "Process ID" with details below it
    gi = ci = None
    for c in section.children:
        if c.norm == "gpu_instance_id":
            gi = _soft_int(c.value)
        elif c.norm == "compute_instance_id":
            ci = _soft_int(c.value)
        elif c.norm == "process_id":
            out.append(
                GpuProcess(
                    pid=_soft_int(c.value),
                    type=_str(c, "type"),
                    name=_str(c, "name", "process_name"),
                    used_memory_mib=_int(c, "used_gpu_memory", "used_memory", units=_MIB),
                    gpu_instance_id=gi,
                    compute_instance_id=ci,
                )
            )
            gi = ci = None
    return out


def _gpu(node: _Node, index: int, bus_id: str | None) -> GpuInfo:
    pci = node.child("pci")
    link = None
    if pci is not None:
        link = pci.child("gpu_link_info") or pci.child("pci_gpu_link_info")
    power = node.child("gpu_power_readings") or node.child("power_readings")
    temp = node.child("temperature")
    ecc = node.child("ecc_errors")
    retired = node.child("retired_pages")
    volatile, thr_v = _ecc_counts(ecc.child("volatile") if ecc else None)
    aggregate, thr_a = _ecc_counts(ecc.child("aggregate") if ecc else None)
    sources_node = ecc.child("aggregate_uncorrectable_sram_sources") if ecc else None
    sources = (
        {c.norm: _soft_int(c.value) for c in sources_node.children} if sources_node else {}
    )
    reasons = node.child("clocks_event_reasons") or node.child("clocks_throttle_reasons")

    pending_retire = [
        _bool(retired, p)
        for p in ("pending_page_blacklist", "pending_blacklist", "pending",
                  "pending_retirement", "pending_page_retirement")
    ]
    known = [p for p in pending_retire if p is not None]

    enforced = _float(power, "enforced_power_limit", units=_W)
    current = _float(power, "current_power_limit", units=_W)
    return GpuInfo(
        index=index,
        pci_bus_id=_str(node, "pci/bus_id", "pci/pci_bus_id") or bus_id,
        product_name=_str(node, "product_name"),
        product_architecture=_str(node, "product_architecture"),
        uuid=_str(node, "gpu_uuid", "uuid"),
        serial=_str(node, "serial_number", "serial"),
        vbios_version=_str(node, "vbios_version"),
        minor_number=_int(node, "minor_number"),
        module_id=_int(node, "module_id", "platform_info/module_id", "gpu_module_id"),
        persistence_mode=_str(node, "persistence_mode"),
        performance_state=_str(node, "performance_state"),
        gpu_recovery_action=_str(node, "gpu_recovery_action"),
        reset_required=_bool(node, "gpu_reset_status/reset_required"),
        drain_and_reset_recommended=_bool(node, "gpu_reset_status/drain_and_reset_recommended"),
        mig_mode_current=_str(node, "mig_mode/current", "mig_mode/current_mig"),
        mig_mode_pending=_str(node, "mig_mode/pending", "mig_mode/pending_mig"),
        mig_devices=_mig_devices(node.child("mig_devices")),
        fb_memory_total_mib=_int(node, "fb_memory_usage/total", units=_MIB),
        fb_memory_reserved_mib=_int(node, "fb_memory_usage/reserved", units=_MIB),
        fb_memory_used_mib=_int(node, "fb_memory_usage/used", units=_MIB),
        fb_memory_free_mib=_int(node, "fb_memory_usage/free", units=_MIB),
        ecc_mode_current=_str(node, "ecc_mode/current", "ecc_mode/current_ecc"),
        ecc_mode_pending=_str(node, "ecc_mode/pending", "ecc_mode/pending_ecc"),
        ecc_volatile=volatile,
        ecc_aggregate=aggregate,
        ecc_sram_threshold_exceeded=thr_a if thr_a is not None else thr_v,
        ecc_aggregate_uncorrectable_sram_sources=sources,
        retired_pages_single_bit=_int(
            retired, "single_bit_ecc", "multiple_single_bit_retirement/retired_count"
        ),
        retired_pages_double_bit=_int(
            retired, "double_bit_ecc", "double_bit_retirement/retired_count"
        ),
        retired_pages_pending=any(known) if known else None,
        remapped_rows=_remapped_rows(node.child("remapped_rows")),
        clocks_event_reasons=_clock_reasons(reasons),
        temperature_c=_int(temp, "gpu_current_temp", "gpu_temp", units=_C),
        temp_shutdown_c=_int(temp, "gpu_shutdown_temp", "gpu_temp_max_threshold", units=_C),
        temp_slowdown_c=_int(temp, "gpu_slowdown_temp", "gpu_temp_slow_threshold", units=_C),
        temp_max_operating_c=_int(
            temp, "gpu_max_operating_temp", "gpu_temp_max_gpu_threshold", units=_C
        ),
        temp_tlimit_c=_int(temp, "gpu_t_limit_temp", "gpu_temp_tlimit", units=_C),
        temp_shutdown_tlimit_c=_int(
            temp, "gpu_shutdown_t_limit_temp", "gpu_temp_max_tlimit_threshold", units=_C
        ),
        temp_slowdown_tlimit_c=_int(
            temp, "gpu_slowdown_t_limit_temp", "gpu_temp_slow_tlimit_threshold", units=_C
        ),
        temp_max_operating_tlimit_c=_int(
            temp, "gpu_max_operating_t_limit_temp", "gpu_temp_max_gpu_tlimit_threshold", units=_C
        ),
        memory_temperature_c=_int(temp, "memory_current_temp", "memory_temp", units=_C),
        memory_temp_max_operating_c=_int(
            temp, "memory_max_operating_temp", "gpu_temp_max_mem_threshold", units=_C
        ),
        memory_temp_max_operating_tlimit_c=_int(
            temp, "memory_max_operating_t_limit_temp", "gpu_temp_max_mem_tlimit_threshold",
            units=_C,
        ),
        power_draw_w=_float(
            power, "power_draw", "average_power_draw", "instantaneous_power_draw",
            "instant_power_draw", units=_W,
        ),
        power_draw_instant_w=_float(
            power, "instantaneous_power_draw", "instant_power_draw", units=_W
        ),
        power_limit_w=current if current is not None else (
            enforced if enforced is not None else _float(power, "power_limit", units=_W)
        ),
        power_limit_enforced_w=enforced if enforced is not None else current,
        power_limit_requested_w=_float(
            power, "requested_power_limit", "power_limit", units=_W
        ),
        power_limit_default_w=_float(power, "default_power_limit", units=_W),
        power_limit_min_w=_float(power, "min_power_limit", units=_W),
        power_limit_max_w=_float(power, "max_power_limit", units=_W),
        pcie_gen_current=_int(link, "pcie_generation/current", "pcie_gen/current_link_gen"),
        pcie_gen_max=_int(link, "pcie_generation/max", "pcie_gen/max_link_gen"),
        pcie_gen_host_max=_int(link, "pcie_generation/host_max", "pcie_gen/max_host_link_gen"),
        pcie_width_current=_int(
            link, "link_width/current", "link_widths/current_link_width", units=("x", "")
        ),
        pcie_width_max=_int(
            link, "link_width/max", "link_widths/max_link_width", units=("x", "")
        ),
        pcie_replay_count=_int(pci, "replays_since_reset", "replay_counter"),
        utilization_gpu_pct=_int(node, "utilization/gpu", "utilization/gpu_util", units=_PCT),
        utilization_memory_pct=_int(
            node, "utilization/memory", "utilization/memory_util", units=_PCT
        ),
        clocks_sm_mhz=_int(node, "clocks/sm", "clocks/sm_clock", units=_MHZ),
        clocks_memory_mhz=_int(node, "clocks/memory", "clocks/mem_clock", units=_MHZ),
        clocks_max_sm_mhz=_int(node, "max_clocks/sm", "max_clocks/sm_clock", units=_MHZ),
        clocks_max_memory_mhz=_int(
            node, "max_clocks/memory", "max_clocks/mem_clock", units=_MHZ
        ),
        fabric_state=_str(node, "fabric/state"),
        fabric_status=_str(node, "fabric/status"),
        processes=_processes(node.child("processes")),
    )


# --------------------------------------------------------------------------- entry points
def _first_line(lines: list[str]) -> tuple[int | None, str | None]:
    for no, ln in enumerate(lines, 1):
        if ln.strip():
            return no, ln
    return None, None


def _parse_xml(text: str) -> NvidiaSmiQuery:
    lines = split_lines(text)
    low = text.lower()
    if "<!entity" in low:
        at = next((i for i, ln in enumerate(lines, 1) if "<!entity" in ln.lower()), None)
        raise fail(TOOL, "refusing XML with entity declarations", at,
                   lines[at - 1] if at else None)
    try:
        root = ET.fromstring(text)
    except ET.ParseError as e:
        line_no = e.position[0] if getattr(e, "position", None) else None
        line = lines[line_no - 1] if line_no and 0 < line_no <= len(lines) else None
        raise fail(TOOL, f"malformed XML ({e})", line_no, line) from None
    except Exception as e:  # noqa: BLE001 - expat can raise others on odd input; translate
        raise fail(TOOL, f"malformed XML ({type(e).__name__}: {e})") from None
    if root.tag != "nvidia_smi_log":
        no, ln = _first_line(lines)
        raise fail(TOOL, f"XML root is <{root.tag}>, not <nvidia_smi_log>", no, ln)
    tree = _xml_tree(root)
    gpus = [
        _gpu(n, i, n.value)
        for i, n in enumerate(c for c in tree.children if c.norm == "gpu")
    ]
    return NvidiaSmiQuery(
        format="xml",
        timestamp=_str(tree, "timestamp"),
        driver_version=_str(tree, "driver_version"),
        cuda_version=_str(tree, "cuda_version"),
        attached_gpus=_int(tree, "attached_gpus"),
        gpus=gpus,
    )


def _parse_text(text: str) -> NvidiaSmiQuery:
    lines = split_lines(text)
    failure = detect_failure(lines)
    skip = {failure[0]} if failure else set()
    tree = _text_tree(lines, skip)
    gpus: list[GpuInfo] = []
    for n in tree.children:
        m = _BUS_ID_RE.fullmatch(n.key)
        if m is not None:
            gpus.append(_gpu(n, len(gpus), m.group(1)))
    driver = _str(tree, "driver_version")
    if not gpus and driver is None and failure is None:
        no, ln = _first_line(lines)
        if no is None:
            raise fail(TOOL, "empty input")
        raise fail(
            TOOL, "not nvidia-smi -q output (no 'Driver Version' and no 'GPU <bus id>' section)",
            no, ln,
        )
    return NvidiaSmiQuery(
        format="text",
        timestamp=_str(tree, "timestamp"),
        driver_version=driver,
        cuda_version=_str(tree, "cuda_version"),
        attached_gpus=_int(tree, "attached_gpus"),
        gpus=gpus,
        error=failure[1] if failure else None,
    )


def parse_query(text: str) -> NvidiaSmiQuery:
    """Parse ``nvidia-smi -q`` / ``-a`` text or ``nvidia-smi -q -x`` XML."""
    if not isinstance(text, str):
        raise ParseError("input is not text", tool=TOOL)
    body = text.lstrip("\ufeff \t\r\n")
    if body.startswith("<?xml") or body.startswith("<!DOCTYPE") or body.startswith(
        "<nvidia_smi_log"
    ):
        return _parse_xml(body)
    return _parse_text(text)
