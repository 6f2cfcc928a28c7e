"""dcgmi diag: ``-j`` JSON (DCGM 3.x and 4.x layouts) and the text table.

Every test result becomes one :class:`DcgmiTest` entry: a test run per GPU yields one entry per
GPU (``gpu`` = its index), a test run once for the node (the Deployment checks, or a text row
'Pass - All') one entry with ``gpu`` null.

JSON layouts read:

* DCGM 3.x: ``{"DCGM GPU Diagnostic": {"test_categories": [{"category", "tests": [{"name",
  "results": [{"gpu_ids": "0", "status": "Pass", "info": "...", "warnings": [{"warning": ...}]}]}]}]}}``
  (Deployment results carry no ``gpu_ids``);
* DCGM 4.x: ``{"DCGM Diagnostic": {...same nesting...}, "metadata": {...}}`` with results
  ``{"entity_group": "GPU", "entity_id": 0, "status", "info": [...], "warnings": [...]}`` and a
  ``test_summary``;
* a run that could not start: ``{"DCGM GPU Diagnostic": {"runtime_error": "...", "version": ...}}``;
* ``--iterations``: ``{"iterations": [<one document per iteration>], "result": "Pass"}``.

Text table (``dcgmi diag -r N``)::

    +---------------------------+------------------------------------------------+
    | Diagnostic                | Result                                         |
    +===========================+================================================+
    |-----  Deployment  --------+------------------------------------------------|
    | Denylist                  | Pass                                           |
    +-----  Hardware  ----------+------------------------------------------------+
    | GPU Memory                | Pass - GPUs: 0, 1                              |
    |                           | Fail - GPU: 2                                  |
    | Warning                   | GPU 2 ...                                      |

Results are normalised to Pass / Fail / Warn / Skip (and 'Not Run'). ``overall`` is the worst
result: Fail if any test failed, else Warn if any warned (or carries a status this parser does
not know), else Pass; Skip never fails a run. A diagnostic that could not run at all (runtime
error, no results) has overall 'Error' and the message in ``error``: that is "could not run",
not evidence against the hardware.
"""

from __future__ import annotations

import json
import re
from typing import Any, Literal

from clusterkit.record import ConfigDict, Record

from clusterkit.parsers.base import ParsedOutput, fail, split_lines, not_recognised

TOOL = "dcgmi-diag"


class DcgmiTest(Record):
    model_config = ConfigDict(extra="forbid")

    name: str
    category: str | None = None
    result: str
    gpu: int | None = None
    entity: str | None = None  # 'GPU 0', 'CPU 1' (4.x entity results); null for aggregates
    info: str | None = None
    warnings: list[str] = []
    iteration: int | None = None  # with --iterations


class DcgmiDiagOutput(ParsedOutput):
    format: Literal["json", "text"]
    dcgm_version: str | None = None
    driver_version: str | None = None
    gpu_device_ids: list[str] = []
    tests: list[DcgmiTest]
    overall: str  # Pass / Warn / Fail, or Error when the diagnostic could not run
    error: str | None = None

    def summary(self) -> str:
        counts: dict[str, int] = {}
        for t in self.tests:
            counts[t.result] = counts.get(t.result, 0) + 1
        head = f"dcgmi diag: {self.overall}"
        if self.dcgm_version:
            head += f" (DCGM {self.dcgm_version})"
        head += ", " + (", ".join(f"{n} {r}" for r, n in sorted(counts.items())) or "no results")
        lines = [head]
        if self.error:
            lines.append(f"  error: {self.error}")
        for t in self.tests:
            if t.result in ("Pass", "Skip", "Not Run"):
                continue
            where = f" GPU {t.gpu}" if t.gpu is not None else ""
            detail = "; ".join(t.warnings) or t.info or ""
            lines.append(f"  {t.result}: {t.name}{where}" + (f": {detail}" if detail else ""))
        return "\n".join(lines)


_RESULTS = {
    "pass": "Pass", "passed": "Pass",
    "fail": "Fail", "failed": "Fail",
    "warn": "Warn", "warning": "Warn",
    "skip": "Skip", "skipped": "Skip",
    "not run": "Not Run", "notrun": "Not Run", "not_run": "Not Run",
}


def _norm_result(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        return "Unknown"
    return _RESULTS.get(value.strip().lower(), value.strip())


def _overall(tests: list[DcgmiTest], forced_fail: bool = False) -> str:
    results = {t.result for t in tests}
    if "Fail" in results or forced_fail:
        return "Fail"
    if not tests:
        return "Error"
    if results - {"Pass", "Skip", "Not Run"}:
        return "Warn"
    return "Pass"


# --------------------------------------------------------------------------- JSON
def _text_of(value: Any) -> str | None:
    if isinstance(value, str):
        return value.strip() or None
    if isinstance(value, list):
        parts = [v.strip() for v in value if isinstance(v, str) and v.strip()]
        return "; ".join(parts) or None
    return None


def _warnings_of(value: Any) -> list[str]:
    out: list[str] = []
    items = value if isinstance(value, list) else [value] if value is not None else []
    for w in items:
        if isinstance(w, str) and w.strip():
            out.append(w.strip())
        elif isinstance(w, dict):
            msg = w.get("warning", w.get("warnings", w.get("message")))
            if isinstance(msg, str) and msg.strip():
                out.append(msg.strip())
    return out


def _gpus_of(res: dict) -> tuple[list[int | None], str | None]:
    """GPU indices a result applies to, and an entity label for non-GPU entities."""
    group = res.get("entity_group")
    eid = res.get("entity_id")
    if isinstance(eid, int) and not isinstance(eid, bool):
        if group is None or (isinstance(group, str) and group.upper() == "GPU"):
            return [eid], f"GPU {eid}"
        return [None], f"{group} {eid}"
    for key in ("gpu_ids", "gpu_id", "gpu"):
        val = res.get(key)
        if isinstance(val, int) and not isinstance(val, bool):
            return [val], f"GPU {val}"
        if isinstance(val, str) and val.strip():
            ids = [p.strip() for p in val.split(",")]
            if ids and all(p.isascii() and p.isdigit() and len(p) < 6 for p in ids):
                return [int(p) for p in ids], None
        if isinstance(val, list):
            int_ids = [v for v in val if isinstance(v, int) and not isinstance(v, bool)]
            if int_ids:
                return list(int_ids), None
    cpu = res.get("cpu_id")
    if isinstance(cpu, (str, int)) and not isinstance(cpu, bool):
        return [None], f"CPU {cpu}"
    return [None], None


def _json_tests(root: dict, iteration: int | None) -> list[DcgmiTest]:
    tests: list[DcgmiTest] = []
    cats = root.get("test_categories")
    if not isinstance(cats, list):
        return tests
    for cat in cats:
        if not isinstance(cat, dict):
            continue
        category = cat.get("category", cat.get("header"))
        category = category if isinstance(category, str) else None
        entries = cat.get("tests")
        for test in entries if isinstance(entries, list) else []:
            if not isinstance(test, dict):
                continue
            name = test.get("name")
            name = name if isinstance(name, str) and name else "(unnamed test)"
            results = test.get("results")
            results = [r for r in results if isinstance(r, dict)] if isinstance(results, list) else []
            if not results:
                summary = test.get("test_summary")
                if isinstance(summary, dict) and "status" in summary:
                    results = [summary]
            for res in results:
                gpus, entity = _gpus_of(res)
                for g in gpus:
                    tests.append(DcgmiTest(
                        name=name,
                        category=category,
                        result=_norm_result(res.get("status")),
                        gpu=g,
                        entity=entity if entity else (f"GPU {g}" if g is not None else None),
                        info=_text_of(res.get("info")),
                        warnings=_warnings_of(res.get("warnings")),
                        iteration=iteration,
                    ))
    return tests


def _diag_root(doc: dict) -> dict | None:
    for key in ("DCGM GPU Diagnostic", "DCGM Diagnostic"):
        if isinstance(doc.get(key), dict):
            return doc[key]
    for key, val in doc.items():
        if isinstance(key, str) and "diagnostic" in key.lower() and isinstance(val, dict):
            return val
    if "test_categories" in doc:
        return doc
    return None


def _meta(doc: dict, root: dict, key_names: tuple[str, ...]) -> str | None:
    meta = doc.get("metadata")
    for source in (root, doc, meta if isinstance(meta, dict) else {}):
        for k in key_names:
            v = source.get(k)
            if isinstance(v, (str, int, float)) and not isinstance(v, bool) and str(v).strip():
                return str(v).strip()
    return None


def _parse_json(text: str) -> DcgmiDiagOutput:
    try:
        doc = json.loads(text)
    except (ValueError, RecursionError) as e:
        line_no = getattr(e, "lineno", None)
        lines = text.split("\n")
        line = lines[line_no - 1] if isinstance(line_no, int) and 0 < line_no <= len(lines) else None
        raise fail(TOOL, f"not valid dcgmi diag JSON ({getattr(e, 'msg', type(e).__name__)})",
                   line_no, line) from None
    if not isinstance(doc, dict):
        raise fail(TOOL, "JSON is not a dcgmi diag document (top level is not an object)", 1,
                   text.lstrip().split("\n", 1)[0])
    documents: list[tuple[int | None, dict]] = []
    forced_fail = False
    top_error = None
    if isinstance(doc.get("iterations"), list):
        for i, it in enumerate(doc["iterations"]):
            if isinstance(it, dict):
                documents.append((i + 1, it))
        forced_fail = _norm_result(doc.get("result")) == "Fail"
        top_error = _text_of(doc.get("warning"))
    else:
        documents.append((None, doc))
    tests: list[DcgmiTest] = []
    dcgm_version = driver_version = None
    dev_ids: list[str] = []
    errors: list[str] = []
    found = bool(documents) and isinstance(doc.get("iterations"), list)
    for iteration, d in documents:
        root = _diag_root(d)
        if root is None:
            continue
        found = True
        tests.extend(_json_tests(root, iteration))
        dcgm_version = dcgm_version or _meta(d, root, ("version", "DCGM Version"))
        driver_version = driver_version or _meta(d, root, ("Driver Version Detected", "driver_version"))
        ids = root.get("GPU Device IDs", d.get("GPU Device IDs"))
        if isinstance(ids, list) and not dev_ids:
            dev_ids = [str(x) for x in ids if isinstance(x, (str, int))]
        err = _text_of(root.get("runtime_error", d.get("runtime_error")))
        if err:
            errors.append(err)
    if not found:
        raise fail(TOOL, "JSON without a 'DCGM GPU Diagnostic' / 'DCGM Diagnostic' object", 1,
                   text.lstrip().split("\n", 1)[0])
    error = errors[0] if errors else top_error
    if not tests and error is None:
        error = "no test results in the dcgmi diag JSON"
    return DcgmiDiagOutput(
        format="json",
        dcgm_version=dcgm_version,
        driver_version=driver_version,
        gpu_device_ids=dev_ids,
        tests=tests,
        overall=_overall(tests, forced_fail),
        error=error,
    )


# --------------------------------------------------------------------------- text table
_SPEC_RE = re.compile(
    r"^(pass|fail|warn|warning|skip|not run)(?:\s*-\s*(all|gpus?\s*:\s*([0-9][0-9,\s]*)))?$",
    re.IGNORECASE,
)
_GPU_SPEC_RE = re.compile(
    r"^gpu\s*([0-9]{1,18})\s*:\s*(pass|fail|warn|warning|skip|not run)\b", re.IGNORECASE
)
_GPU_PREFIX_RE = re.compile(r"^gpu\s*([0-9]{1,18})\b", re.IGNORECASE)
_ITERATION_RE = re.compile(r"^Running iteration\s+([0-9]{1,18})\s+of\s+([0-9]{1,18})")
_DETAIL_NAMES = ("warning", "error", "info")
_META = {
    "dcgm version": "dcgm_version",
    "driver version detected": "driver_version",
    "gpu device ids detected": "gpu_device_ids",
}


class _TextTest:
    def __init__(self, name: str, category: str | None, iteration: int | None) -> None:
        self.name = name
        self.category = category
        self.iteration = iteration
        self.aggregate: str | None = None
        self.per_gpu: dict[int, str] = {}
        self.details: list[tuple[str, str]] = []  # (kind, text)

    def add_spec(self, info: str) -> bool:
        """Read a result cell ('Pass', 'Fail - GPUs: 0, 1', 'GPU0: Pass'); False if it is none."""
        m = _SPEC_RE.match(info.strip())
        if m:
            result = _norm_result(m.group(1))
            if m.group(3) is not None:
                for part in m.group(3).split(","):
                    if part.strip().isascii() and part.strip().isdigit() and len(part.strip()) < 6:
                        self.per_gpu[int(part.strip())] = result
            else:
                self.aggregate = result
            return True
        m = _GPU_SPEC_RE.match(info.strip())
        if m:
            self.per_gpu[int(m.group(1))] = _norm_result(m.group(2))
            return True
        return False

    def entries(self) -> list[DcgmiTest]:
        out: list[DcgmiTest] = []
        if self.per_gpu:
            for g in sorted(self.per_gpu):
                out.append(DcgmiTest(name=self.name, category=self.category, result=self.per_gpu[g],
                                     gpu=g, entity=f"GPU {g}", iteration=self.iteration))
        else:
            out.append(DcgmiTest(name=self.name, category=self.category,
                                 result=self.aggregate or "Unknown", iteration=self.iteration))
        for kind, text in self.details:
            m = _GPU_PREFIX_RE.match(text)
            targets = [e for e in out if m and e.gpu == int(m.group(1))] or out
            for e in targets:
                if kind == "info":
                    e.info = f"{e.info} {text}" if e.info else text
                else:
                    e.warnings.append(text)
        return out


def _category_of(line: str) -> str | None:
    """'|-----  Deployment  --------+-----|' -> 'Deployment'; None for a plain separator."""
    inner = line.strip().strip("|+").strip()
    words = inner.replace("+", " ").replace("|", " ").replace("=", " ").replace("-", " ").split()
    return " ".join(words) if words else None


def _parse_text(text: str) -> DcgmiDiagOutput:
    lines = split_lines(text)
    meta: dict[str, Any] = {}
    tests: list[_TextTest] = []
    cur: _TextTest | None = None
    category: str | None = None
    iteration: int | None = None
    errors: list[str] = []
    recognised = False
    last_detail: tuple[str, list] | None = None  # detail kind + list it was appended to

    for raw in lines:
        line = raw.strip()
        if not line:
            continue
        if line.startswith("+") or line.startswith("|-") or line.startswith("|="):
            if set(line) <= set("+-=| "):
                continue
            if "----" in line or "====" in line:
                recognised = True
                category = _category_of(line)
                cur, last_detail = None, None
                continue
        if line.startswith("|"):
            inner = line[1:]
            if inner.endswith("|"):
                inner = inner[:-1]
            if "|" not in inner:
                continue
            name, info = (c.strip() for c in inner.split("|", 1))
            info = info.rstrip("|").strip()
            if name.lower() == "diagnostic" and info.lower() == "result":
                recognised = True
                continue
            low = name.lower()
            if (category is not None and category.lower() == "metadata") or low in _META:
                key = _META.get(low)
                if key == "gpu_device_ids":
                    meta[key] = [p.strip() for p in info.split(",") if p.strip()]
                elif key:
                    meta[key] = info or None
                recognised = True
                continue
            kind = next((k for k in _DETAIL_NAMES if low == k or low.startswith(k + ":")), None)
            if kind is not None:
                detail = (name[len(kind) + 1:].strip() + " " + info).strip() if ":" in name else info
                if cur is None:
                    if kind == "error" and detail:
                        errors.append(detail)
                    continue
                cur.details.append((kind, detail))
                last_detail = (kind, cur.details)
                continue
            if not name:
                if cur is None:
                    continue
                if cur.add_spec(info):
                    last_detail = None
                    continue
                if last_detail is not None and info:
                    # dcgmi wraps long messages every 45 characters, mid-word: join as is
                    store = last_detail[1]
                    k, prev = store[-1]
                    store[-1] = (k, prev + info)
                continue
            cur = _TextTest(name, category, iteration)
            if not cur.add_spec(info):
                cur.aggregate = _norm_result(info.split(" - ")[0]) if info else "Unknown"
            tests.append(cur)
            recognised = True
            last_detail = None
            continue
        m = _ITERATION_RE.match(line)
        if m:
            iteration = int(m.group(1))
            recognised = True
            continue
        if line.startswith("Successfully ran diagnostic"):
            recognised = True
            continue
        if line.startswith("Error") and ("iagnostic" in line or "DCGM" in line or "host engine" in line):
            errors.append(line)
            recognised = True
            continue
        # other lines (prompts, author elisions, 'Passed all N runs'): ignored

    if not recognised:
        raise not_recognised(TOOL, lines, "no dcgmi diag result table or JSON found")
    entries = [e for t in tests for e in t.entries()]
    error = errors[0] if errors else None
    if not entries and error is None:
        error = "no test results in the dcgmi diag table"
    return DcgmiDiagOutput(
        format="text",
        dcgm_version=meta.get("dcgm_version"),
        driver_version=meta.get("driver_version"),
        gpu_device_ids=meta.get("gpu_device_ids", []),
        tests=entries,
        overall=_overall(entries),
        error=error,
    )


def parse_dcgmi_diag(text: str) -> DcgmiDiagOutput:
    """Parse ``dcgmi diag`` output: the ``-j`` JSON document or the text table."""
    if not isinstance(text, str):
        raise fail(TOOL, "input is not text")
    if text.lstrip(" \t\r\n\ufeff").startswith("{"):
        return _parse_json(text)
    return _parse_text(text)
