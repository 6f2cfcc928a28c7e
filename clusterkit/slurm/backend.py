"""The one interface to Slurm, and its implementations.

::

    SlurmBackend (Protocol)
        version() -> str                         "22.05.8"
        nodes(partition=None, names=None) -> list[SlurmNode]
        partitions() -> list[str]
        drain(names, reason)                     scontrol update ... State=DRAIN Reason=...
        resume(names)                            scontrol update ... State=RESUME
        submit(script, args=()) -> job id        sbatch --parsable (the script on stdin)
        jobs(ids) -> {id: JobInfo}               ONE squeue call for every id (polled in batches)
        wait(ids, timeout, poll) -> {id: JobInfo}
        cancel(ids)
        reservation(name) / create_reservation / update_reservation / delete_reservation

    CliBackend       Slurm's commands: ``sinfo --json`` and ``squeue --json`` where the version
                     has them (20.11+), ``scontrol -o show node`` otherwise; every call bounded by a
                     timeout, argv lists only (a reason is one argv item, never shell text)
    PyslurmBackend   node queries and updates through pyslurm, the rest through the CLI; used
                     only when pyslurm imports and was built for the running Slurm (PyPI's pyslurm
                     needs Slurm 25.11 exactly)

Errors: :class:`SlurmError` (exit 3: Slurm could not be asked or refused; nothing was changed by
the failing call), :class:`SlurmUnavailable` (slurmctld does not answer), ``UsageError`` (exit 2)
for an unknown partition.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from dataclasses import dataclass, field
from typing import Iterable, Mapping, Optional, Protocol, Sequence

from clusterkit.errors import ClusterkitError, UsageError

DEFAULT_TIMEOUT = 30.0
_SLURM_BIN_DIRS = ("/usr/bin", "/usr/local/bin", "/opt/slurm/bin", "/usr/sbin")
#: Slurm job states after which a job never runs again
FINAL_JOB_STATES = frozenset({"COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL", "PREEMPTED",
                              "OUT_OF_MEMORY", "BOOT_FAIL", "DEADLINE", "REVOKED", "SPECIAL_EXIT"})


class SlurmError(ClusterkitError):
    """Slurm could not be asked, or refused what was asked (exit 3: nothing was changed)."""

    exit_code = 3


class SlurmUnavailable(SlurmError):
    """slurmctld does not answer (down, unreachable, or munge broken)."""


_UNAVAILABLE = re.compile(r"unable to contact slurm controller|connection refused|"
                          r"zero bytes were transmitted|communication connection failure|"
                          r"munge|authentication|socket timed out", re.I)


@dataclass(frozen=True)
class SlurmNode:
    """One node as Slurm sees it."""

    name: str
    state: Optional[str]  # base state, lowercased: idle, allocated, mixed, down, ...
    flags: tuple[str, ...] = ()  # DRAIN, NOT_RESPONDING, MAINTENANCE, RESERVED, ...
    reason: Optional[str] = None
    reason_user: Optional[str] = None
    partitions: tuple[str, ...] = ()
    gres: Optional[str] = None

    @property
    def drained(self) -> bool:
        """Drained or draining (takes no new jobs)."""
        return "DRAIN" in self.flags

    @property
    def down(self) -> bool:
        return self.state == "down" or "NOT_RESPONDING" in self.flags

    @property
    def state_text(self) -> str:
        """sinfo's way of writing it: ``idle``, ``idle+drain``, ``down*``."""
        base = self.state or "unknown"
        shown = [f.lower() for f in self.flags if f not in ("NOT_RESPONDING",)]
        star = "*" if "NOT_RESPONDING" in self.flags else ""
        return "+".join([base + star, *shown])


@dataclass
class JobInfo:
    job_id: str
    state: str  # PENDING, RUNNING, COMPLETED, FAILED, ... ; GONE when Slurm no longer knows it
    exit_code: Optional[int] = None
    nodes: Optional[str] = None
    reason: Optional[str] = None

    @property
    def finished(self) -> bool:
        return self.state in FINAL_JOB_STATES or self.state == "GONE"


@dataclass(frozen=True)
class Reservation:
    name: str
    nodes: tuple[str, ...]
    flags: tuple[str, ...] = ()


class SlurmBackend(Protocol):
    name: str

    def version(self) -> str: ...

    def nodes(self, partition: Optional[str] = None, names: Optional[Sequence[str]] = None) -> list[SlurmNode]: ...

    def partitions(self) -> list[str]: ...

    def topology(self) -> Optional[str]: ...

    def drain(self, names: Sequence[str], reason: str) -> None: ...

    def resume(self, names: Sequence[str]) -> None: ...

    def submit(self, script: str, args: Sequence[str] = ()) -> str: ...

    def jobs(self, ids: Sequence[str]) -> dict[str, JobInfo]: ...

    def wait(self, ids: Sequence[str], *, timeout: float, poll: float = 1.0) -> dict[str, JobInfo]: ...

    def cancel(self, ids: Sequence[str]) -> None: ...

    def reservation(self, name: str) -> Optional[Reservation]: ...

    def create_reservation(self, name: str, nodes: Sequence[str], flags: Sequence[str] = ()) -> None: ...

    def update_reservation(self, name: str, nodes: Sequence[str]) -> None: ...

    def delete_reservation(self, name: str) -> None: ...


def _fold(names: Iterable[str]) -> str:
    from clusterkit.hostlist import fold

    return fold(list(names))


@dataclass
class CliBackend:
    """Slurm through its commands. ``env`` is added to the environment of every command
    (``SLURM_CONF`` for a test cluster); ``bindir`` where the commands are (default: PATH)."""

    env: Mapping[str, str] = field(default_factory=dict)
    timeout: float = DEFAULT_TIMEOUT
    bindir: Optional[str] = None
    name: str = "cli"
    _json_nodes: Optional[bool] = field(default=None, repr=False)

    # ------------------------------------------------------------------ plumbing
    def _cmd(self, tool: str) -> str:
        if self.bindir:
            return os.path.join(self.bindir, tool)
        # slurmd runs a HealthCheckProgram with no PATH at all: look where Slurm installs too
        found = shutil.which(tool) or shutil.which(tool, path=os.pathsep.join(_SLURM_BIN_DIRS))
        if found is None:
            raise SlurmError(f"{tool} not found on PATH: run this where Slurm's commands are installed "
                             "(a login or controller node)")
        return found

    def available(self, tool: str = "scontrol") -> bool:
        """Whether Slurm's ``tool`` can be found (PATH, then Slurm's usual directories)."""
        try:
            self._cmd(tool)
        except SlurmError:
            return False
        return True

    def run(self, argv: list[str], *, stdin: Optional[bytes] = None, check: bool = True,
            timeout: Optional[float] = None) -> tuple[int, str, str]:
        """Run one Slurm command: (rc, stdout, stderr). A non-zero exit raises SlurmError (or
        SlurmUnavailable when slurmctld did not answer) when ``check``."""
        from clusterkit.procs import ProcessGroup

        argv = [self._cmd(argv[0]), *argv[1:]]
        env = {**os.environ, **self.env}
        limit = self.timeout if timeout is None else timeout
        try:
            res = ProcessGroup().run(argv, timeout=limit, stdin=stdin, env=env)
        except OSError as e:
            raise SlurmError(f"cannot run {os.path.basename(argv[0])}: {e.strerror or e}") from None
        tool = os.path.basename(argv[0])
        if res.timed_out:
            raise SlurmUnavailable(f"{tool} did not answer within {limit:g}s: is slurmctld up?")
        if check and res.rc != 0:
            text = " ".join((res.stderr or res.stdout).split())[:300] or f"exit {res.rc}"
            if _UNAVAILABLE.search(text):
                raise SlurmUnavailable(f"Slurm is not reachable ({tool}: {text}); nothing was changed")
            raise SlurmError(f"{tool}: {text}")
        return res.rc, res.stdout, res.stderr

    # ------------------------------------------------------------------ queries
    def version(self) -> str:
        _, out, _ = self.run(["sinfo", "-V"])
        m = re.search(r"(\d+\.\d+(?:\.\d+)?)", out)
        return m.group(1) if m else out.strip()

    def nodes(self, partition: Optional[str] = None, names: Optional[Sequence[str]] = None) -> list[SlurmNode]:
        """Nodes with their state and reason; of ``partition`` and/or ``names`` when given. An
        unknown partition is a UsageError naming the known ones."""
        nodes = self._nodes_json() if self._json_nodes is not False else None
        if nodes is None:
            nodes = self._nodes_scontrol(names)
        if names is not None:
            wanted = set(names)
            nodes = [n for n in nodes if n.name in wanted]
        if partition is not None:
            inpart = [n for n in nodes if partition in n.partitions]
            if not inpart and names is None:
                known = sorted({p for n in nodes for p in n.partitions})
                raise UsageError(f"partition {partition!r} has no nodes or does not exist; partitions: "
                                 f"{', '.join(known) or 'none'}")
            nodes = inpart
        from clusterkit.hostlist import natural_key

        return sorted(nodes, key=lambda n: natural_key(n.name))

    def _nodes_json(self) -> Optional[list[SlurmNode]]:
        from clusterkit.parsers.slurm import parse_sinfo

        rc, out, err = self.run(["sinfo", "--json"], check=False)
        if rc != 0:
            text = " ".join((err or out).split())
            if "unrecognized option" in text or "invalid option" in text:
                self._json_nodes = False  # an older Slurm: scontrol from now on
                return None
            self.run(["sinfo", "--json"])  # raises the right error
        try:
            parsed = parse_sinfo(out)
        except ClusterkitError as e:
            raise SlurmError(f"sinfo --json: unreadable output: {e}") from None
        if parsed.errors and not parsed.rows:
            # sinfo --json exits 0 with {"errors": [{"error": "Unspecified error"}]} when slurmctld
            # is down: scontrol says what really happened
            return None
        self._json_nodes = True
        found: dict[str, SlurmNode] = {}
        for row in parsed.rows:
            for name in row.node_names:
                found[name] = SlurmNode(name=name, state=row.state, flags=tuple(row.state_flags),
                                        reason=row.reason, reason_user=row.user,
                                        partitions=tuple(row.partitions),
                                        gres=row.fields.get("gres") if isinstance(row.fields.get("gres"), str) else None)
        return list(found.values())

    def _nodes_scontrol(self, names: Optional[Sequence[str]] = None) -> list[SlurmNode]:
        from clusterkit.parsers.slurm import parse_scontrol_node

        argv = ["scontrol", "-o", "show", "node"]
        if names:
            argv.append(_fold(names))
        rc, out, err = self.run(argv, check=False)
        if rc != 0 and not out.strip():
            self.run(argv)  # raises
        parsed = parse_scontrol_node(out)
        return [SlurmNode(name=n.name, state=n.state, flags=tuple(n.state_flags), reason=n.reason,
                          reason_user=n.reason_user, partitions=tuple(n.partitions), gres=n.gres)
                for n in parsed.nodes]

    def node(self, name: str) -> Optional[SlurmNode]:
        """One node through ``scontrol -o show node NAME`` (cheap: for the health check)."""
        found = self._nodes_scontrol([name])
        return next((n for n in found if n.name == name), None)

    def partitions(self) -> list[str]:
        return sorted({p for n in self.nodes() for p in n.partitions})

    def topology(self) -> Optional[str]:
        """``scontrol show topology`` (switch -> nodes, as topology.conf gives it), or None when
        the cluster has no tree topology (the plugin is not ``topology/tree``)."""
        rc, out, err = self.run(["scontrol", "show", "topology"], check=False)
        if rc != 0:
            text = " ".join((err or out).split())[:300]
            if _UNAVAILABLE.search(text):
                raise SlurmUnavailable(f"Slurm is not reachable (scontrol: {text}); nothing was changed")
            return None
        return out if "SwitchName=" in out else None

    # ------------------------------------------------------------------ node updates
    def drain(self, names: Sequence[str], reason: str) -> None:
        if names:
            self.run(["scontrol", "update", f"NodeName={_fold(names)}", "State=DRAIN", f"Reason={reason}"])

    def resume(self, names: Sequence[str]) -> None:
        if names:
            self.run(["scontrol", "update", f"NodeName={_fold(names)}", "State=RESUME"])

    # ------------------------------------------------------------------ jobs
    def submit(self, script: str, args: Sequence[str] = ()) -> str:
        """Submit a batch script (given as text, on sbatch's stdin); the job id."""
        _, out, _ = self.run(["sbatch", "--parsable", *args], stdin=script.encode())
        job = out.strip().split(";", 1)[0]
        if not job.isdigit():
            raise SlurmError(f"sbatch: unexpected answer {out.strip()[:100]!r}")
        return job

    def jobs(self, ids: Sequence[str]) -> dict[str, JobInfo]:
        """Every job's state in ONE call. A job Slurm has forgotten (past MinJobAge) is GONE."""
        if not ids:
            return {}
        rc, out, err = self.run(["squeue", "--json", "--states=all", f"--jobs={','.join(ids)}"], check=False)
        if rc != 0:
            text = " ".join((err or out).split())
            if "invalid job id" in text.lower():
                return {i: JobInfo(job_id=i, state="GONE") for i in ids}
            self.run(["squeue", "--json", "--states=all", f"--jobs={','.join(ids)}"])
        try:
            doc = json.loads(out)
        except ValueError:
            raise SlurmError(f"squeue --json: unreadable output: {out[:100]!r}") from None
        found: dict[str, JobInfo] = {}
        for job in doc.get("jobs") or []:
            if not isinstance(job, dict):
                continue
            jid = str(job.get("job_id"))
            state = job.get("job_state")
            if isinstance(state, list):  # Slurm >= 23.02
                state = state[0] if state else None
            found[jid] = JobInfo(job_id=jid, state=str(state or "UNKNOWN").upper(),
                                 exit_code=_exit_code(job.get("exit_code")),
                                 nodes=job.get("nodes") if isinstance(job.get("nodes"), str) else None,
                                 reason=job.get("state_reason") if isinstance(job.get("state_reason"), str) else None)
        return {i: found.get(i, JobInfo(job_id=i, state="GONE")) for i in ids}

    def wait(self, ids: Sequence[str], *, timeout: float, poll: float = 1.0) -> dict[str, JobInfo]:
        """Poll every job (one squeue per round) until all are finished or ``timeout`` passes;
        the last states either way."""
        deadline = time.monotonic() + timeout
        states = self.jobs(ids)
        while not all(j.finished for j in states.values()) and time.monotonic() < deadline:
            time.sleep(min(poll, max(0.0, deadline - time.monotonic())))
            states = self.jobs(ids)
        return states

    def cancel(self, ids: Sequence[str]) -> None:
        if ids:
            self.run(["scancel", *ids])

    # ------------------------------------------------------------------ reservations
    def reservation(self, name: str) -> Optional[Reservation]:
        rc, out, err = self.run(["scontrol", "-o", "show", "reservation", name], check=False)
        text = " ".join((err or out).split())
        if rc != 0 or "not found" in text.lower() or "No reservations" in text:
            if rc != 0 and _UNAVAILABLE.search(text):
                self.run(["scontrol", "-o", "show", "reservation", name])
            return None
        fields = dict(kv.split("=", 1) for kv in out.split() if "=" in kv)
        nodes_expr = fields.get("Nodes", "")
        from clusterkit.hostlist import expand

        nodes = tuple(expand(nodes_expr)) if nodes_expr and nodes_expr != "(null)" else ()
        flags = tuple(f for f in fields.get("Flags", "").split(",") if f)
        return Reservation(name=fields.get("ReservationName", name), nodes=nodes, flags=flags)

    def create_reservation(self, name: str, nodes: Sequence[str], flags: Sequence[str] = ("MAINT", "IGNORE_JOBS")) -> None:
        user = os.environ.get("USER") or _whoami()
        self.run(["scontrol", "create", "reservation", f"ReservationName={name}", f"Nodes={_fold(nodes)}",
                  "StartTime=now", "Duration=infinite", f"Users={user}", f"Flags={','.join(flags)}"])

    def update_reservation(self, name: str, nodes: Sequence[str]) -> None:
        self.run(["scontrol", "update", f"ReservationName={name}", f"Nodes={_fold(nodes)}"])

    def delete_reservation(self, name: str) -> None:
        self.run(["scontrol", "delete", f"ReservationName={name}"])


def _whoami() -> str:
    import pwd

    return pwd.getpwuid(os.getuid()).pw_name


def _exit_code(v: object) -> Optional[int]:
    if isinstance(v, bool):
        return None
    if isinstance(v, int):  # up to 22.05: the raw wait status (exit 3 reads 768)
        if v & 0x7F:
            return 128 + (v & 0x7F)
        return (v >> 8) & 0xFF
    if isinstance(v, dict):  # 23.02+: {"status": ..., "return_code": N}
        rc = v.get("return_code")
        if isinstance(rc, dict):
            rc = rc.get("number")
        return rc if isinstance(rc, int) and not isinstance(rc, bool) else None
    return None


class PyslurmBackend(CliBackend):
    """Node queries and updates through pyslurm (no process per call); jobs and reservations
    through the CLI. Only made by :func:`make_backend` when pyslurm imports and its Slurm
    version matches the running one."""

    name = "pyslurm"

    def nodes(self, partition: Optional[str] = None, names: Optional[Sequence[str]] = None) -> list[SlurmNode]:  # pragma: no cover - needs pyslurm
        import pyslurm  # type: ignore[import-not-found]

        from clusterkit.parsers.slurm import parse_state

        try:
            loaded = pyslurm.Nodes.load()
        except Exception as e:  # noqa: BLE001 - pyslurm raises its own RPCError
            raise SlurmUnavailable(f"Slurm is not reachable (pyslurm: {e})") from None
        out: list[SlurmNode] = []
        for nm, n in loaded.items():
            if names is not None and nm not in names:
                continue
            state, flags = parse_state(str(getattr(n, "state", "") or ""))
            parts = tuple(getattr(n, "partitions", None) or ())
            if partition is not None and partition not in parts:
                continue
            out.append(SlurmNode(name=nm, state=state, flags=tuple(flags),
                                 reason=getattr(n, "reason", None) or None,
                                 reason_user=str(getattr(n, "reason_user", "") or "") or None,
                                 partitions=parts))
        return out

    def drain(self, names: Sequence[str], reason: str) -> None:  # pragma: no cover - needs pyslurm
        import pyslurm

        for nm in names:
            pyslurm.Node(nm).modify(pyslurm.Node(state="DRAIN", reason=reason))

    def resume(self, names: Sequence[str]) -> None:  # pragma: no cover - needs pyslurm
        import pyslurm

        for nm in names:
            pyslurm.Node(nm).modify(pyslurm.Node(state="RESUME"))


def pyslurm_usable(cli: CliBackend) -> bool:
    """pyslurm imports and was built for the running Slurm (major.minor equal)."""
    try:
        import pyslurm
    except Exception:  # noqa: BLE001 - missing, or built against another libslurm
        return False
    built = str(getattr(pyslurm, "__version__", "") or "")  # pragma: no cover - needs pyslurm
    try:  # pragma: no cover - needs pyslurm
        running = cli.version()
    except SlurmError:  # pragma: no cover
        return False
    return bool(built) and built.split(".")[:2] == running.split(".")[:2]  # pragma: no cover


def make_backend(env: Optional[Mapping[str, str]] = None, *, prefer: str = "auto",
                 timeout: float = DEFAULT_TIMEOUT) -> SlurmBackend:
    """The backend to use: ``cli``, ``pyslurm`` or ``auto`` (pyslurm when usable, else the CLI)."""
    cli = CliBackend(env=dict(env or {}), timeout=timeout)
    if prefer == "cli":
        return cli
    if prefer not in ("auto", "pyslurm"):
        raise UsageError(f"unknown Slurm backend {prefer!r}; one of: auto, cli, pyslurm")
    if pyslurm_usable(cli):  # pragma: no cover - needs pyslurm
        return PyslurmBackend(env=dict(env or {}), timeout=timeout)
    if prefer == "pyslurm":
        raise UsageError("--slurm-backend pyslurm: pyslurm does not import or was built for another Slurm "
                         "(PyPI's pyslurm needs Slurm 25.11 exactly); use the default")
    return cli
