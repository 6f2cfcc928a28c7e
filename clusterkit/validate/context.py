"""The probe context: everything a probe may reach on the node, handed to it by the runner.

Probes never reach for the machine directly. The runner builds one :class:`ProbeContext` per
node-check and passes it to every domain's ``probe(ctx)``:

==================  ========================================================================
``ctx.nvml()``      the NVML module: nvidia-ml-py (``pynvml``), or the simulator's ``SimNVML``
``ctx.psutil()``    host facts: the ``psutil`` module, or the simulator's stand-in
``ctx.sysfs_root``  ``/sys``, or ``node-check --sysfs-root DIR`` / ``$CLUSTERKIT_SYSFS_ROOT``
                    (a container that mounts the host's /sys elsewhere), or the simulator's
                    generated tree; ``ctx.sysfs(...)`` joins paths under it, ``ctx.read_sysfs``
                    reads one attribute (None when it cannot be read: unknown, never zero)
``ctx.procfs_root`` ``/proc``, or ``$CLUSTERKIT_PROCFS_ROOT``, or the simulator's generated tree
                    (``self/mountinfo``: the storage domain's mount table)
``ctx.run_tool()``  an external command (argv list, never a shell string) bounded by its own
                    timeout and by the deadline; its whole process group is killed when cut off.
                    On a simulated node the simulator's stand-in executables come first on PATH
``ctx.kernel_log()``  the kernel log text: ``--kernel-log FILE``, else ``dmesg`` (then
                    ``journalctl -k``) through the tool runner; the simulator supplies its own
``ctx.state_dir``   the node's state directory (counters compared between runs); created on
                    first use by ``ctx.state_path(name)``
``ctx.deadline``    a ``time.monotonic()`` instant; ``ctx.time_left()`` says how long is left
``ctx.opt_in``      the opt-in checks this run asked for (``node-check --ib-bw``: ``ib.write_bw``)
==================  ========================================================================

The simulator (``clusterkit.sim.context``) supplies such a context; probes have no "if
simulated" branches. Everything here is imported lazily: building a context costs nothing
until a probe asks for something.
"""

from __future__ import annotations

import os
import shutil
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from clusterkit.procs import ProcessGroup

ENV_SYSFS_ROOT = "CLUSTERKIT_SYSFS_ROOT"
ENV_STATE_DIR = "CLUSTERKIT_STATE_DIR"
ENV_PROCFS_ROOT = "CLUSTERKIT_PROCFS_ROOT"


@dataclass
class ToolResult:
    """What an external tool did. ``missing``: not installed (rc 127); ``timed_out``: cut off
    at its timeout or the deadline (partial output kept)."""

    argv: list[str]
    rc: int
    stdout: str
    stderr: str
    duration_s: float
    timed_out: bool = False
    missing: bool = False

    @property
    def ok(self) -> bool:
        return self.rc == 0 and not self.timed_out and not self.missing


def _import_pynvml() -> Any:
    import pynvml

    return pynvml


def _import_psutil() -> Any:
    import psutil

    return psutil


def default_state_dir() -> str:
    """``$CLUSTERKIT_STATE_DIR``, else /var/lib/clusterkit for root, else
    ``$XDG_STATE_HOME/clusterkit`` (``~/.local/state/clusterkit``)."""
    env = os.environ.get(ENV_STATE_DIR)
    if env:
        return env
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        return "/var/lib/clusterkit"
    base = os.environ.get("XDG_STATE_HOME") or os.path.expanduser("~/.local/state")
    return os.path.join(base, "clusterkit")


@dataclass
class ProbeContext:
    node: str
    deadline: float
    sysfs_root: str = "/sys"
    state_dir: str = field(default_factory=default_state_dir)
    kernel_log_file: Optional[str] = None
    #: directories searched before PATH for tools (the simulator's stand-ins)
    tool_path: list[str] = field(default_factory=list)
    #: extra environment for tools (the simulator's node identity)
    tool_env: dict[str, str] = field(default_factory=dict)
    nvml_factory: Callable[[], Any] = _import_pynvml
    psutil_factory: Callable[[], Any] = _import_psutil
    kernel_release_fn: Callable[[], str] = field(default=lambda: os.uname().release)
    #: the simulated kernel log (text), when the simulator supplies one
    kernel_log_text: Optional[str] = None
    procs: ProcessGroup = field(default_factory=ProcessGroup)
    simulated: bool = False
    #: opt-in checks asked for on this run (``node-check --ib-bw`` adds ``"ib.write_bw"``)
    opt_in: frozenset[str] = frozenset()
    #: where /proc is read (the mount table: ``self/mountinfo``)
    procfs_root: str = "/proc"
    _cache: dict[str, Any] = field(default_factory=dict, repr=False)

    @classmethod
    def around(cls, *, nvml: Any = None, psutil: Any = None, node: str = "local",
               deadline_s: float = 60.0, **kw: Any) -> "ProbeContext":
        """A context around given NVML / psutil stand-ins (tests, embedding)."""
        ctx = cls(node=node, deadline=time.monotonic() + deadline_s, **kw)
        if nvml is not None:
            ctx.nvml_factory = lambda: nvml
        if psutil is not None:
            ctx.psutil_factory = lambda: psutil
        return ctx

    # -- time ------------------------------------------------------------------------------
    def time_left(self) -> float:
        return max(0.0, self.deadline - time.monotonic())

    # -- libraries -------------------------------------------------------------------------
    def nvml(self) -> Any:
        """The NVML module (raises ImportError when nvidia-ml-py is missing)."""
        if "nvml" not in self._cache:
            self._cache["nvml"] = self.nvml_factory()
        return self._cache["nvml"]

    def psutil(self) -> Any:
        if "psutil" not in self._cache:
            self._cache["psutil"] = self.psutil_factory()
        return self._cache["psutil"]

    def kernel_release(self) -> str:
        return self.kernel_release_fn()

    # -- sysfs -----------------------------------------------------------------------------
    def sysfs(self, *parts: str) -> str:
        """A path under the sysfs root: ``ctx.sysfs("class", "infiniband")``."""
        rel = os.path.join(*parts) if parts else ""
        return os.path.join(self.sysfs_root, rel.lstrip("/"))

    def read_sysfs(self, *parts: str) -> Optional[str]:
        """One sysfs attribute, stripped; None when it is missing or unreadable."""
        try:
            with open(self.sysfs(*parts), encoding="utf-8", errors="replace") as fh:
                return fh.read(65536).strip()
        except OSError:
            return None

    # -- tools -----------------------------------------------------------------------------
    def which(self, tool: str) -> Optional[str]:
        for d in self.tool_path:
            p = os.path.join(d, tool)
            if os.path.isfile(p) and os.access(p, os.X_OK):
                return p
        return shutil.which(tool)

    def run_tool(self, argv: list[str], *, timeout: float = 30.0,
                 stdin: Optional[bytes] = None) -> ToolResult:
        """Run an external tool, bounded by ``timeout`` and by the deadline."""
        if not argv:
            raise ValueError("empty argv")
        path = argv[0] if os.sep in argv[0] else self.which(argv[0])
        if path is None or not os.path.exists(path):
            return ToolResult(argv=list(argv), rc=127, stdout="", stderr=f"{argv[0]}: not found",
                              duration_s=0.0, missing=True)
        limit = min(timeout, self.time_left())
        if limit <= 0:
            return ToolResult(argv=list(argv), rc=-1, stdout="", stderr="deadline reached before start",
                              duration_s=0.0, timed_out=True)
        env = dict(os.environ)
        if self.tool_path:
            env["PATH"] = os.pathsep.join([*self.tool_path, env.get("PATH", "")])
        env.update(self.tool_env)
        env.setdefault("LC_ALL", "C")
        try:
            r = self.procs.run([path, *argv[1:]], timeout=limit, stdin=stdin, env=env)
        except OSError as e:
            return ToolResult(argv=list(argv), rc=126, stdout="", stderr=f"{argv[0]}: {e.strerror or e}",
                              duration_s=0.0, missing=True)
        return ToolResult(argv=list(argv), rc=r.rc, stdout=r.stdout, stderr=r.stderr,
                          duration_s=r.duration_s, timed_out=r.timed_out)

    # -- kernel log ------------------------------------------------------------------------
    def kernel_log(self) -> tuple[Optional[str], str]:
        """(text, source): the kernel log and where it came from; text None when none could
        be read (source then says why)."""
        if self.kernel_log_file:
            try:
                with open(self.kernel_log_file, encoding="utf-8", errors="replace") as fh:
                    return fh.read(), self.kernel_log_file
            except OSError as e:
                return None, f"{self.kernel_log_file}: {e.strerror or e}"
        if self.kernel_log_text is not None:
            return self.kernel_log_text, "simulated dmesg"
        why = []
        for argv in (["dmesg", "-T"], ["journalctl", "-k", "-b", "--no-pager", "-o", "short-iso"]):
            r = self.run_tool(argv, timeout=10)
            if r.ok:
                return r.stdout, " ".join(argv)
            why.append(f"{argv[0]}: {(r.stderr or '').strip()[:120] or f'exit {r.rc}'}")
        return None, "; ".join(why)

    # -- state -----------------------------------------------------------------------------
    def read_state(self, path: str) -> tuple[Any, Optional[str]]:
        """(the JSON kept at ``path`` by an earlier run or None, why it could not be read or
        None). A missing file is no problem: the first run has nothing to compare with."""
        import json

        try:
            with open(path, encoding="utf-8") as fh:
                return json.load(fh), None
        except FileNotFoundError:
            return None, None
        except (OSError, ValueError) as e:
            return None, str(getattr(e, "strerror", None) or e)

    def write_state(self, path: str, doc: Any) -> Optional[str]:
        """Keep ``doc`` at ``path`` for the next run (atomically); why it failed, or None."""
        import json

        from clusterkit.fsutil import write_atomic

        try:
            write_atomic(path, json.dumps(doc, sort_keys=True), prefix=".state-")
        except OSError as e:
            return str(e.strerror or e)
        return None

    def state_path(self, name: str) -> str:
        """A file in the node's state directory (the directory is created, mode 0755)."""
        os.makedirs(self.state_dir, mode=0o755, exist_ok=True)
        return os.path.join(self.state_dir, name)


def real_context(*, deadline: float, sysfs_root: Optional[str] = None, state_dir: Optional[str] = None,
                 kernel_log_file: Optional[str] = None, node: Optional[str] = None) -> ProbeContext:
    """The context of a real node."""
    import socket

    return ProbeContext(
        node=node or socket.gethostname().split(".")[0],
        deadline=deadline,
        sysfs_root=sysfs_root or os.environ.get(ENV_SYSFS_ROOT) or "/sys",
        procfs_root=os.environ.get(ENV_PROCFS_ROOT) or "/proc",
        state_dir=state_dir or default_state_dir(),
        kernel_log_file=kernel_log_file,
    )
