"""Serving job scripts: one sbatch script per replica, rendered from a Jinja2 template (pure).

Templates (``clusterkit/deploy/templates/NAME.sbatch.j2``), one per engine and mode:

``vllm``      vLLM's native multi-node mode (the default): one ``vllm serve`` per node with
              ``--nnodes/--node-rank/--master-addr/--master-port``; ranks >= 1 run ``--headless``
``vllm-ray``  vLLM over a Ray cluster the job starts itself (``ray start --head`` on rank 0,
              ``ray start --address`` elsewhere); ``--distributed-executor-backend ray`` is always
              passed, since vLLM no longer falls back to Ray by itself
``sglang``    SGLang: ``--nnodes/--node-rank/--dist-init-addr``, ``--tp`` the total across the
              nodes, ``--host 0.0.0.0``

They are rendered by :func:`clusterkit.slurm.templates.render` (the same Jinja2 environment:
StrictUndefined, every value through the ``shq``/``shq_join`` filters) after
:class:`ServeParams` has checked the parameters. One replica is one job, on exactly the nodes
the health gate chose (``--nodelist``), one task per node (``--ntasks-per-node=1``).

What only the job knows is computed by the job, never by Jinja and never in the batch shell for
another node:

* the rank: ``NODE_RANK=$SLURM_PROCID`` inside each task (a single-quoted ``bash -c`` script, so
  the batch shell expands nothing of it; SGLang's own Slurm example expands ``$SLURM_NODEID`` in
  the batch shell and gives every node rank 0);
* the master address: the first node of ``$SLURM_JOB_NODELIST`` (``scontrol show hostnames``),
  at its Slurm ``NodeAddr`` (resolved to IPv4 when it is a name);
* ``VLLM_HOST_IP``: the address of the socket interface (``GLOO_SOCKET_IFNAME``) when the
  inventory names one, else the node's own Slurm ``NodeAddr``, else the first address of
  ``hostname -I``. Slurm's NodeAddr is what every node already uses to reach the others, and it
  is the same text for every task, so rank 0's ``VLLM_HOST_IP`` is the master address;
  ``hostname -I`` is only a last resort (its first address may be a bridge or an IB port);
* the ports: each base + ``SLURM_JOB_ID % port_span`` (:func:`port_for` computes the same on
  the controller), so two jobs on one node, or a job and its restart, do not collide.

Every task appends its output to ``<log_dir>/serve-<job id>.rank<N>.log`` (``log_dir`` must be
on a file system every node and the controller share, like sbatch's ``-o`` file, which is
``<log_dir>/serve-<job id>.out``). A task whose engine exits, even with 0, exits non-zero, and
``srun --kill-on-bad-exit=1`` then ends the whole step: a serving step is running exactly while
every rank's process is.
"""

from __future__ import annotations

import os
import re
from typing import Annotated, Any, Literal, Optional

from pydantic import BeforeValidator, Field, ValidationError, computed_field, field_validator, model_validator

from clusterkit.config import MAX_GPUS, Int, first_error, invalid
from clusterkit.errors import UsageError
from clusterkit.slurm.templates import _ENV_NAME_RE, _ENV_REFUSED, JobParams, SbatchText, SlurmTime, Text, Words
from clusterkit.slurm.templates import render as _render

Engine = Literal["vllm", "sglang"]
Mode = Literal["native", "ray"]

#: template name -> what it is for
TEMPLATES: dict[str, str] = {
    "vllm": "vLLM, native multi-node: one vllm serve per node, --headless on ranks >= 1",
    "vllm-ray": "vLLM over a Ray cluster started by the job (--distributed-executor-backend ray)",
    "sglang": "SGLang: --nnodes/--node-rank/--dist-init-addr, --tp the total across nodes",
}
#: the engine command when none is given
DEFAULT_ENGINE_COMMAND: dict[str, list[str]] = {"vllm": ["vllm"], "sglang": ["python", "-m", "sglang.launch_server"]}
#: what rank 0 answers once the model is loaded (the readiness probe)
HEALTH_PATH: dict[str, str] = {"vllm": "/health", "sglang": "/health_generate"}

_NODE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$")
#: a Linux interface name (IFNAMSIZ 16 with the NUL)
_IFNAME_RE = re.compile(r"^[A-Za-z0-9_.:@-]{1,15}$")


def template_for(engine: str, mode: str = "native") -> str:
    if engine == "vllm":
        return "vllm-ray" if mode == "ray" else "vllm"
    if engine == "sglang":
        if mode == "ray":
            raise UsageError("--ray is for vLLM only: SGLang starts its own processes on every node")
        return "sglang"
    raise UsageError(f"unknown engine {engine!r}; one of: vllm, sglang")


def port_for(base: int, job_id: str | int, span: int) -> int:
    """A job's port: base + job id % span (the job script computes the same)."""
    return base + int(job_id) % span


def _node(value: Any) -> Any:
    if isinstance(value, str) and not _NODE_RE.match(value):
        raise invalid(f"{value!r} is not a node name")
    return value


def _ifname(value: Any) -> Any:
    if isinstance(value, str) and not _IFNAME_RE.match(value):
        raise invalid(f"{value!r} is not a network interface name")
    return value


NodeName = Annotated[str, BeforeValidator(_node)]
IfName = Annotated[str, BeforeValidator(_ifname)]
Port = Annotated[int, Field(ge=1, le=65535)]


class ServeParams(JobParams):
    """The parameters of one replica's job script."""

    job_name: SbatchText = "clusterkit-serve"
    #: no --time line by default: the partition's default time limit applies
    time: Optional[SlurmTime] = None  # type: ignore[assignment]
    engine: Engine = "vllm"
    mode: Mode = "native"
    model: Text
    served_model_name: Optional[Text] = None
    #: tensor-parallel size: the total over the replica's nodes (vLLM and SGLang alike)
    tp: Int = Field(default=1, ge=1, le=4096)
    pp: Int = Field(default=1, ge=1, le=4096)
    #: exactly the replica's nodes (len == nodes); the first is rank 0
    nodelist: list[NodeName] = Field(min_length=1, max_length=4096)
    #: how to start the engine (default: vllm / python -m sglang.launch_server)
    engine_command: Optional[Words] = None
    #: how to start Ray (vllm-ray only)
    ray_command: Words = Field(default_factory=lambda: ["ray"])
    http_port: Port = 8000
    master_port: Port = 29500
    ray_port: Port = 6379
    port_span: Int = Field(default=1000, ge=1, le=20000)
    host: Text = "0.0.0.0"
    #: where every rank writes its log and sbatch its output (shared by the nodes and the controller)
    log_dir: SbatchText
    #: GLOO_SOCKET_IFNAME / NCCL_SOCKET_IFNAME for every node ...
    socket_ifname: Optional[IfName] = None
    #: ... or per node (when the inventory gives them node by node)
    socket_ifnames: dict[NodeName, IfName] = Field(default_factory=dict)
    #: NCCL_IB_HCA: the validated rails ("=mlx5_0:1,mlx5_3:1")
    ib_hca: Optional[Annotated[str, Field(pattern=r"^=?[A-Za-z0-9_]+(:[0-9]+)?(,[A-Za-z0-9_]+(:[0-9]+)?)*$",
                                          max_length=1000)]] = None
    #: more variables exported before srun
    env: dict[str, Text] = Field(default_factory=dict, max_length=256)
    #: more engine arguments (--max-model-len 8192, …)
    extra_args: Words = Field(default_factory=list)

    @field_validator("log_dir")
    @classmethod
    def _log_dir(cls, value: str) -> str:
        if not value.startswith("/"):
            raise invalid(f"{value!r}: give an absolute path (the nodes do not share this shell's directory)")
        if "%" in value:
            raise invalid(f"{value!r}: a '%' would be read by sbatch as a file name pattern")
        return value.rstrip("/") or "/"

    @field_validator("env", mode="before")
    @classmethod
    def _env(cls, value: Any) -> Any:
        if isinstance(value, dict):
            for name in value:
                if not isinstance(name, str) or not _ENV_NAME_RE.match(name):
                    raise invalid(f"{name!r} is not an environment variable name (^[A-Z_][A-Z0-9_]*$)")
                if name in _ENV_REFUSED:
                    raise invalid(f"{name} changes how the job script's shell behaves: refused")
        return value

    @model_validator(mode="after")
    def _check(self) -> "ServeParams":
        if self.engine_command is None:
            self.engine_command = list(DEFAULT_ENGINE_COMMAND[self.engine])
        if not self.engine_command:
            raise invalid("engine_command: give the command that starts the engine")
        if self.mode == "ray" and self.engine != "vllm":
            raise invalid("mode ray is for vLLM only")
        if len(self.nodelist) != self.nodes:
            raise invalid(f"nodelist has {len(self.nodelist)} node(s) for nodes={self.nodes}")
        if len(set(self.nodelist)) != len(self.nodelist):
            raise invalid("nodelist names a node twice")
        if not 1 <= self.gpus_per_node <= MAX_GPUS:
            raise invalid(f"gpus_per_node must be 1..{MAX_GPUS}")
        if self.tp * self.pp != self.nodes * self.gpus_per_node and not (
                self.nodes == 1 and self.tp * self.pp <= self.gpus_per_node):
            raise invalid(f"tp {self.tp} x pp {self.pp} = {self.tp * self.pp} GPUs do not fill "
                          f"{self.nodes} node(s) of {self.gpus_per_node} GPUs")
        for name, base in (("http_port", self.http_port), ("master_port", self.master_port),
                           ("ray_port", self.ray_port)):
            if base + self.port_span - 1 > 65535:
                raise invalid(f"{name} {base} + port_span {self.port_span} goes past 65535")
        if self.socket_ifname and self.socket_ifnames:
            raise invalid("give socket_ifname or socket_ifnames, not both")
        unknown = sorted(set(self.socket_ifnames) - set(self.nodelist))
        if unknown:
            raise invalid(f"socket_ifnames names nodes outside the nodelist: {', '.join(unknown)}")
        return self

    @computed_field  # type: ignore[prop-decorator]
    @property
    def nodelist_text(self) -> str:
        from clusterkit.hostlist import fold

        return fold(self.nodelist, unique=True)

    @computed_field  # type: ignore[prop-decorator]
    @property
    def ifname_pairs(self) -> str:
        """``node=ifname`` pairs, space-separated (socket_ifnames)."""
        from clusterkit.hostlist import natural_key

        return " ".join(f"{n}={self.socket_ifnames[n]}" for n in sorted(self.socket_ifnames, key=natural_key))

    @computed_field  # type: ignore[prop-decorator]
    @property
    def gpus_per_task(self) -> int:
        """The GPUs requested per node: all of them, or tp x pp on a single node."""
        return min(self.gpus_per_node, self.tp * self.pp) if self.nodes == 1 else self.gpus_per_node

    @property
    def template(self) -> str:
        return template_for(self.engine, self.mode)

    @property
    def health_path(self) -> str:
        return HEALTH_PATH[self.engine]


def make_params(**values: Any) -> ServeParams:
    """ServeParams from keyword values; a bad one is one UsageError line naming it."""
    try:
        return ServeParams.model_validate(values)
    except ValidationError as e:
        raise UsageError(f"serving job: {first_error(e)}") from None


def template_dir() -> str:
    """The directory of the serving templates (inside the installed package)."""
    return os.path.join(os.path.dirname(os.path.abspath(__file__)), "templates")


def render(params: ServeParams) -> str:
    """The job script of one replica."""
    context = params.model_dump()
    context["template_name"] = params.template
    return _render(params.template, context, template_dir=template_dir())


def log_paths(log_dir: str, job_id: str, nnodes: int) -> dict[str, Any]:
    """Where a job's output goes: sbatch's file and one log per rank."""
    return {"out": os.path.join(log_dir, f"serve-{job_id}.out"),
            "ranks": [os.path.join(log_dir, f"serve-{job_id}.rank{r}.log") for r in range(nnodes)]}


__all__ = ["TEMPLATES", "DEFAULT_ENGINE_COMMAND", "HEALTH_PATH", "ServeParams", "make_params", "render",
           "template_for", "template_dir", "port_for", "log_paths"]
