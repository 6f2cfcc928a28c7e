"""A real Slurm 22.05 test cluster on loopback: our own munged, one slurmctld, one slurmd per node.

::

    with SlurmCluster(tmpdir, nodes=8) as cluster:          # start(timeout=30) on enter
        cp = cluster.run(["sinfo", "-N", "-h"])             # clients get cluster.env
        subprocess.run(["sinfo"], env={**os.environ, **cluster.env})

Layout under ``root_dir`` (which, with every directory above it, must be traversable by user
``munge``: e.g. ``tempfile.mkdtemp()`` + ``chmod 0755``; pytest's ``tmp_path`` is not, since
``/tmp/pytest-of-root`` is mode 0700)::

    slurm.conf gres.conf        generated configuration (SLURM_CONF points here)
    munge/                      our munged: key (1024 random bytes, munge:munge 0400), socket,
                                pid, seed file (munge:munge, directory 0755)
    dev/nvidia0..N              fake GPUs: character devices 195,N mode 0666
    state/ spool/<node>/ run/ log/ tmp/

Nodes ``gpu-001``..``gpu-00N`` (one ``NodeName=gpu-[001-00N]`` line, ``NodeAddr=127.0.0.1``,
one port each), all in partition ``gpu`` (Default=YES). Each node advertises 16 CPUs, 64000 MB
and ``Gres=gpu:h100:<gpus_per_node>`` (``SlurmdParameters=config_overrides``), backed by the fake
devices above, so ``--gres=gpu:8`` jobs run and see ``CUDA_VISIBLE_DEVICES=0,...,7``. Every
slurmd shares this machine's hostname: jobs tell nodes apart by ``$SLURMD_NODENAME``.

Ports (per pytest-xdist worker, ``worker_index`` N from ``gwN``, and ``slot`` S for several
clusters at once in one worker, 0..3): slurmctld on ``PORT_BASE + N*PORT_STRIDE +
S*SLOT_STRIDE``, slurmd k on that + k (so at most ``SLOT_STRIDE - 1`` nodes); ClusterName
``ckw<N>`` (``ckw<N>s<S>`` for S > 0). Each cluster has its own munged socket, so clusters of
different workers (and a system munged on ``/run/munge``) never mix.

Processes: munged (run as user munge), slurmctld and every slurmd are children of this process
started in foreground mode (``-F`` / ``-D``) in their own sessions; their PIDs are kept in
``pids`` (and ``run/pids``). :meth:`SlurmCluster.stop` cancels the jobs, then ends exactly those
PIDs (SIGTERM, wait, SIGKILL) and any leftover process carrying this cluster's unique
environment marker (``CK_SLURMCLUSTER=<token>``: slurmstepd and job processes inherit it).
Nothing is killed by name. An ``atexit`` hook stops clusters a crashed session left behind.

Measured facts (Slurm 22.05.8, munge 0.5.15, Debian 12, 2 cores, this module's defaults
MessageTimeout=3, SlurmdTimeout=5):

- ``AuthInfo=socket=<our socket>`` is honoured by slurmctld, slurmd, slurmstepd and the client
  commands (sinfo, scontrol, squeue, sbatch, srun, scancel): these clusters run with no
  ``/run/munge`` at all. munged refuses a socket directory that is not executable by all
  ("Socket is inaccessible: execute permissions for all required on DIR", checked up to '/');
  a munge-owned 0755 directory holding a 0400 key works. munged logs harmless
  "Unauthorized credential for client UID=0 GID=0" info lines while Slurm runs.
- Start (munged + slurmctld + 8 slurmd) to all nodes idle: ~1.3-1.6 s (munged ~0.05 s).
- A SIGKILLed slurmd shows ``down*`` (scontrol: ``DOWN+NOT_RESPONDING``, reason
  "Not responding") after ~11-12 s with SlurmdTimeout=5; measured 6.7-11.7 s with 3, 11-13 s
  with 6, ~14-15 s with 10 (slurmctld only pings every SlurmdTimeout/3 s and marks nodes down
  from its background loop, so small values gain little). Restarted, the node is ``idle``
  again in ~0.3 s (ReturnToService=2).
- slurmctld restarted without ``-c`` keeps drains and reasons and running jobs; it answers
  ``scontrol ping`` within ~0.3 s, but nodes read ``UNKNOWN`` (``UNKNOWN+DRAIN``) for ~4 s
  until the slurmds re-register (then ``IDLE`` / ``IDLE+DRAIN``); :meth:`start_slurmctld`
  waits for that.
- HealthCheckProgram: see :data:`HEALTHCHECK_ENV_FINDING`.
- slurmctld stopped: see :data:`CTLD_DOWN_ERRORS` (exit code, time, exact text).
- Job steps: ``sbatch --wrap 'srun bash -c "echo $SLURMD_NODENAME"'`` expands the variable in
  the batch shell (every line names the batch node); escape it (``\\$SLURMD_NODENAME``) or use
  single quotes inside to get each step's node.
"""

from __future__ import annotations

import atexit
import os
import re
import secrets
import shutil
import signal
import socket
import stat
import subprocess
import tempfile
import time
import weakref
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

PORT_BASE = 26800     # below Linux's ephemeral range (32768-60999)
PORT_STRIDE = 200     # ports per pytest-xdist worker
SLOT_STRIDE = 50      # ports per cluster: slurmctld + up to 49 slurmd; 4 clusters per worker
SLOTS = PORT_STRIDE // SLOT_STRIDE
MARKER_ENV = "CK_SLURMCLUSTER"
MUNGE_USER = "munge"

SLURMCTLD = "slurmctld"
SLURMD = "slurmd"
MUNGED = "munged"
CLIENTS = ("sinfo", "scontrol", "squeue", "sbatch", "srun", "scancel")

#: Measured: slurmd runs HealthCheckProgram at its start (within ~1 s, even with a long
#: interval) and then every HealthCheckInterval seconds, once per simulated node, with an
#: environment of exactly ``SLURMD_NODENAME=<node>`` (e.g. gpu-003; a /bin/sh script also sees
#: PWD = the slurmd's cwd, here root_dir): no PATH, no SLURM_CONF.
#: So one script tells the nodes apart although every slurmd shares this machine's hostname,
#: but it must set PATH itself and pass ``SLURM_CONF`` explicitly (e.g. baked into the
#: script) before calling scontrol.
HEALTHCHECK_ENV_FINDING = ("HealthCheckProgram env == {'SLURMD_NODENAME': '<node>'} "
                           "(no PATH, no SLURM_CONF); runs at slurmd start + every interval")

#: Measured with slurmctld stopped (MessageTimeout=3): each client retries for about
#: MessageTimeout-1 s (2.0 s here; 4.0 s with MessageTimeout=5), then exits 1 with this on
#: stderr (stdout empty). ``scontrol ping`` exits 1 at once and prints on stdout
#: "Slurmctld(primary) at <host> is DOWN" and a "RESTORE SLURMCTLD DAEMON TO SERVICE" banner.
#: ``sinfo --json`` exits **0** after ~2 s with ``"errors": [{"error": "Unspecified error",
#: "errno": -1}]`` and ``"nodes": []``: check "errors", not only the exit code.
CTLD_DOWN_ERRORS: dict[str, str] = {
    "sinfo": "slurm_load_partitions: Unable to contact slurm controller (connect failure)",
    "scontrol show node": "slurm_load_node error: Unable to contact slurm controller "
                          "(connect failure)",
    "squeue": "slurm_load_jobs error: Unable to contact slurm controller (connect failure)",
    "sbatch": "sbatch: error: Batch job submission failed: Unable to contact slurm "
              "controller (connect failure)",
}
CTLD_DOWN_EXIT_CODE = 1

# Variables of an enclosing Slurm job / user defaults that would leak into our clients.
_CLIENT_ENV_PREFIXES = ("SLURM_", "SBATCH_", "SRUN_", "SALLOC_", "SQUEUE_", "SINFO_",
                        "SCONTROL_", "SCANCEL_")

_STATE_RE = re.compile(r"(?:^|\s)State=(\S+)")
_REASON_RE = re.compile(r"(?:^|\s)Reason=(.*?)\s*$")
_REASON_STAMP_RE = re.compile(r"\s*\[[^\[\]]*@[^\[\]]*\]?$")

StatePredicate = Callable[[str, str], bool]


class SlurmClusterError(RuntimeError):
    """The cluster could not be started / did not reach a state (details and log tails inside)."""


class PortsInUse(SlurmClusterError):
    """Another cluster (another pytest run on this machine?) holds this slot's ports."""


# ----------------------------------------------------------------------------- helpers
def _find(prog: str) -> str | None:
    path = shutil.which(prog)
    if path:
        return path
    for d in ("/usr/sbin", "/usr/bin", "/usr/local/sbin", "/usr/local/bin"):
        p = os.path.join(d, prog)
        if os.path.isfile(p) and os.access(p, os.X_OK):
            return p
    return None


def skip_reason() -> str | None:
    """None when a real Slurm cluster can run here; else a one-line reason (for pytest.skip)."""
    if os.name != "posix" or not hasattr(os, "geteuid"):
        return "a real Slurm cluster needs a POSIX system"
    if os.geteuid() != 0:
        return "a real Slurm cluster needs root (slurmd runs jobs, munged runs as user munge)"
    for prog in (SLURMCTLD, SLURMD, MUNGED, *CLIENTS):
        if _find(prog) is None:
            return f"{prog} not found (install slurm-wlm and munge)"
    try:
        import pwd
        pwd.getpwnam(MUNGE_USER)
    except KeyError:
        return f"no user {MUNGE_USER!r} (install munge)"
    try:
        with tempfile.TemporaryDirectory(prefix="ck-mknod-") as d:
            dev = os.path.join(d, "nvidia0")
            os.mknod(dev, stat.S_IFCHR | 0o666, os.makedev(195, 0))
    except OSError as e:
        return f"cannot create character devices for fake GPUs (mknod: {e.strerror})"
    return None


def worker_index_from_env(env: Mapping[str, str] | None = None) -> int:
    """pytest-xdist worker ``gwN`` -> N (0 without xdist)."""
    worker = (os.environ if env is None else env).get("PYTEST_XDIST_WORKER", "gw0")
    digits = worker[2:] if worker.startswith("gw") else ""
    return int(digits) if digits.isdigit() else 0


def _range(prefix: str, first: int, last: int, width: int = 0) -> str:
    """'gpu-[001-008]' / 'gpu-001'; '[26801-26808]' / '26801'."""
    if first == last:
        return f"{prefix}{first:0{width}d}"
    return f"{prefix}[{first:0{width}d}-{last:0{width}d}]"


def _tail(path: Path, lines: int = 15) -> str:
    try:
        text = path.read_text(errors="replace").splitlines()
    except OSError:
        return "(no log)"
    return "\n".join(text[-lines:]) or "(empty)"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie is not alive
        with open(f"/proc/{pid}/stat", "rb") as f:
            return f.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except (OSError, IndexError):
        return False


def _marked_pids(token: str) -> set[int]:
    """PIDs of processes whose environment holds MARKER_ENV=token (slurmstepd, job processes)."""
    needle = f"{MARKER_ENV}={token}".encode()
    out: set[int] = set()
    me = os.getpid()
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == me:
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as f:
                if needle in f.read().split(b"\0"):
                    out.add(int(entry))
        except OSError:
            continue
    return out


def ports_free(worker_index: int, slot: int, nodes: int = SLOT_STRIDE - 1) -> bool:
    """Whether the ports of (worker_index, slot) are free on 127.0.0.1 right now."""
    base = PORT_BASE + PORT_STRIDE * worker_index + SLOT_STRIDE * slot
    return all(_port_free(p) for p in range(base, base + nodes + 1))


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def parse_node_line(line: str) -> tuple[str, str]:
    """(State, Reason) from one ``scontrol -o show node`` line; the reason without its
    ``[user@time]`` stamp, '' when there is none."""
    m = _STATE_RE.search(line)
    state = m.group(1) if m else ""
    r = _REASON_RE.search(line)
    reason = _REASON_STAMP_RE.sub("", r.group(1)) if r else ""
    return state, ("" if reason == "(null)" else reason)


_LIVE: weakref.WeakSet[SlurmCluster] = weakref.WeakSet()


@atexit.register
def _stop_leftovers() -> None:  # pragma: no cover - safety net for aborted sessions
    for cluster in list(_LIVE):
        try:
            cluster.stop(timeout=3.0)
        except Exception:
            pass


# ----------------------------------------------------------------------------- the cluster
class SlurmCluster:
    """A real Slurm cluster (our munged + slurmctld + one slurmd per node) on 127.0.0.1."""

    def __init__(self, root_dir: Path | str, nodes: int = 8, partition: str = "gpu",
                 gpus_per_node: int = 8, worker_index: int = 0,
                 healthcheck_program: Path | str | None = None, healthcheck_interval: int = 0,
                 extra_conf: str = "", *, healthcheck_node_state: str = "ANY",
                 message_timeout: int = 3, slurmd_timeout: int = 5, slot: int = 0,
                 port_base: int | None = None) -> None:
        if not 1 <= nodes < SLOT_STRIDE:
            raise ValueError(f"nodes must be 1..{SLOT_STRIDE - 1}, not {nodes}")
        if not 0 <= slot < SLOTS:
            raise ValueError(f"slot must be 0..{SLOTS - 1}, not {slot}")
        if not 0 <= gpus_per_node <= 64:
            raise ValueError(f"gpus_per_node must be 0..64, not {gpus_per_node}")
        if worker_index < 0:
            raise ValueError("worker_index must be >= 0")
        self.root = Path(root_dir).resolve()
        self.node_names = [f"gpu-{i:03d}" for i in range(1, nodes + 1)]
        self.nodelist = _range("gpu-", 1, nodes, 3)
        self.partition = partition
        self.gpus_per_node = gpus_per_node
        self.worker_index = worker_index
        self.slot = slot
        self.cluster_name = f"ckw{worker_index}" + (f"s{slot}" if slot else "")
        base = (PORT_BASE + PORT_STRIDE * worker_index + SLOT_STRIDE * slot
                if port_base is None else port_base)
        if base + nodes >= 32768:
            raise ValueError(f"ports {base}-{base + nodes} reach the ephemeral range "
                             f"(worker_index {worker_index} too high; pass port_base)")
        self.slurmctld_port = base
        self.slurmd_ports = {name: base + i for i, name in enumerate(self.node_names, 1)}
        self.healthcheck_program = (str(Path(healthcheck_program).resolve())
                                    if healthcheck_program is not None else None)
        self.healthcheck_interval = healthcheck_interval
        self.healthcheck_node_state = healthcheck_node_state
        self.message_timeout = message_timeout
        self.slurmd_timeout = slurmd_timeout
        self.extra_conf = extra_conf
        self.hostname = socket.gethostname().split(".")[0]
        self.token = secrets.token_hex(8)

        self.conf_path = self.root / "slurm.conf"
        self.gres_conf_path = self.root / "gres.conf"
        self.munge_dir = self.root / "munge"
        self.munge_socket = self.munge_dir / "munge.socket"
        self.munge_key = self.munge_dir / "munge.key"
        self.dev_dir = self.root / "dev"
        self.log_dir = self.root / "log"
        self.run_dir = self.root / "run"
        self.state_dir = self.root / "state"
        self.spool_dir = self.root / "spool"
        self.tmp_dir = self.root / "tmp"
        self.out_dir = self.root / "out"     # a place for tests' `sbatch -o` files

        self._munged: subprocess.Popen[bytes] | None = None
        self._ctld: subprocess.Popen[bytes] | None = None
        self._slurmd: dict[str, subprocess.Popen[bytes]] = {}
        self._started = False
        self._ctld_starts = 0

    # ------------------------------------------------------------------ config
    def gpu_devices(self) -> list[Path]:
        return [self.dev_dir / f"nvidia{i}" for i in range(self.gpus_per_node)]

    def slurm_conf_text(self) -> str:
        r = self.root
        ports = _range("", self.slurmd_ports[self.node_names[0]],
                       self.slurmd_ports[self.node_names[-1]])
        gres = f" Gres=gpu:h100:{self.gpus_per_node}" if self.gpus_per_node else ""
        lines = [
            f"ClusterName={self.cluster_name}",
            f"SlurmctldHost={self.hostname}(127.0.0.1)",
            f"SlurmctldPort={self.slurmctld_port}",
            f"SlurmdPort={self.slurmd_ports[self.node_names[0]]}",
            "SlurmUser=root",
            "SlurmdUser=root",
            "AuthType=auth/munge",
            f"AuthInfo=socket={self.munge_socket}",
            "CredType=cred/munge",
            "ProctrackType=proctrack/linuxproc",
            "TaskPlugin=task/none",
            "JobAcctGatherType=jobacct_gather/none",
            "AccountingStorageType=accounting_storage/none",
            "JobCompType=jobcomp/none",
            "SwitchType=switch/none",
            "MpiDefault=none",
            "SlurmdParameters=config_overrides",
            "CommunicationParameters=NoInAddrAny",
            "MailProg=/bin/true",
            "ReturnToService=2",
            "SchedulerType=sched/backfill",
            "SelectType=select/cons_tres",
            "SelectTypeParameters=CR_Core",
            "GresTypes=gpu",
            f"StateSaveLocation={r / 'state'}",
            f"SlurmdSpoolDir={r / 'spool'}/%n",
            f"SlurmctldPidFile={r / 'run'}/slurmctld.pid",
            f"SlurmdPidFile={r / 'run'}/slurmd-%n.pid",
            f"SlurmctldLogFile={r / 'log'}/slurmctld.log",
            f"SlurmdLogFile={r / 'log'}/slurmd-%n.log",
            "SlurmctldDebug=info",
            "SlurmdDebug=info",
            f"TmpFS={r / 'tmp'}",
            f"MessageTimeout={self.message_timeout}",
            f"SlurmdTimeout={self.slurmd_timeout}",
            "SlurmctldTimeout=10",
            "InactiveLimit=10",
            "KillWait=2",
            "MinJobAge=60",
            "UnkillableStepTimeout=20",
        ]
        if self.healthcheck_program:
            lines += [f"HealthCheckProgram={self.healthcheck_program}",
                      f"HealthCheckInterval={self.healthcheck_interval}",
                      f"HealthCheckNodeState={self.healthcheck_node_state}"]
        if self.extra_conf.strip():
            lines += ["# extra_conf", self.extra_conf.strip()]
        lines += [
            f"NodeName={self.nodelist} NodeAddr=127.0.0.1 Port={ports} CPUs=16 "
            f"RealMemory=64000{gres} State=UNKNOWN",
            f"PartitionName={self.partition} Nodes=ALL Default=YES MaxTime=INFINITE State=UP",
        ]
        return "\n".join(lines) + "\n"

    def gres_conf_text(self) -> str:
        if not self.gpus_per_node:
            return "AutoDetect=off\n"
        last = self.gpus_per_node - 1
        files = (f"{self.dev_dir}/nvidia[0-{last}]" if last else f"{self.dev_dir}/nvidia0")
        return (f"AutoDetect=off\n"
                f"NodeName={self.nodelist} Name=gpu Type=h100 File={files}\n")

    def _prepare(self) -> None:
        import pwd
        mu = pwd.getpwnam(MUNGE_USER)
        self.root.mkdir(parents=True, exist_ok=True)
        os.chmod(self.root, 0o755)
        for p in [self.root, *self.root.parents]:  # munged insists on o+x up to '/'
            if not os.stat(p).st_mode & stat.S_IXOTH:
                raise SlurmClusterError(
                    f"{p} is not traversable by user {MUNGE_USER} (mode "
                    f"{stat.filemode(os.stat(p).st_mode)}): put the cluster under a directory "
                    "such as tempfile.mkdtemp() (pytest's tmp_path is under a 0700 directory)")
        if len(str(self.munge_socket)) > 100:
            raise SlurmClusterError(f"root_dir too long for a unix socket path: {self.root}")
        for d in (self.log_dir, self.run_dir, self.state_dir, self.spool_dir, self.tmp_dir,
                  self.dev_dir, self.out_dir):
            d.mkdir(exist_ok=True)
        os.chmod(self.tmp_dir, 0o1777)
        # munge: own directory (munge:munge 0755: the socket needs o+x, the key dir must not be
        # group/other-writable), own 1024-byte key (0400).
        self.munge_dir.mkdir(exist_ok=True)
        os.chown(self.munge_dir, mu.pw_uid, mu.pw_gid)
        os.chmod(self.munge_dir, 0o755)
        if not self.munge_key.exists():
            fd = os.open(self.munge_key, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o400)
            with os.fdopen(fd, "wb") as f:
                f.write(secrets.token_bytes(1024))
            os.chown(self.munge_key, mu.pw_uid, mu.pw_gid)
            os.chmod(self.munge_key, 0o400)
        for i, dev in enumerate(self.gpu_devices()):
            if not dev.exists():
                os.mknod(dev, stat.S_IFCHR | 0o666, os.makedev(195, i))
            os.chmod(dev, 0o666)
        for name in self.node_names:
            (self.spool_dir / name).mkdir(exist_ok=True)
        self.conf_path.write_text(self.slurm_conf_text())
        self.gres_conf_path.write_text(self.gres_conf_text())

    # ------------------------------------------------------------------ environment
    @property
    def env(self) -> dict[str, str]:
        """Variables to merge into os.environ for client commands (sinfo, sbatch, srun, ...).

        ``SLURM_CONF`` (the clients read ``AuthInfo=socket=`` from it) and this cluster's
        marker (jobs inherit it, so :meth:`stop` can find what they leave running).
        """
        return {"SLURM_CONF": str(self.conf_path), MARKER_ENV: self.token}

    def client_environ(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        """os.environ without Slurm client variables (SLURM_*, SBATCH_*, SQUEUE_* ...) + env."""
        base = {k: v for k, v in os.environ.items()
                if not k.startswith(_CLIENT_ENV_PREFIXES)}
        base.update(self.env)
        if extra:
            base.update(extra)
        return base

    def run(self, argv: Sequence[str], timeout: float = 30.0, *, check: bool = False,
            input: str | None = None, env: Mapping[str, str] | None = None,
            cwd: Path | str | None = None) -> subprocess.CompletedProcess[str]:
        """Run a client command against this cluster (text mode, output captured)."""
        return subprocess.run(list(argv), env=self.client_environ(env), capture_output=True,
                              text=True, timeout=timeout, check=check, input=input,
                              stdin=None if input is not None else subprocess.DEVNULL,
                              cwd=str(cwd or self.out_dir))

    # ------------------------------------------------------------------ processes
    @property
    def pids(self) -> dict[str, int]:
        """Live daemons: {'munged': pid, 'slurmctld': pid, 'gpu-001': pid, ...}."""
        out: dict[str, int] = {}
        if self._munged is not None and self._munged.poll() is None:
            out["munged"] = self._munged.pid
        if self._ctld is not None and self._ctld.poll() is None:
            out["slurmctld"] = self._ctld.pid
        for name, p in self._slurmd.items():
            if p.poll() is None:
                out[name] = p.pid
        return out

    def _write_pids(self) -> None:
        try:
            (self.run_dir / "pids").write_text(
                "".join(f"{k} {v}\n" for k, v in self.pids.items()))
        except OSError:
            pass

    def _spawn(self, argv: list[str], log: Path, **kw: object) -> subprocess.Popen[bytes]:
        env = {"PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
               "LANG": "C", "SLURM_CONF": str(self.conf_path), MARKER_ENV: self.token,
               "TMPDIR": str(self.tmp_dir)}
        with open(log, "ab") as out:
            p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out, stderr=out,
                                 start_new_session=True, env=env, cwd=str(self.root),
                                 **kw)  # type: ignore[call-overload]
        assert isinstance(p, subprocess.Popen)
        return p

    @staticmethod
    def _end(p: subprocess.Popen[bytes] | None, timeout: float) -> None:
        """SIGTERM that PID, wait up to timeout, then SIGKILL (and reap)."""
        if p is None or p.poll() is not None:
            return
        try:
            p.send_signal(signal.SIGTERM)
            p.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait(timeout=10)
        except ProcessLookupError:
            pass

    def _start_munged(self) -> None:
        if self._munged is not None and self._munged.poll() is None:
            return
        if self.munge_socket.exists():
            self.munge_socket.unlink()
        argv = [_find(MUNGED) or MUNGED, "-F", f"--socket={self.munge_socket}",
                f"--key-file={self.munge_key}", f"--pid-file={self.munge_dir}/munged.pid",
                f"--log-file={self.munge_dir}/munged.log",
                f"--seed-file={self.munge_dir}/munged.seed", "--num-threads=4"]
        self._munged = self._spawn(argv, self.log_dir / "munged.out", user=MUNGE_USER,
                                   group=MUNGE_USER, extra_groups=[])
        deadline = time.monotonic() + 10
        while not self.munge_socket.exists():
            if self._munged.poll() is not None or time.monotonic() > deadline:
                raise SlurmClusterError("munged did not start:\n"
                                        + _tail(self.log_dir / "munged.out"))
            time.sleep(0.02)

    def _launch_ctld(self) -> subprocess.Popen[bytes]:
        self._ctld = ctld = self._spawn([_find(SLURMCTLD) or SLURMCTLD, "-D", "-f",
                                         str(self.conf_path)], self.log_dir / "slurmctld.out")
        self._ctld_starts += 1
        self._write_pids()
        return ctld

    def _launch_slurmd(self, node: str) -> None:
        self._slurmd[node] = self._spawn(
            [_find(SLURMD) or SLURMD, "-D", "-f", str(self.conf_path), "-N", node],
            self.log_dir / f"slurmd-{node}.out")
        self._write_pids()

    def start(self, timeout: float = 30.0) -> SlurmCluster:
        """Write the config, start munged, slurmctld and every slurmd; wait for all idle."""
        if self._started:
            return self
        reason = skip_reason()
        if reason:
            raise SlurmClusterError(reason)
        busy = [p for p in [self.slurmctld_port, *self.slurmd_ports.values()]
                if not _port_free(p)]
        if busy:
            raise PortsInUse(f"ports in use on 127.0.0.1: {busy} (another cluster with "
                                    f"worker_index={self.worker_index} slot={self.slot}?)")
        self._prepare()
        self._started = True
        _LIVE.add(self)
        try:
            self._start_munged()
            self._launch_ctld()
            for name in self.node_names:
                self._launch_slurmd(name)
            self.wait_ready(timeout)
        except BaseException:
            self.stop()
            raise
        return self

    @property
    def running(self) -> bool:
        """Started and not stopped (individual daemons may have been killed)."""
        return self._started

    def __enter__(self) -> SlurmCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self, timeout: float = 10.0) -> None:
        """Cancel jobs, then end our daemons by PID (SIGTERM, wait, SIGKILL), then leftovers
        that carry our marker (slurmstepd, job processes), then munged. Idempotent."""
        if not self._started:
            return
        try:
            if self._ctld is not None and self._ctld.poll() is None:
                self.cancel_all_jobs(wait=3.0)
        except Exception:
            pass
        for p in self._slurmd.values():
            if p.poll() is None:
                try:
                    p.send_signal(signal.SIGTERM)
                except ProcessLookupError:
                    pass
        self._end(self._ctld, timeout)
        for p in self._slurmd.values():
            self._end(p, timeout)
        daemons = {self._munged.pid} if self._munged is not None else set()
        for sig in (signal.SIGTERM, signal.SIGKILL):
            left = _marked_pids(self.token) - daemons
            if not left:
                break
            for pid in left:
                try:
                    os.kill(pid, sig)
                except ProcessLookupError:
                    pass
            deadline = time.monotonic() + 2
            while time.monotonic() < deadline and any(_alive(q) for q in left):
                time.sleep(0.05)
        self._end(self._munged, timeout)
        self._started = False
        _LIVE.discard(self)
        self._write_pids()

    # ------------------------------------------------------------------ waiting / state
    def log_tails(self, lines: int = 15) -> str:
        parts = []
        for f in sorted(self.log_dir.glob("*")):
            # slurmd/slurmctld -D write the same lines to <name>.out and <name>.log
            if f.suffix == ".out" and f.with_suffix(".log").exists():
                continue
            if f.stat().st_size:
                parts.append(f"--- {f.name}\n{_tail(f, lines)}")
        return "\n".join(parts)

    def _diagnose(self) -> str:
        try:
            cp = self.run(["sinfo", "-R"], timeout=15)
            reasons = (cp.stdout + cp.stderr).strip()
        except subprocess.TimeoutExpired:
            reasons = "(sinfo -R timed out)"
        try:
            cp = self.run(["sinfo", "-N", "-h", "-o", "%N %t"], timeout=15)
            states = (cp.stdout + cp.stderr).strip()
        except subprocess.TimeoutExpired:
            states = "(sinfo -N timed out)"
        return (f"sinfo -R:\n{reasons}\nsinfo -N:\n{states}\npids: {self.pids}\n"
                f"{self.log_tails()}")

    def idle_count(self) -> int:
        """Nodes that sinfo reports idle in our partition (0 when sinfo fails)."""
        cp = self.run(["sinfo", "-h", "-p", self.partition, "-t", "idle", "-o", "%D"],
                      timeout=max(15, 3 * self.message_timeout))
        if cp.returncode != 0:
            return 0
        return sum(int(x) for x in cp.stdout.split() if x.isdigit())

    def wait_ready(self, timeout: float = 30.0) -> float:
        """Poll until every node is idle; returns the seconds waited. SlurmClusterError with
        `sinfo -R` and log tails on timeout."""
        t0 = time.monotonic()
        deadline = t0 + timeout
        while True:
            if self.idle_count() == len(self.node_names):
                return time.monotonic() - t0
            if self._ctld is None or self._ctld.poll() is not None:
                raise SlurmClusterError(f"slurmctld exited:\n{self._diagnose()}")
            if time.monotonic() > deadline:
                raise SlurmClusterError(
                    f"not all {len(self.node_names)} nodes idle after {timeout:.0f} s:\n"
                    f"{self._diagnose()}")
            time.sleep(0.2)

    def _check_node(self, node: str) -> None:
        if node not in self.slurmd_ports:
            raise ValueError(f"unknown node {node!r}; one of {self.nodelist}")

    def node_state(self, node: str) -> tuple[str, str]:
        """(State, Reason) from ``scontrol -o show node NODE``, e.g. ('IDLE+DRAIN', 'maint')
        or ('DOWN+NOT_RESPONDING', 'Not responding'); reason '' when none."""
        self._check_node(node)
        cp = self.run(["scontrol", "-o", "show", "node", node],
                      timeout=max(15, 3 * self.message_timeout))
        if cp.returncode != 0:
            raise SlurmClusterError(f"scontrol show node {node} failed "
                                    f"(exit {cp.returncode}): {cp.stderr.strip()}")
        return parse_node_line(cp.stdout.strip().splitlines()[0] if cp.stdout.strip() else "")

    def node_states(self) -> dict[str, tuple[str, str]]:
        """{node: (State, Reason)} for every node, from one ``scontrol -o show node``
        ({} when scontrol fails, e.g. slurmctld down)."""
        cp = self.run(["scontrol", "-o", "show", "node"],
                      timeout=max(15, 3 * self.message_timeout))
        out: dict[str, tuple[str, str]] = {}
        if cp.returncode != 0:
            return out
        for line in cp.stdout.splitlines():
            m = re.match(r"NodeName=(\S+)", line)
            if m:
                out[m.group(1)] = parse_node_line(line)
        return out

    def sinfo_state(self, node: str) -> str:
        """sinfo's compact state of a node (``idle``, ``down*``, ``drain``, ``alloc``...)."""
        self._check_node(node)
        cp = self.run(["sinfo", "-h", "-N", "-n", node, "-p", self.partition, "-o", "%t"],
                      timeout=max(15, 3 * self.message_timeout))
        return cp.stdout.strip().splitlines()[0] if cp.stdout.strip() else ""

    def wait_node_state(self, node: str, want: str | StatePredicate,
                        timeout: float = 30.0) -> tuple[str, str]:
        """Poll node_state(node) until `want` holds; returns (state, reason).

        `want`: a predicate ``f(state, reason) -> bool``, or a substring matched
        case-insensitively against scontrol's State ("DRAIN", "DOWN", "NOT_RESPONDING") or,
        when it ends in '*' or is lower case like sinfo's states ("down*", "idle"), equal to
        sinfo's compact state.
        """
        t0 = time.monotonic()
        last: tuple[str, str] = ("", "")
        while True:
            if callable(want):
                last = self.node_state(node)
                ok = want(*last)
            elif want.endswith("*") or want.islower():
                s = self.sinfo_state(node)
                last = (s, "")
                ok = s == want
                if ok:
                    last = (s, self.node_state(node)[1])
            else:
                last = self.node_state(node)
                ok = want.upper() in last[0].upper()
            if ok:
                return last
            if time.monotonic() - t0 > timeout:
                raise SlurmClusterError(f"{node} did not reach {want!r} in {timeout:.0f} s "
                                        f"(last: {last}):\n{self._diagnose()}")
            time.sleep(0.25)

    # ------------------------------------------------------------------ failures
    def kill_slurmd(self, node: str) -> None:
        """SIGKILL that node's slurmd (by its PID): slurmctld sees it not responding."""
        self._check_node(node)
        p = self._slurmd.get(node)
        if p is not None and p.poll() is None:
            p.kill()
            p.wait(timeout=10)
        self._write_pids()

    def stop_slurmd(self, node: str, timeout: float = 10.0) -> None:
        """SIGTERM that node's slurmd (by PID), SIGKILL after timeout."""
        self._check_node(node)
        self._end(self._slurmd.get(node), timeout)
        self._write_pids()

    def start_slurmd(self, node: str) -> None:
        """Start that node's slurmd again (no-op while it runs). It registers within ~1 s;
        use wait_node_state(node, 'idle') to wait for it."""
        self._check_node(node)
        p = self._slurmd.get(node)
        if p is not None and p.poll() is None:
            return
        pidfile = self.run_dir / f"slurmd-{node}.pid"
        if pidfile.exists():
            pidfile.unlink()
        self._launch_slurmd(node)

    def stop_slurmctld(self, timeout: float = 10.0) -> None:
        """SIGTERM slurmctld (by PID; it saves its state), SIGKILL after timeout."""
        self._end(self._ctld, timeout)
        self._write_pids()

    def start_slurmctld(self, timeout: float = 30.0) -> None:
        """Start slurmctld again, keeping its saved state (drains, reasons, jobs survive):
        ``slurmctld -D -f CONF`` without -c. Waits until it answers ``scontrol ping`` and every
        node whose slurmd runs has re-registered (no longer UNKNOWN: ~4 s after a restart)."""
        if self._ctld is not None and self._ctld.poll() is None:
            return
        ctld = self._launch_ctld()
        deadline = time.monotonic() + timeout
        while True:
            cp = self.run(["scontrol", "ping"], timeout=max(15, 3 * self.message_timeout))
            if cp.returncode == 0 and "UP" in cp.stdout:
                running = [n for n, p in self._slurmd.items() if p.poll() is None]
                states = self.node_states()
                if all(n in states and not states[n][0].startswith("UNKNOWN")
                       for n in running):
                    return
            if ctld.poll() is not None or time.monotonic() > deadline:
                raise SlurmClusterError(f"slurmctld did not come back:\n{self._diagnose()}")
            time.sleep(0.2)

    # ------------------------------------------------------------------ jobs
    def job_ids(self) -> list[str]:
        cp = self.run(["squeue", "-h", "-o", "%A"], timeout=max(15, 3 * self.message_timeout))
        return cp.stdout.split() if cp.returncode == 0 else []

    def cancel_all_jobs(self, wait: float = 15.0) -> None:
        ids = self.job_ids()
        if not ids:
            return
        self.run(["scancel", *ids], timeout=max(15, 3 * self.message_timeout))
        deadline = time.monotonic() + wait
        while self.job_ids() and time.monotonic() < deadline:
            time.sleep(0.2)

    def sbatch(self, args: Sequence[str], timeout: float = 30.0) -> str:
        """``sbatch --parsable ARGS`` -> job id (SlurmClusterError on failure). Give ``-o``."""
        cp = self.run(["sbatch", "--parsable", *args], timeout=timeout)
        if cp.returncode != 0:
            raise SlurmClusterError(f"sbatch failed (exit {cp.returncode}): "
                                    f"{cp.stderr.strip()}")
        return cp.stdout.strip().split(";")[0]

    def job_state(self, job_id: str) -> str:
        """The job's state from ``scontrol show job`` (COMPLETED, FAILED, ...), '' if unknown."""
        cp = self.run(["scontrol", "-o", "show", "job", job_id],
                      timeout=max(15, 3 * self.message_timeout))
        m = re.search(r"\bJobState=(\S+)", cp.stdout)
        return m.group(1) if m else ""

    def wait_job(self, job_id: str, timeout: float = 30.0) -> str:
        """Poll until the job has left squeue; returns its final state (e.g. COMPLETED)."""
        deadline = time.monotonic() + timeout
        while True:
            cp = self.run(["squeue", "-h", "-j", job_id, "-o", "%T"],
                          timeout=max(15, 3 * self.message_timeout))
            if cp.returncode == 0 and not cp.stdout.strip():
                return self.job_state(job_id)
            if time.monotonic() > deadline:
                raise SlurmClusterError(f"job {job_id} still {cp.stdout.strip() or '?'} after "
                                        f"{timeout:.0f} s:\n{self._diagnose()}")
            time.sleep(0.2)

    # ------------------------------------------------------------------ reset
    def reset(self, timeout: float = 30.0) -> None:
        """Back to the start: slurmctld and every slurmd running, no jobs, every node idle
        with no reason (resumes drained/down nodes). For sharing one cluster between tests."""
        if not self._started:
            self.start(timeout=timeout)
            return
        t0 = time.monotonic()
        self._start_munged()
        if self._ctld is None or self._ctld.poll() is not None:
            self.start_slurmctld(timeout=timeout)
        for node in self.node_names:
            self.start_slurmd(node)
        self.cancel_all_jobs(wait=timeout / 2)
        deadline = t0 + timeout
        while True:
            states = self.node_states()
            bad = [(n, *states.get(n, ("?", "?"))) for n in self.node_names
                   if states.get(n) != ("IDLE", "")]
            if not bad:
                return
            for node, state, reason in bad:
                if any(s in state for s in ("DRAIN", "DOWN", "FAIL")) or (
                        reason and "NOT_RESPONDING" not in state):
                    self.run(["scontrol", "update", f"nodename={node}", "state=resume"],
                             timeout=max(15, 3 * self.message_timeout))
            if time.monotonic() > deadline:
                raise SlurmClusterError(f"reset: nodes not idle after {timeout:.0f} s: {bad}\n"
                                        f"{self._diagnose()}")
            time.sleep(0.3)
