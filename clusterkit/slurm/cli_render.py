"""``clusterkit slurm render``: a job script from a template, printed and never submitted, so it
can be read, kept in a repository or handed to sbatch by hand."""

from __future__ import annotations

import re
from typing import Any, Optional

import click

_KEY_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

#: The dedicated options and the parameter each one sets.
_OPTION_PARAMS = (("--nodes", "nodes"), ("--partition", "partition"), ("--time", "time"),
                  ("--gpus-per-node", "gpus_per_node"), ("--output-file", "output_file"))


def _parse_set(item: str, text_keys: frozenset[str]) -> tuple[list[str], Any]:
    """``KEY=VALUE`` as (key path, value). VALUE is read as YAML (``4``, ``true``, ``[a, b]``,
    ``{NCCL_DEBUG: INFO}``), except for a template's plain-text parameters, which take it as
    written: YAML would make ``on`` a flag, ``1:30:00`` a number and cut ``a #b`` at the ``#``."""
    from clusterkit.errors import UsageError

    key, sep, raw = item.partition("=")
    if not sep:
        raise UsageError(f"--set {item}: give KEY=VALUE")
    path = key.strip().split(".")
    if not all(_KEY_RE.match(p) for p in path):
        raise UsageError(f"--set {item}: {key.strip()!r} is not a parameter name (KEY or KEY.SUBKEY)")
    if len(path) == 1 and path[0] in text_keys:
        return path, (raw if raw != "" else None)
    import yaml

    try:
        return path, yaml.safe_load(raw)
    except yaml.YAMLError as e:
        raise UsageError(f"--set {key.strip()}: {raw!r} is not a YAML value: "
                         f"{getattr(e, 'problem', None) or e}") from None


def _put(params: dict[str, Any], path: list[str], value: Any, item: str) -> None:
    from clusterkit.errors import UsageError

    here = params
    for part in path[:-1]:
        inner = here.get(part)
        if inner is None:
            inner = here[part] = {}
        elif isinstance(inner, dict):
            inner = here[part] = dict(inner)  # never change the params file's own mapping
        else:
            raise UsageError(f"--set {item}: {part} is not a mapping")
        here = inner
    here[path[-1]] = value


def _load_params_file(path: str) -> dict[str, Any]:
    from clusterkit.config import read_text, safe_load
    from clusterkit.errors import ConfigError

    data = safe_load(read_text(path, "--params"), f"--params {path}")
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"--params {path}: expected a mapping of parameters, got {type(data).__name__}")
    bad = [k for k in data if not isinstance(k, str) or not _KEY_RE.match(k)]
    if bad:
        raise ConfigError(f"--params {path}: {bad[0]!r} is not a parameter name")
    return dict(data)


def _script_from(template: str, *, template_dir: Optional[str], sets: tuple[str, ...], params_file: Optional[str],
                 nodes: Optional[int], partition: Optional[str], time_limit: Optional[str],
                 gpus_per_node: Optional[int], output_file: Optional[str]) -> str:
    """The rendered script: the params file, then --set, then the dedicated options."""
    from clusterkit.errors import UsageError
    from clusterkit.slurm import templates

    params = _load_params_file(params_file) if params_file is not None else {}
    text_keys = templates.string_params(template)
    set_keys: set[str] = set()
    for item in sets:
        path, value = _parse_set(item, text_keys)
        _put(params, path, value, item)
        set_keys.add(path[0])
    given = {"nodes": nodes, "partition": partition, "time": time_limit, "gpus_per_node": gpus_per_node,
             "output_file": output_file}
    for option, key in _OPTION_PARAMS:
        if given[key] is None:
            continue
        if key in set_keys:
            raise UsageError(f"{option} and --set {key}=… both set {key}: give one")
        params[key] = given[key]

    return templates.render(template, params, template_dir=template_dir)


_TEMPLATE_OPTIONS = [
    click.option("--template-dir", metavar="DIR",
                 help="Your templates (NAME.sbatch.j2), searched before the built-in ones: one of a "
                      "built-in's name replaces it."),
    click.option("--set", "sets", multiple=True, metavar="KEY=VALUE",
                 help="A parameter (repeat). VALUE is YAML (4, true, [a, b], {NCCL_DEBUG: INFO}); a "
                      "text parameter takes it as written. KEY.SUBKEY sets one key of a mapping."),
    click.option("--params", "params_file", metavar="FILE",
                 help="A YAML or JSON mapping of parameters; --set and the options below override it."),
    click.option("--nodes", type=click.IntRange(min=1), metavar="N", help="Nodes to allocate (nodes)."),
    click.option("--partition", metavar="P", help="Partition to submit to (partition)."),
    click.option("--time", "time_limit", metavar="T", help="Time limit, as sbatch --time takes it (time)."),
    click.option("--gpus-per-node", type=click.IntRange(min=0), metavar="G",
                 help="GPUs per node (gpus_per_node)."),
    click.option("--output-file", metavar="PATH",
                 help="The job's own output file, sbatch -o: %x job name, %j job id (output_file)."),
]


def _template_options(fn: Any) -> Any:
    """The options render and submit share: how the template's parameters are given."""
    for option in reversed(_TEMPLATE_OPTIONS):
        fn = option(fn)
    return fn


@click.command("render", short_help="Print a job script from a template (never submitted).")
@click.argument("template", required=False, metavar="TEMPLATE")
@click.option("--list", "list_only", is_flag=True,
              help="List the templates (built-in, and those in --template-dir) instead.")
@_template_options
@click.option("-o", "--out", "out", metavar="FILE", help="Write the script to FILE instead of stdout.")
def render_cmd(template: Optional[str], list_only: bool, template_dir: Optional[str], sets: tuple[str, ...],
               params_file: Optional[str], nodes: Optional[int], partition: Optional[str],
               time_limit: Optional[str], gpus_per_node: Optional[int], output_file: Optional[str],
               out: Optional[str]) -> int:
    """Print the job script of TEMPLATE (validate, nccl, or one of yours) without submitting it.

    `clusterkit slurm render --list` lists the templates.
    """
    from clusterkit.errors import UsageError
    from clusterkit.slurm import templates

    if list_only:
        if template is not None:
            raise UsageError("--list takes no TEMPLATE")
        known = templates.known_templates(template_dir)
        width = max(len(n) for n in known)
        for name, doc in known.items():
            click.echo(f"{name:{width}}  {doc}")
        return 0
    if template is None:
        raise UsageError("say which template: clusterkit slurm render TEMPLATE (see --list)")

    script = _script_from(template, template_dir=template_dir, sets=sets, params_file=params_file, nodes=nodes,
                          partition=partition, time_limit=time_limit, gpus_per_node=gpus_per_node,
                          output_file=output_file)
    from clusterkit.fsutil import emit_text

    emit_text(script, out)
    return 0


@click.command("submit", short_help="Render a template and submit it with sbatch.")
@click.argument("template", metavar="TEMPLATE")
@_template_options
@click.option("--wait", is_flag=True, help="Wait for the job to finish; exit with its exit code.")
@click.option("--wait-timeout", default=3600.0, show_default=True, type=click.FloatRange(1, 7 * 86400),
              metavar="S", help="With --wait: give up waiting after S seconds (exit 3; the job keeps running).")
@click.option("--json", "as_json", is_flag=True, help="Print the job (id, state, exit code) as JSON.")
def submit_cmd(template: str, template_dir: Optional[str], sets: tuple[str, ...], params_file: Optional[str],
               nodes: Optional[int], partition: Optional[str], time_limit: Optional[str],
               gpus_per_node: Optional[int], output_file: Optional[str], wait: bool, wait_timeout: float,
               as_json: bool) -> int:
    """Render TEMPLATE exactly as `render` does and submit it (sbatch --parsable, the script on
    stdin). Prints the job id; with --wait, polls until the job ends and exits with its exit code
    (a validate job's: 0 healthy, 1 a node failed, 3 incomplete), 3 when it ended without one
    (cancelled, timed out, node failure) or the wait timed out."""
    import json

    from clusterkit.slurm.backend import make_backend

    script = _script_from(template, template_dir=template_dir, sets=sets, params_file=params_file, nodes=nodes,
                          partition=partition, time_limit=time_limit, gpus_per_node=gpus_per_node,
                          output_file=output_file)
    backend = make_backend(prefer="cli")
    job = backend.submit(script)
    if not wait:
        click.echo(json.dumps({"job_id": job}) if as_json else job)
        return 0
    click.echo(f"submitted job {job}; waiting", err=True)
    info = backend.wait([job], timeout=wait_timeout, poll=2.0)[job]
    if as_json:
        click.echo(json.dumps({"job_id": job, "state": info.state, "exit_code": info.exit_code,
                               "nodes": info.nodes}))
    else:
        code = "" if info.exit_code is None else f", exit code {info.exit_code}"
        click.echo(f"job {job}: {info.state}{code}")
    if not info.finished:
        return 3
    if info.state == "COMPLETED":
        return 0
    if info.state == "FAILED" and info.exit_code is not None and 0 < info.exit_code < 126:
        return info.exit_code
    return 3


COMMANDS = [render_cmd, submit_cmd]
