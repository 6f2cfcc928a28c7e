"""Parser for ``nvidia-smi nvlink -s`` / ``--status`` and ``nvidia-smi nvlink -e`` (errors).

Both print one header per GPU, ``GPU 0: NVIDIA H100 80GB HBM3 (UUID: GPU-...)``, followed by
indented ``Link N: ...`` lines (tab or spaces):

- status:       ``Link 0: 26.562 GB/s`` (active, speed in GB/s per link as printed) or
                ``Link 0: <inactive>``
- error counts: ``Link 0: Replay Errors: 0`` (one line per counter; every counter is kept,
                snake-cased: ``replay_errors``, ``recovery_errors``, ``crc_errors``, ...)
- capabilities: ``Link 0, P2P is supported: true`` (``nvlink -c``, kept as booleans)

A file holding several of these outputs for the same GPUs is merged per GPU and link.
"""

from __future__ import annotations

import re

from clusterkit.record import ConfigDict, Field, Record

from clusterkit.parsers.base import ParsedOutput, fail, split_lines, not_recognised
from clusterkit.parsers.nvidia_smi import ELISIONS, detect_failure, is_na

TOOL = "nvidia-smi-nvlink"

_SPEED_RE = re.compile(r"(\d+(?:\.\d+)?)\s*GB/s", re.IGNORECASE)
_INT_RE = re.compile(r"[+-]?\d+")
_NORM_RE = re.compile(r"[^a-z0-9]+")


def _norm(key: str) -> str:
    return _NORM_RE.sub("_", key.lower()).strip("_")


class _Model(Record):
    model_config = ConfigDict(extra="forbid")


class NvLink(_Model):
    link: int
    speed_gb_per_s: float | None = Field(
        default=None, description="Per-link speed as printed (GB/s)."
    )
    state: str | None = Field(
        default=None, description="'active' or 'inactive'; null if not printed."
    )
    errors: dict[str, int | str | None] = Field(
        default_factory=dict, description="nvlink -e counters, e.g. replay_errors, crc_errors."
    )
    capabilities: dict[str, bool | str] = Field(default_factory=dict)


class NvLinkGpu(_Model):
    index: int
    name: str | None = None
    uuid: str | None = None
    links: list[NvLink] = Field(default_factory=list)
    notes: list[str] = Field(
        default_factory=list, description="Other lines under this GPU (e.g. NVML messages)."
    )

    @property
    def active_links(self) -> int:
        return sum(1 for lk in self.links if lk.state == "active")


class NvidiaSmiNvlink(ParsedOutput):
    """``nvidia-smi nvlink -s`` and/or ``-e`` output."""

    gpus: list[NvLinkGpu] = Field(default_factory=list)
    error: str | None = Field(default=None, description="nvidia-smi's own failure message, if any.")

    def summary(self) -> str:
        out = [f"nvidia-smi nvlink: {len(self.gpus)} GPU(s)"]
        if self.error:
            out.append(f"  ERROR: {self.error}")
        for g in self.gpus:
            speeds = [lk.speed_gb_per_s for lk in g.links if lk.speed_gb_per_s is not None]
            line = f"  GPU{g.index} {g.name or '?'}: {g.active_links}/{len(g.links)} links active"
            if speeds:
                line += f", {sum(speeds):.3f} GB/s total"
            errs = sum(
                v for lk in g.links for v in lk.errors.values() if isinstance(v, int)
            )
            if any(lk.errors for lk in g.links):
                line += f", {errs} link errors"
            out.append(line)
        return "\n".join(out)


def _gpu_header(stripped: str) -> tuple[int, str | None, str | None] | None:
    """``GPU 0: NAME (UUID: GPU-...)`` -> (index, name, uuid)."""
    if not stripped.startswith("GPU "):
        return None
    colon = stripped.find(": ", 4)
    if colon == -1:
        return None
    idx = stripped[4:colon].strip()
    if not idx.isdigit():
        return None
    rest = stripped[colon + 2:].strip()
    uuid = None
    u = rest.rfind("(UUID:")
    if u != -1 and rest.endswith(")"):
        uuid = rest[u + 6:-1].strip() or None
        rest = rest[:u].strip()
    return int(idx), rest or None, uuid


def _value(text: str) -> int | str | None:
    text = text.strip()
    if is_na(text):
        return None
    if _INT_RE.fullmatch(text):
        return int(text)
    return text


def parse_nvlink(text: str) -> NvidiaSmiNvlink:
    """Parse ``nvidia-smi nvlink -s`` / ``--status`` / ``-e`` (and ``-c``) output."""
    lines = split_lines(text)
    failure = detect_failure(lines)
    model = NvidiaSmiNvlink(error=failure[1] if failure else None)
    by_index: dict[int, NvLinkGpu] = {}
    links: dict[tuple[int, int], NvLink] = {}
    gpu: NvLinkGpu | None = None
    for no, line in enumerate(lines, 1):
        stripped = line.strip()
        if not stripped or stripped in ELISIONS or (failure and no == failure[0]):
            continue
        head = _gpu_header(stripped)
        if head is not None and line[:1] not in (" ", "\t"):
            index, name, uuid = head
            gpu = by_index.get(index)
            if gpu is None:
                gpu = NvLinkGpu(index=index, name=name, uuid=uuid)
                by_index[index] = gpu
                model.gpus.append(gpu)
            elif (uuid and gpu.uuid and uuid != gpu.uuid) or (name and gpu.name and name != gpu.name):
                raise fail(TOOL, f"GPU {index} appears twice with different identities", no, line)
            continue
        if gpu is None:
            if failure:
                continue
            raise fail(TOOL, "not nvidia-smi nvlink output (expected 'GPU N: NAME (UUID: ...)')",
                       no, line)
        if not stripped.startswith("Link "):
            if line[:1] in (" ", "\t"):
                gpu.notes.append(stripped)
                continue
            raise fail(TOOL, "unexpected line (neither a GPU header nor an indented Link line)",
                       no, line)
        rest = stripped[5:]
        colon, comma = rest.find(":"), rest.find(",")
        sep = colon if comma == -1 or (colon != -1 and colon < comma) else comma
        number = rest[:sep].strip() if sep != -1 else ""
        if not number.isdigit():
            raise fail(TOOL, "link line without a link number", no, line)
        body = rest[sep + 1:].strip()
        key = (gpu.index, int(number))
        link = links.get(key)
        if link is None:
            link = NvLink(link=int(number))
            links[key] = link
            gpu.links.append(link)
        if sep == comma:  # capabilities: "Link 0, P2P is supported: true"
            cap, _, val = body.rpartition(":")
            if not cap:
                raise fail(TOOL, "capability line without 'name: value'", no, line)
            low = val.strip().lower()
            link.capabilities[_norm(cap)] = (
                True if low == "true" else False if low == "false" else val.strip()
            )
            continue
        speed = _SPEED_RE.fullmatch(body)
        if speed is not None:
            link.speed_gb_per_s = float(speed.group(1))
            link.state = "active"
        elif body.strip("<>").strip().lower() in ("inactive", "disabled", "down"):
            link.state = "inactive"
        elif ":" in body:  # error counter: "Replay Errors: 0"
            name, _, val = body.rpartition(":")
            if not _norm(name):
                raise fail(TOOL, "error counter without a name", no, line)
            link.errors[_norm(name)] = _value(val)
        else:
            raise fail(TOOL, f"unexpected link status {body!r}", no, line)
    if not model.gpus and failure is None:
        raise not_recognised(TOOL, lines, "no 'GPU N: NAME (UUID: ...)' header")
    for g in model.gpus:
        g.links.sort(key=lambda lk: lk.link)
    return model
