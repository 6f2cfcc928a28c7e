"""Parser for ``nvidia-smi --query-gpu=... --format=csv`` (also ``--query-compute-apps`` etc.).

The header line names the columns; a unit in brackets moves out of the name
(``memory.total [MiB]`` -> column ``memory.total``, unit ``MiB``) and is stripped from the
values (``81559 MiB`` -> ``81559``; with ``nounits`` there is nothing to strip). Numbers become
int/float, except in identity columns (names, UUIDs, serials, versions, PCI ids) which stay
text. ``[N/A]``, ``N/A`` and ``[Not Supported]`` become null; ``Active``/``Not Active`` and
bitmasks (``0x0000000000000004``) stay as printed.

Columns of the old name ``clocks_throttle_reasons.*`` are renamed ``clocks_event_reasons.*``
(drivers >= 535 print the new name even when asked for the old one), so readers need one name.

Output without a header (``--format=csv,noheader``) is refused: its columns are unknown.
"""

from __future__ import annotations

import re

from clusterkit.record import ConfigDict, Field, Record

from clusterkit.parsers.base import ParsedOutput, fail, split_lines
from clusterkit.parsers.nvidia_smi import detect_failure, is_na

TOOL = "nvidia-smi-csv"

_HEADER_CELL_RE = re.compile(r"([A-Za-z_][A-Za-z0-9_.]*)(?:\s*\[([^\[\]]*)\])?")
_INT_RE = re.compile(r"[+-]?(?:0|[1-9]\d*)")
_FLOAT_RE = re.compile(r"[+-]?\d+\.\d+")

#: Columns whose values are identities, never numbers (a serial keeps its leading zero).
STRING_COLUMNS = frozenset(
    {
        "timestamp", "driver_version", "vbios_version", "name", "gpu_name", "serial",
        "gpu_serial", "uuid", "gpu_uuid", "gpu_bus_id", "process_name", "compute_cap",
        "board_id", "pstate", "compute_mode", "persistence_mode", "display_mode",
        "display_active", "accounting.mode", "mig.mode.current", "mig.mode.pending",
    }
)
_STRING_PREFIXES = ("inforom.", "pci.")
#: Undotted field names of nvidia-smi's --query-* options (dotted names are recognised as such).
_FIELD_NAMES = frozenset(
    {
        "index", "name", "timestamp", "uuid", "serial", "pstate", "count", "pid", "driver_version",
        "vbios_version", "process_name", "used_memory", "used_gpu_memory", "gpu_name", "gpu_uuid",
        "gpu_bus_id", "gpu_serial", "compute_mode", "compute_cap", "persistence_mode",
        "display_mode", "display_active", "board_id", "module_id", "addressing_mode",
        "retired_pages_pending", "time", "gpu_instance_id", "compute_instance_id",
    }
)
_OLD_REASONS, _NEW_REASONS = "clocks_throttle_reasons.", "clocks_event_reasons."
_QUERY_ERRORS = ("is not a valid field to query", "invalid combination of input arguments")


class _Model(Record):
    model_config = ConfigDict(extra="forbid")


class CsvColumn(_Model):
    name: str = Field(description="Field name, unit removed; clocks_throttle_reasons.* renamed "
                                  "to clocks_event_reasons.* (the name drivers >= 535 print).")
    unit: str | None = None
    header: str = Field(description="The header cell as printed.")


class NvidiaSmiCsv(ParsedOutput):
    """``nvidia-smi --query-*=... --format=csv``."""

    columns: list[CsvColumn] = Field(default_factory=list)
    rows: list[dict[str, int | float | str | None]] = Field(default_factory=list)
    error: str | None = Field(default=None, description="nvidia-smi's own failure message, if any.")

    def summary(self) -> str:
        out = [f"nvidia-smi csv: {len(self.rows)} row(s) x {len(self.columns)} column(s)"]
        if self.error:
            out.append(f"  ERROR: {self.error}")
        units = {c.name: c.unit for c in self.columns}
        for row in self.rows[:8]:
            cells = []
            for k, v in list(row.items())[:6]:
                unit = f" {units[k]}" if units.get(k) and v is not None else ""
                cells.append(f"{k}={v}{unit}")
            out.append("  " + ", ".join(cells) + (", ..." if len(row) > 6 else ""))
        if len(self.rows) > 8:
            out.append(f"  ... {len(self.rows) - 8} more")
        return "\n".join(out)


def _header(line: str) -> list[CsvColumn] | None:
    cols: list[CsvColumn] = []
    for cell in line.split(","):
        m = _HEADER_CELL_RE.fullmatch(cell.strip())
        if m is None:
            return None
        unit = m.group(2).strip() if m.group(2) is not None else None
        name = m.group(1)
        if name.startswith(_OLD_REASONS):
            name = _NEW_REASONS + name[len(_OLD_REASONS):]
        cols.append(CsvColumn(name=name, unit=unit or None, header=cell.strip()))
    if not any("." in c.name or c.name in _FIELD_NAMES for c in cols):
        return None
    return cols


def _convert(column: CsvColumn, cell: str) -> int | float | str | None:
    value = cell.strip()
    if is_na(value):
        return None
    unit = column.unit
    if unit and value.lower().endswith(unit.lower()):
        bare = value[: len(value) - len(unit)].rstrip()
        if _INT_RE.fullmatch(bare) or _FLOAT_RE.fullmatch(bare):
            value = bare
    if column.name in STRING_COLUMNS or column.name.startswith(_STRING_PREFIXES):
        return value
    if _INT_RE.fullmatch(value):
        return int(value)
    if _FLOAT_RE.fullmatch(value):
        return float(value)
    return value


def parse_csv(text: str) -> NvidiaSmiCsv:
    """Parse ``nvidia-smi --query-gpu=... --format=csv[,nounits]`` output (header required)."""
    lines = split_lines(text)
    failure = detect_failure(lines)
    if failure is None:
        for no, ln in enumerate(lines, 1):
            if any(marker in ln.lower() for marker in _QUERY_ERRORS):
                failure = (no, ln.strip())
                break
    first = next((i for i, ln in enumerate(lines) if ln.strip()), None)
    if first is None:
        raise fail(TOOL, "empty input")
    columns = _header(lines[first])
    if columns is None:
        if failure is not None:
            return NvidiaSmiCsv(error=failure[1])
        raise fail(
            TOOL,
            "no CSV header line (column names unknown; use --format=csv without noheader)",
            first + 1, lines[first],
        )
    seen: dict[str, int] = {}
    for col in columns:  # the same field queried twice: keep both, second as name_2
        seen[col.name] = seen.get(col.name, 0) + 1
        if seen[col.name] > 1:
            col.name = f"{col.name}_{seen[col.name]}"
    model = NvidiaSmiCsv(columns=columns, error=failure[1] if failure else None)
    header_line = lines[first].strip()
    for no in range(first + 2, len(lines) + 1):
        line = lines[no - 1]
        if not line.strip() or line.strip() == header_line:
            continue
        if failure is not None and no == failure[0]:
            continue
        cells = line.split(",")
        if len(cells) != len(columns):
            raise fail(
                TOOL, f"row has {len(cells)} fields, header has {len(columns)}", no, line
            )
        model.rows.append({c.name: _convert(c, v) for c, v in zip(columns, cells)})
    return model
