"""The Grafana dashboard (dashboards/clusterkit-fleet.json) and its page (docs/grafana.md): the JSON
loads, every panel reads the templated data source, the layout holds, and every query names only
measurements, fields, tags and check ids that the schema (docs/metrics.md, clusterkit.telemetry.points)
and the check index document."""

from __future__ import annotations

import json
import re
from functools import lru_cache
from pathlib import Path
from typing import Any

import pytest

from clusterkit.telemetry import points
from clusterkit.validate._index import NODE_CHECKS

ROOT = Path(__file__).resolve().parent.parent.parent
DASHBOARD = ROOT / "dashboards" / "clusterkit-fleet.json"
METRICS_DOC = ROOT / "docs" / "metrics.md"
GRAFANA_DOC = ROOT / "docs" / "grafana.md"

DS = {"type": "influxdb", "uid": "${DS}"}
#: Flux's own columns
FLUX_COLUMNS = {"_measurement", "_field", "_value", "_time", "_start", "_stop"}
#: the dashboard's variables (and Grafana's built-in ones a query may use)
VARIABLES = {"DS", "partition", "host", "check", "__interval", "__range", "__rate_interval"}
#: domains whose checks are not written yet: a query may name them and match no check today
FUTURE_DOMAINS = {"nccl"}
CHECK_IDS = {c for checks in NODE_CHECKS.values() for c in checks}


# --------------------------------------------------------------------------- the schema
@lru_cache(maxsize=None)
def documented_schema() -> tuple[dict[str, frozenset[str]], frozenset[str]]:
    """Measurement -> fields, and the tags, from the table 'Points of one run' of docs/metrics.md."""
    text = METRICS_DOC.read_text(encoding="utf-8")
    table = text.split("| measurement | one point per | tags | fields |", 1)[1].split("\n\n", 1)[0]
    rows = [ln for ln in table.splitlines() if ln.startswith("| `")]
    assert rows, "docs/metrics.md: no table of points"
    fields: dict[str, frozenset[str]] = {}
    tags: set[str] = set()
    for row in rows:
        cells = [c.strip() for c in row.strip().strip("|").split("|")]
        measurements = re.findall(r"`([a-z_]+)`", cells[0].split("(", 1)[0])
        row_tags = set(re.findall(r"`([a-z_]+)`", cells[2]))
        if "subject tags" in cells[2]:
            row_tags |= set(points.SUBJECT_TAGS)
        row_fields = set(re.findall(r"`([a-z_]+)`", re.sub(r"\([^)]*\)", "", cells[3])))
        if "…" in cells[3]:  # `checks_pass` … `checks_skip`
            assert {"checks_pass", "checks_skip"} <= row_fields
            row_fields |= {f"checks_{s}" for s in points.STATUS_CODES}
        tags |= row_tags
        for m in measurements:
            fields[m] = frozenset(row_fields)
    # the opaque tags of 'Unique series' (subject text, a counter) are documented tags too
    unique = text.split("### Unique series", 1)[1].split("\n## ", 1)[0]
    assert "`subject` tag" in unique and "counter tag `n`" in unique
    tags |= {"subject", "n"}
    return fields, frozenset(tags)


def test_the_documented_schema_is_the_one_points_py_writes():
    fields, tags = documented_schema()
    assert set(fields) == set(points.DOMAINS) | set(points.RESERVED_MEASUREMENTS)
    assert {"host", "partition", "profile", "check", *points.SUBJECT_TAGS} <= tags
    for domain in points.DOMAINS:
        assert fields[domain] == {"value", "threshold", "status_code"}
    assert {"status_code", "message", "value_text", "run_id"} <= fields[points.CHECK_MEASUREMENT]
    assert {"passed", "warned", "failed", "errored", "unreachable", "checks_warn"} <= fields[points.RUN_MEASUREMENT]
    assert set(points.FACT_FIELDS) <= fields[points.NODE_MEASUREMENT]


# --------------------------------------------------------------------------- the dashboard
@lru_cache(maxsize=None)
def dashboard() -> dict[str, Any]:
    return json.loads(DASHBOARD.read_text(encoding="utf-8"))


def panels() -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for p in dashboard()["panels"]:
        out.append(p)
        out.extend(p.get("panels", []))  # collapsed rows
    return out


def queries() -> list[tuple[str, str]]:
    """(where, Flux query) of every panel target and every query variable."""
    out = [(f"panel {p['title']!r} {t['refId']}", t["query"]) for p in panels() for t in p.get("targets", [])]
    out += [(f"variable {v['name']}", v["query"]) for v in dashboard()["templating"]["list"] if v["type"] == "query"]
    return out


def test_the_dashboard_loads_and_says_what_it_is():
    d = dashboard()
    assert d["uid"] == "clusterkit-fleet" and d["title"] and d["id"] is None
    assert 36 <= d["schemaVersion"] <= 41
    assert DASHBOARD.read_text(encoding="utf-8").endswith("}\n")


def test_the_data_source_is_a_variable_and_the_filters_are_there():
    variables = {v["name"]: v for v in dashboard()["templating"]["list"]}
    assert set(variables) == {"DS", "partition", "host", "check"}
    ds = variables["DS"]
    assert ds["type"] == "datasource" and ds["query"] == "influxdb"
    assert variables["host"]["multi"] is True and variables["check"]["multi"] is True
    for name in ("partition", "host", "check"):
        v = variables[name]
        assert v["type"] == "query" and v["datasource"] == DS and v["includeAll"] is True
        assert v["allValue"] == ".*"  # 'All' matches everything (and, for partition, points without one)
        assert v["query"] == v["definition"]


def test_every_panel_has_a_title_the_templated_data_source_and_queries():
    for p in panels():
        if p["type"] == "row":
            continue
        assert p.get("title"), p
        assert p.get("description"), p["title"]
        assert p["datasource"] == DS, p["title"]
        targets = p.get("targets")
        assert targets, p["title"]
        assert len({t["refId"] for t in targets}) == len(targets)
        for t in targets:
            assert t["datasource"] == DS and t["query"].strip(), p["title"]


def test_the_panels_the_page_promises():
    titles = [p["title"] for p in panels()]
    for expected in ("Fleet health per run", "Failing checks by node (latest result)",
                     "NCCL bus bandwidth per node", "InfiniBand error counters", "GPU uncorrectable ECC errors",
                     "Xid and SXid events (latest result)"):
        assert expected in titles
    doc = GRAFANA_DOC.read_text(encoding="utf-8")
    for title in titles:
        assert f"### {title}" in doc, f"docs/grafana.md does not describe the panel {title!r}"


def test_panel_options_are_grafana_values():
    for p in panels():
        assert p["type"] in {"timeseries", "table", "row"}, p["title"]
        custom = p.get("fieldConfig", {}).get("defaults", {}).get("custom", {})
        if p["type"] == "timeseries":
            assert custom["drawStyle"] in {"line", "bars", "points"}, p["title"]
            assert custom["showPoints"] in {"auto", "never", "always"}, p["title"]
            assert custom["stacking"]["mode"] in {"none", "normal", "percent"}, p["title"]


def test_panel_ids_are_unique_and_the_grid_does_not_overlap():
    ps = panels()
    ids = [p["id"] for p in ps]
    assert len(ids) == len(set(ids)) and all(isinstance(i, int) and i > 0 for i in ids)
    boxes = []
    for p in ps:
        g = p["gridPos"]
        assert g["w"] > 0 and g["h"] > 0 and g["x"] >= 0 and g["y"] >= 0 and g["x"] + g["w"] <= 24, p["title"]
        boxes.append((p["title"], g["x"], g["y"], g["x"] + g["w"], g["y"] + g["h"]))
    for i, (ta, x0, y0, x1, y1) in enumerate(boxes):
        for tb, u0, v0, u1, v1 in boxes[i + 1:]:
            assert x1 <= u0 or u1 <= x0 or y1 <= v0 or v1 <= y0, f"{ta!r} overlaps {tb!r}"


# --------------------------------------------------------------------------- the queries
def _names(query: str) -> dict[str, set[str]]:
    """What a Flux query names: measurements, fields, columns, checks (literals and regexes),
    variables."""
    cols = set(re.findall(r"\br\.([A-Za-z_][A-Za-z0-9_]*)", query))
    cols |= set(re.findall(r'\br\["([^"]+)"\]', query))
    for arg in re.findall(r"(?:columns|rowKey|columnKey)\s*:\s*\[([^\]]*)\]", query):
        cols |= set(re.findall(r'"([^"]+)"', arg))
    cols |= set(re.findall(r'(?:column|valueColumn)\s*:\s*"([^"]+)"', query))
    return {
        "measurements": set(re.findall(r'\br\._measurement\s*==\s*"([^"]+)"', query)),
        "fields": set(re.findall(r'\br\._field\s*==\s*"([^"]+)"', query)),
        "columns": cols,
        "checks": set(re.findall(r'\br\.check\s*==\s*"([^"]+)"', query)),
        "check_patterns": set(re.findall(r"\br\.check\s*=~\s*/((?:[^/\\]|\\.)+)/", query)),
        "variables": set(re.findall(r"\$\{?([A-Za-z_][A-Za-z0-9_]*)", query)),
    }


@pytest.mark.parametrize("where, query", queries())
def test_queries_name_only_the_documented_schema(where, query):
    fields, tags = documented_schema()
    n = _names(query)
    assert n["measurements"], f"{where}: names no measurement"
    assert "from(bucket: v.defaultBucket)" in query and "range(start: v.timeRangeStart" in query, where
    assert n["measurements"] <= set(fields), f"{where}: undocumented measurement {n['measurements'] - set(fields)}"
    known_fields = set().union(*(fields[m] for m in n["measurements"]))
    assert n["fields"] <= known_fields, f"{where}: undocumented field {n['fields'] - known_fields}"
    columns = n["columns"] - FLUX_COLUMNS
    assert columns <= tags | known_fields, f"{where}: undocumented column {columns - tags - known_fields}"
    assert n["variables"] <= VARIABLES, f"{where}: unknown variable {n['variables'] - VARIABLES}"
    assert n["checks"] <= CHECK_IDS, f"{where}: unknown check {n['checks'] - CHECK_IDS}"
    for pattern in n["check_patterns"]:
        if pattern == "^${check:regex}$":
            continue
        rx = re.compile(pattern)
        if n["measurements"] & FUTURE_DOMAINS:
            assert rx.search("nccl.allreduce.busbw"), where  # the shape fleet.md gives nccl.*.busbw
            continue
        assert any(rx.search(c) for c in CHECK_IDS), f"{where}: {pattern} matches no check"
        if points.CHECK_MEASUREMENT not in n["measurements"]:  # a domain measurement holds its own checks only
            domains = {c.split(".", 1)[0] for c in CHECK_IDS if rx.search(c)}
            assert domains <= n["measurements"], f"{where}: {pattern} names checks of {domains}"


def test_the_extraction_sees_what_it_should():
    q = ('from(bucket: v.defaultBucket) |> range(start: v.timeRangeStart) |> filter(fn: (r) => r._measurement == "gpu" '
         'and r._field == "value" and r["gpu"] == "3" and r.check =~ /^gpu\\.ecc/) '
         '|> group(columns: ["host", "nope"]) |> distinct(column: "path") '
         '|> filter(fn: (r) => r.host =~ /^${host:regex}$/)')
    n = _names(q)
    assert n["measurements"] == {"gpu"} and n["fields"] == {"value"}
    assert n["columns"] == {"_measurement", "_field", "gpu", "check", "host", "nope", "path"}
    assert n["check_patterns"] == {"^gpu\\.ecc"}
    assert n["variables"] == {"host"}
    fields, tags = documented_schema()
    assert "nope" not in tags and "nope" not in fields["gpu"]


def test_the_status_mappings_are_the_documented_codes():
    doc = METRICS_DOC.read_text(encoding="utf-8")
    codes = dict(re.findall(r"^\| (\w+)[^|]*\| (\d) \|$", doc, re.M))
    assert codes == {"pass": "0", "warn": "1", "fail": "2", "error": "3", "skip": "4", "unreachable": "5"}
    for p in panels():
        for o in p.get("fieldConfig", {}).get("overrides", []):
            for prop in o["properties"]:
                if prop["id"] == "mappings":
                    options = prop["value"][0]["options"]
                    assert {k: v["text"] for k, v in options.items()} == {c: s for s, c in codes.items()}


# --------------------------------------------------------------------------- docs/grafana.md
def test_the_promql_in_the_page_names_documented_metrics():
    fields, _ = documented_schema()
    vm_names = {f"{m}_{f}" for m, fs in fields.items() for f in fs}
    textfile = METRICS_DOC.read_text(encoding="utf-8").split("## node_exporter textfile", 1)[1].split("\n## ", 1)[0]
    prom_names = set()
    for row in textfile.splitlines():
        if row.startswith("| `"):
            prom_names |= set(re.findall(r"`(clusterkit_[a-z_]+)`", row.split("|")[1]))
    doc = GRAFANA_DOC.read_text(encoding="utf-8")
    blocks = re.findall(r"```promql\n(.*?)```", doc, re.S)
    assert len(blocks) >= 6
    seen = 0
    for block in blocks:
        for name in re.findall(r"\b([a-z][a-z0-9_]*)\{", block):
            if name in {"by", "without"}:
                continue
            assert name in vm_names | prom_names, f"docs/grafana.md: {name} is not a documented metric"
            seen += 1
        for pattern in re.findall(r'__name__=~"([^"]+)"', block):
            assert [n for n in vm_names if re.fullmatch(pattern, n)], pattern
    assert seen >= 6


def test_the_page_has_the_flux_of_every_panel():
    doc = GRAFANA_DOC.read_text(encoding="utf-8")
    for p in panels():
        for t in p.get("targets", []):
            assert t["query"] in doc, f"docs/grafana.md does not show the query of {p['title']!r}"
