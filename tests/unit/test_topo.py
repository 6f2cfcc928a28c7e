"""Topology domain: the real recorded ``nvidia-smi topo -m`` capture run through the probe
context's tool runner, a sysfs tree that says which NICs are InfiniBand rails, the simulator's
stand-in with its faults, nvidia-smi missing or failing, and judges that are total."""

from __future__ import annotations

import stat
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from clusterkit.models import Status
from clusterkit.profiles import load_profile, parse_profile
from clusterkit.sim import parse_fleet
from clusterkit.sim.nvml import rdma_devices, topo_matrix
from clusterkit.validate import topo
from clusterkit.validate.context import ProbeContext

H100 = load_profile("h100-sxm")
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "nvidia-smi"
CAPTURE = FIXTURES / "nvidia-smi_topo_-m_h100x8_12nics_driver580.txt"
#: the capture's compute rails: one per GPU; mlx5_4/5 and mlx5_10/11 are two dual-port NICs
#: (NODE to every GPU, PIX to each other) that carry storage and frontend traffic
RAILS = ["mlx5_0", "mlx5_1", "mlx5_2", "mlx5_3", "mlx5_6", "mlx5_7", "mlx5_8", "mlx5_9"]
OTHERS = ["mlx5_4", "mlx5_5", "mlx5_10", "mlx5_11"]


def sysfs(root: Path, layers: dict[str, str]) -> Path:
    for dev, layer in layers.items():
        port = root / "class" / "infiniband" / dev / "ports" / "1"
        port.mkdir(parents=True)
        (port / "link_layer").write_text(layer + "\n")
        (root / "class" / "infiniband" / dev / "device").mkdir()
        numa = 0 if dev in ("mlx5_0", "mlx5_1", "mlx5_2", "mlx5_3", "mlx5_4", "mlx5_5") else 1
        (root / "class" / "infiniband" / dev / "device" / "numa_node").write_text(f"{numa}\n")
    return root


def tool(dirpath: Path, body: str) -> Path:
    """An ``nvidia-smi`` on the context's tool path (a shell script)."""
    dirpath.mkdir(parents=True, exist_ok=True)
    p = dirpath / "nvidia-smi"
    p.write_text("#!/bin/sh\n" + body + "\n")
    p.chmod(p.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return dirpath


def capture_ctx(tmp_path: Path, text: str | None = None, layers: dict[str, str] | None = None) -> ProbeContext:
    tmp_path.mkdir(parents=True, exist_ok=True)
    src = tmp_path / "topo.txt"
    src.write_text(text if text is not None else CAPTURE.read_text())
    if layers is None:
        layers = {**{d: "InfiniBand" for d in RAILS}, **{d: "Ethernet" for d in OTHERS}}
    root = sysfs(tmp_path / "sys", layers)
    return ProbeContext.around(node="n", sysfs_root=str(root), tool_path=[str(tool(tmp_path / "bin", f"cat '{src}'"))],
                               state_dir=str(tmp_path / "state"))


def by_key(results):
    return {(r.check, r.subject): r for r in results}


def not_passing(results):
    return {(r.check, r.subject): r.status for r in results if r.status is not Status.PASS}


@pytest.fixture(scope="module", autouse=True)
def _fixture_in_tests():
    assert CAPTURE.is_file(), f"copy the real capture to {CAPTURE}"


# ------------------------------------------------------------------------------ the real capture
def test_real_capture_passes_and_ignores_the_storage_nics(tmp_path):
    m = topo.probe(capture_ctx(tmp_path), H100)
    assert m.error is None and m.gpus == list(range(8)) and len(m.pairs) == 28 and len(m.nics) == 12
    res = topo.judge(m, H100)
    assert not_passing(res) == {}
    got = by_key(res)
    assert got[("topo.p2p", None)].message == "all 28 GPU pairs NV18"
    assert {s for c, s in got if c == "topo.nic_affinity"} == set(RAILS)  # storage NICs not judged
    r = got[("topo.nic_affinity", "mlx5_6")]
    assert r.value == "PIX" and r.threshold == "PIX/PXB"
    assert r.message == "PIX to gpu4 (GPU NUMA 1, NIC NUMA 1, CPUs 56-111,168-223)"
    nic = next(n for n in m.nics if n.device == "mlx5_6")
    assert (nic.nic, nic.nearest_gpu, nic.connection, nic.link_layer, nic.numa_node) == \
        ("NIC6", 4, "PIX", "InfiniBand", 1)
    assert (nic.gpu_numa_affinity, nic.gpu_cpu_affinity) == ("1", "56-111,168-223")
    assert topo.facts(m) == {}


def test_a_rail_behind_the_host_bridge_fails_with_its_device_name(tmp_path):
    # mlx5_4 is an InfiniBand port here: a compute rail whose nearest GPU is NODE away
    layers = {**{d: "InfiniBand" for d in RAILS + ["mlx5_4"]}, **{d: "Ethernet" for d in OTHERS if d != "mlx5_4"}}
    res = topo.judge(topo.probe(capture_ctx(tmp_path, layers=layers), H100), H100)
    assert not_passing(res) == {("topo.nic_affinity", "mlx5_4"): Status.FAIL}
    r = by_key(res)[("topo.nic_affinity", "mlx5_4")]
    assert r.value == "NODE" and r.message.startswith("nearest GPU gpu0 through NODE, expected PIX/PXB")


def test_a_nic_whose_link_layer_cannot_be_read_is_an_error_never_a_failure(tmp_path):
    # no sysfs at all: nothing says which NICs are rails
    res = topo.judge(topo.probe(capture_ctx(tmp_path, layers={}), H100), H100)
    assert not_passing(res) == {("topo.nic_affinity", d): Status.ERROR for d in OTHERS}
    assert "cannot tell whether it is a compute rail" in by_key(res)[("topo.nic_affinity", "mlx5_10")].message


def test_rails_follow_the_profiles_ib_link_layer(tmp_path):
    roce = parse_profile("name: roce\ntopo: {p2p: NV18}\nib: {rails: 4, link_layer: Ethernet}\n", "r")
    res = topo.judge(topo.probe(capture_ctx(tmp_path), roce), roce)
    # now the Ethernet NICs are the rails, and they sit NODE away from every GPU
    assert not_passing(res) == {("topo.nic_affinity", d): Status.FAIL for d in OTHERS}
    no_ib = parse_profile("name: noib\ntopo: {p2p: NV18}\n", "n")  # no ib section: InfiniBand
    assert not_passing(topo.judge(topo.probe(capture_ctx(tmp_path / "2"), no_ib), no_ib)) == {}


@pytest.mark.parametrize("cell", ["SYS", "NV12", "PXB"])
def test_a_degraded_gpu_pair_fails_with_the_pair_as_subject(tmp_path, cell):
    lines = CAPTURE.read_text().splitlines(keepends=True)
    for row, col in ((2, 5), (5, 2)):  # GPU2's row and GPU5's row, both halves of the matrix
        cells = lines[1 + row].split("\t")
        cells[1 + col] = cell
        lines[1 + row] = "\t".join(cells)
    res = topo.judge(topo.probe(capture_ctx(tmp_path, "".join(lines)), H100), H100)
    assert not_passing(res) == {("topo.p2p", "gpu2-gpu5"): Status.FAIL}
    r = by_key(res)[("topo.p2p", "gpu2-gpu5")]
    assert (r.value, r.threshold) == (cell, "NV18") and r.message.startswith(f"gpu2-gpu5 connected through {cell}")


def test_a_copy_with_spaces_for_tabs_reads_the_same(tmp_path):
    spaced = CAPTURE.read_text().replace("\t", "   ")
    a = topo.probe(capture_ctx(tmp_path / "a"), H100)
    b = topo.probe(capture_ctx(tmp_path / "b", spaced), H100)
    assert a.pairs == b.pairs and [(n.device, n.connection, n.nearest_gpu) for n in a.nics] == \
        [(n.device, n.connection, n.nearest_gpu) for n in b.nics]


# ------------------------------------------------------------------------------ nvidia-smi trouble
def test_nvidia_smi_missing_is_an_error_never_a_failure(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))  # no nvidia-smi anywhere
    m = topo.probe(ProbeContext.around(node="n", state_dir=str(tmp_path)), H100)
    assert m.error and m.error.startswith("could not run nvidia-smi topo -m")
    assert [(r.check, r.status) for r in topo.judge(m, H100)] == [("topo.nvidia_smi", Status.ERROR)]


@pytest.mark.parametrize("body, fragment", [
    ('echo "NVIDIA-SMI has failed because it couldn\'t communicate with the NVIDIA driver. Make sure that the '
     'latest NVIDIA driver is installed and running."; exit 9', "failed: NVIDIA-SMI has failed"),
    ('echo "Failed to initialize NVML: Driver/library version mismatch" >&2; exit 18',
     "exited 18: Failed to initialize NVML: Driver/library version mismatch"),
    ("echo 'hello'", "could not read nvidia-smi topo -m"),
    ("exit 0", "could not read nvidia-smi topo -m"),
    ("sleep 5", "did not finish in time"),
])
def test_nvidia_smi_failing_is_an_error(tmp_path, monkeypatch, body, fragment):
    monkeypatch.setattr(topo, "TOOL_TIMEOUT_S", 0.5)
    ctx = ProbeContext.around(node="n", tool_path=[str(tool(tmp_path, body))], state_dir=str(tmp_path))
    m = topo.probe(ctx, H100)
    assert m.error and fragment in m.error, m.error
    assert [(r.check, r.status) for r in topo.judge(m, H100)] == [("topo.nvidia_smi", Status.ERROR)]


def test_no_topo_section_skips_without_running_anything(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    prof = parse_profile("name: bare\ngpu: {count: 8}\n", "b")
    m = topo.probe(ProbeContext.around(node="n"), prof)
    assert m.error is None
    assert {(r.check, r.status) for r in topo.judge(m, prof)} == {("topo.p2p", Status.SKIP),
                                                                  ("topo.nic_affinity", Status.SKIP)}


# ------------------------------------------------------------------------------ the simulator
FLEET = """
nodes: "n[1-5]"
hardware: {ib: {storage_ports: 2}}
faults:
  - {node: n2, gpu: 2, kind: p2p_degraded}
  - {node: n3, device: mlx5_3, kind: nic_far}
  - {node: n4, kind: ib_missing, value: 6}
  - {node: n5, kind: gpu_missing, value: 7}
"""


def _sim_text(node: str, fleet: str = FLEET) -> str:
    return topo_matrix(parse_fleet(fleet, "t").node(node))


def _sim_probe(tmp_path: Path, node: str, fleet: str = FLEET, layers: dict[str, str] | None = None):
    simnode = parse_fleet(fleet, "t").node(node)
    if layers is None:
        layers = {d: ("InfiniBand" if rail else "Ethernet") for d, rail in rdma_devices(simnode)}
    return topo.probe(capture_ctx(tmp_path, _sim_text(node, fleet), layers), H100)


def test_sim_stand_in_prints_the_real_layout(tmp_path):
    text = _sim_text("n1")
    first = text.splitlines()[0]
    assert first.startswith("\tGPU0\tGPU1") and first.endswith("\tNIC9\tCPU Affinity\tNUMA Affinity\tGPU NUMA ID")
    assert "GPU0\t X \tNV18\tNV18" in text and "0-55,112-167\t0\t\tN/A" in text
    assert text.rstrip().endswith("  NIC8: mlx5_8\n  NIC9: mlx5_9")
    # the same rows as the real capture for the rails: PIX to its GPU, PXB to its neighbour
    real = topo.probe(capture_ctx(tmp_path / "real"), H100)
    simulated = _sim_probe(tmp_path / "sim", "n1")
    assert simulated.pairs == real.pairs
    assert [(n.device, n.nearest_gpu, n.connection) for n in simulated.nics if n.device in RAILS[:4]] == \
        [(n.device, n.nearest_gpu, n.connection) for n in real.nics if n.device in RAILS[:4]]
    assert not_passing(topo.judge(simulated, H100)) == {}
    # the storage ports: NODE to NUMA 0's GPUs, PIX to each other, not judged (Ethernet)
    storage = [n for n in simulated.nics if n.device in ("mlx5_8", "mlx5_9")]
    assert [(n.connection, n.link_layer) for n in storage] == [("NODE", "Ethernet")] * 2


@pytest.mark.parametrize("node, expected", [
    ("n2", {("topo.p2p", p): Status.FAIL for p in
            ("gpu0-gpu2", "gpu1-gpu2", "gpu2-gpu3", "gpu2-gpu4", "gpu2-gpu5", "gpu2-gpu6", "gpu2-gpu7")}),
    ("n3", {("topo.nic_affinity", "mlx5_3"): Status.FAIL}),
    ("n4", {}),
    ("n5", {}),  # a GPU hidden: its rail stays where it is, PXB to the other GPU under its switch
])
def test_sim_faults_trip_their_checks(tmp_path, node, expected):
    m = _sim_probe(tmp_path, node)
    assert not_passing(topo.judge(m, H100)) == expected
    if node == "n3":
        assert "SYS" in _sim_text("n3").splitlines()[4].split("\t")[12]  # GPU3 to NIC3 (mlx5_3) reads SYS
    if node == "n4":
        assert [n.device for n in m.nics] == [f"mlx5_{i}" for i in range(6)] + ["mlx5_8", "mlx5_9"]
    if node == "n5":
        assert m.gpus == list(range(7)) and len(m.pairs) == 21
        assert next((n.nearest_gpu, n.connection) for n in m.nics if n.device == "mlx5_7") == (6, "PXB")


def test_sim_stand_in_through_the_sim_context(tmp_path, monkeypatch):
    """The real probe on a simulated node: the stand-in nvidia-smi on the tool path."""
    from clusterkit.sim.context import sim_context

    fleet_file = tmp_path / "fleet.yaml"
    fleet_file.write_text("nodes: 'n[1-2]'\nfaults:\n  - {node: n2, gpu: 6, kind: p2p_degraded}\n"
                          "  - {node: n1, kind: nvml_unavailable}\n")
    monkeypatch.setenv("CLUSTERKIT_SIM", str(fleet_file))
    monkeypatch.setenv("CLUSTERKIT_SIM_ROOT", str(tmp_path / "simroot"))
    from clusterkit import sim

    fleet = sim.load_fleet(str(fleet_file))
    ctx = sim_context(fleet.node("n2"), "k", deadline=time.monotonic() + 30)
    res = topo.judge(topo.probe(ctx, H100), H100)
    assert {k for k in not_passing(res)} == {("topo.p2p", f"gpu{i}-gpu6") for i in range(6)} | {("topo.p2p", "gpu6-gpu7")}
    ctx = sim_context(fleet.node("n1"), "k", deadline=time.monotonic() + 30)
    assert [(r.check, r.status) for r in topo.judge(topo.probe(ctx, H100), H100)] == [
        ("topo.nvidia_smi", Status.ERROR)]


# ------------------------------------------------------------------------------ totality
_BASE: dict = {}


def _healthy(tmp_path_factory) -> topo.TopoMeasurement:
    if "m" not in _BASE:
        _BASE["m"] = topo.probe(capture_ctx(tmp_path_factory.mktemp("topo")), H100)
    return _BASE["m"].model_copy(deep=True)


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(["pair", "connection", "gpu", "link_layer", "numa", "device",
                                           "affinity"]), st.integers(0, 27)), max_size=12))
def test_judge_is_total_unread_values_never_fail(tmp_path_factory, damage):
    m = _healthy(tmp_path_factory)
    pairs = sorted(m.pairs)
    for what, i in damage:
        nic = m.nics[i % len(m.nics)]
        if what == "pair":
            m.pairs[pairs[i]] = None
        elif what == "connection":
            nic.connection, nic.nearest_gpu = None, None
        elif what == "gpu":
            nic.nearest_gpu = None
        elif what == "link_layer":
            nic.link_layer = None  # nothing says whether it is a rail
        elif what == "numa":
            nic.numa_node = None
        elif what == "device":
            nic.device = None
        elif what == "affinity":
            nic.gpu_cpu_affinity = nic.gpu_numa_affinity = None
    res = topo.judge(m, H100)
    assert Status.FAIL not in {r.status for r in res}
    assert {r.check for r in res} <= set(topo.CHECKS)
