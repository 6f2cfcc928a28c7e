"""Integration fixtures: real sshd fleets on loopback, the node-side virtualenv.

Everything collected under tests/integration/ is marked ``integration``. Fixtures skip (with
the reason) where the machine cannot run them: not root, no sshd, no usable system python.

    def test_something(ssh_fleet_factory):
        fleet = ssh_fleet_factory(8, env={"CLUSTERKIT_SIM": "builtin"})
        ...  # fleet.ssh_config, fleet.known_hosts, fleet.identity, fleet.names, fleet.pids
        fleet.stop()  # optional: every fleet is stopped at session end; stopping early
                      # gives its addresses back to the pool

Addresses come from 127.0.10.0/24 (one /24 per pytest-xdist worker: 127.0.10+N.0/24).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest

from tests.infra.nodeenv import NodeEnvError, ensure_node_venv
from tests.infra.sshfleet import (
    DEFAULT_USER,
    FleetUnavailable,
    SshFleet,
    loopback_nodes,
    unavailable_reason,
)

_HERE = Path(__file__).resolve().parent


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if Path(str(item.fspath)).resolve().is_relative_to(_HERE):
            item.add_marker(pytest.mark.integration)


def _network() -> str:
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    n = int(worker[2:]) if worker[2:].isdigit() else 0
    if n > 9:  # 127.0.20.0/23 belongs to the benchmarks
        raise RuntimeError("more than 10 xdist workers: give each its own sshd address range")
    return f"127.0.{10 + n}.0/24"


class _AddressPool:
    """Loopback addresses handed to fleets, given back when a fleet stops."""

    def __init__(self, network: str) -> None:
        self._all = [ip for _, ip in loopback_nodes(254, network)]
        self._used: set[str] = set()

    def take(self, n: int) -> list[str]:
        free = [ip for ip in self._all if ip not in self._used][:n]
        if len(free) < n:
            raise RuntimeError(f"only {len(free)} loopback addresses left for a {n}-node fleet; "
                               "stop fleets you no longer need")
        self._used.update(free)
        return free

    def give_back(self, ips: Sequence[str]) -> None:
        self._used.difference_update(ips)


@pytest.fixture(scope="session")
def sshd_available() -> None:
    """Skip unless this machine can run real sshd fleets (root, /usr/sbin/sshd)."""
    reason = unavailable_reason()
    if reason:
        pytest.skip(reason)


@pytest.fixture(scope="session")
def node_venv(sshd_available: None) -> Path:
    """The node-side virtualenv (clusterkit installed non-editable, runnable by any user)."""
    try:
        return ensure_node_venv()
    except NodeEnvError as e:
        pytest.skip(f"node-side virtualenv unavailable: {e}")


@pytest.fixture(scope="session")
def ssh_client() -> str:
    """Path of the OpenSSH client (skip without one)."""
    path = shutil.which("ssh")
    if path is None:
        pytest.skip("no OpenSSH client (ssh) on PATH")
    return path


@pytest.fixture(scope="session")
def ssh_fleet_factory(node_venv: Path, tmp_path_factory: pytest.TempPathFactory
                      ) -> Iterator[Callable[..., SshFleet]]:
    """make(nodes=4, *, env=None, user='ckuser', timeout=30, **SshFleet options) -> started fleet.

    `nodes`: a count (names gpu-001…) or a list of names. Other keywords go to SshFleet
    (known_hosts_exclude, known_hosts_wrong, unreachable, sshd_options, port).
    """
    pool = _AddressPool(_network())
    fleets: list[SshFleet] = []

    def make(nodes: int | Sequence[str] = 4, *, env=None, user: str = DEFAULT_USER,
             timeout: float = 30.0, **options) -> SshFleet:
        names = [f"gpu-{i:03d}" for i in range(1, nodes + 1)] if isinstance(nodes, int) \
            else list(nodes)
        ips = pool.take(len(names))
        fleet = SshFleet(tmp_path_factory.mktemp("sshfleet"), list(zip(names, ips)), env=env,
                         user=user, venv=node_venv, **options)
        fleet.on_stop.append(lambda _f, ips=ips: pool.give_back(ips))
        try:
            fleet.start(timeout=timeout)
        except FleetUnavailable as e:
            pool.give_back(ips)
            pytest.skip(str(e))
        except BaseException:
            pool.give_back(ips)
            raise
        fleets.append(fleet)
        return fleet

    yield make
    for fleet in reversed(fleets):
        fleet.stop()


# ----------------------------------------------------------------------------- real Slurm
# A real Slurm 22.05 cluster (own munged, slurmctld, one slurmd per node) on 127.0.0.1, see
# tests/infra/slurmcluster.py:
#
#     def test_drain(slurm_cluster):
#         slurm_cluster.reset()          # shared per module: start from all-idle if you need it
#         slurm_cluster.run(["scontrol", "update", "nodename=gpu-003", "state=drain", ...])
#
#     def test_other_shape(slurm_cluster_factory):
#         cluster = slurm_cluster_factory(4, healthcheck_program=..., healthcheck_interval=5)
#
# Ports and ClusterName follow the pytest-xdist worker (gwN -> N); several clusters at once in
# one worker (or another pytest run on this machine) get different slots (at most 4). Root
# dirs come from tempfile.mkdtemp(), since munged needs every directory above its socket
# traversable (pytest's tmp_path is not).

from typing import Any  # noqa: E402

from tests.infra.slurmcluster import (  # noqa: E402
    SLOTS,
    PortsInUse,
    SlurmCluster,
    SlurmClusterError,
    ports_free,
)
from tests.infra.slurmcluster import skip_reason as _slurm_skip_reason  # noqa: E402
from tests.infra.slurmcluster import worker_index_from_env  # noqa: E402


@pytest.fixture(scope="session")
def slurm_available() -> None:
    """Skip unless this machine can run a real Slurm cluster (root, slurm-wlm, munge, mknod)."""
    reason = _slurm_skip_reason()
    if reason:
        pytest.skip(reason)


@pytest.fixture(scope="session")
def slurm_cluster_factory(slurm_available: None) -> Iterator[Callable[..., SlurmCluster]]:
    """make(nodes=8, *, timeout=30, **SlurmCluster options) -> started cluster in a fresh temp
    dir. Every cluster is stopped (and its dir removed) at session end; cluster.stop() earlier
    frees its slot."""
    import tempfile

    worker = worker_index_from_env()
    clusters: list[SlurmCluster] = []

    def make(nodes: int = 8, *, timeout: float = 30.0, **options: Any) -> SlurmCluster:
        used = {c.slot for c in clusters if c.running}
        free = [s for s in range(SLOTS) if s not in used]
        # Skip slots another pytest run on this machine holds; retry on a lost race.
        free.sort(key=lambda s: not ports_free(worker, s, nodes))
        last: Exception | None = None
        for slot in free:
            root = tempfile.mkdtemp(prefix="ck-slurm-")
            os.chmod(root, 0o755)
            cluster = SlurmCluster(root, nodes=nodes, worker_index=worker, slot=slot,
                                   **options)
            clusters.append(cluster)
            try:
                cluster.start(timeout=timeout)
            except PortsInUse as e:
                last = e
                shutil.rmtree(root, ignore_errors=True)
                continue
            return cluster
        raise SlurmClusterError(f"no free Slurm port slot for worker {worker} "
                                f"({SLOTS} slots; {len(used)} used here): {last}")

    try:
        yield make
    finally:
        for cluster in reversed(clusters):
            try:
                cluster.stop()
            finally:
                shutil.rmtree(cluster.root, ignore_errors=True)


@pytest.fixture(scope="module")
def slurm_cluster(slurm_cluster_factory: Callable[..., SlurmCluster]) -> Iterator[SlurmCluster]:
    """An 8-node cluster (gpu-001..gpu-008, partition gpu, 8 fake H100 each) shared by the
    tests of one module. Tests that change node states call ``slurm_cluster.reset()`` first."""
    try:
        cluster = slurm_cluster_factory(8)
    except SlurmClusterError as e:
        pytest.fail(f"Slurm test cluster did not start: {e}")
    try:
        yield cluster
    finally:
        cluster.stop()
        shutil.rmtree(cluster.root, ignore_errors=True)


# ----------------------------------------------------------------------------- VictoriaMetrics
# A real VictoriaMetrics on 127.0.0.1 (tests/infra/vmstore.py), one per test, in its own temp
# data dir; the port follows the pytest-xdist worker (gwN -> 18400 + 20*N, first free slot):
#
#     def test_arrival(vmstore):
#         emit(report, url=vmstore.url, org="o", bucket="b", spool_dir=...)
#         rows = vmstore.export('{__name__="gpu_value"}', expect=16)
#         vmstore.stop(); vmstore.start()      # an outage, same data

from tests.infra.vmstore import VictoriaMetrics  # noqa: E402
from tests.infra.vmstore import unavailable_reason as _vm_skip_reason  # noqa: E402


@pytest.fixture(scope="session")
def vm_available() -> None:
    """Skip unless the victoria-metrics binary is installed."""
    reason = _vm_skip_reason()
    if reason:
        pytest.skip(reason)


@pytest.fixture
def vmstore_factory(vm_available: None, tmp_path_factory: pytest.TempPathFactory
                    ) -> Iterator[Callable[..., VictoriaMetrics]]:
    """make(**VictoriaMetrics options) -> a started VictoriaMetrics; all stopped (by PID) after
    the test."""
    stores: list[VictoriaMetrics] = []

    def make(**options: Any) -> VictoriaMetrics:
        used = [s.port for s in stores]
        from tests.infra.vmstore import free_port

        vm = VictoriaMetrics(tmp_path_factory.mktemp("vm") / "data", port=options.pop("port", None)
                             or free_port(exclude=used), **options)
        stores.append(vm)
        vm.start()
        return vm

    try:
        yield make
    finally:
        for vm in reversed(stores):
            vm.stop()


@pytest.fixture
def vmstore(vmstore_factory: Callable[..., VictoriaMetrics]) -> VictoriaMetrics:
    """A started VictoriaMetrics of this test's own."""
    return vmstore_factory()
