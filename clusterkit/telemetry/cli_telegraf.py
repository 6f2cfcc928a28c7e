"""``clusterkit telemetry telegraf-config``: the Telegraf configuration of a node, printed (or
written with ``-o``), never installed. The command object is :data:`telegraf_config_cmd`; the
``telemetry`` group registers it."""

from __future__ import annotations

import shlex
from typing import Any, Optional

import click

#: parameter -> the option that sets it (named in error messages)
OPTION_OF = {
    "node_check": "--no-node-check", "clusterkit_command": "--clusterkit-command",
    "node_check_args": "--node-check-arg", "interval": "--interval", "exec_timeout": "--exec-timeout",
    "influx_output": "--no-influx-output", "influx_urls": "--influx-url", "influx_org": "--influx-org",
    "influx_bucket": "--influx-bucket", "nvidia_smi": "--no-nvidia-smi", "nvidia_smi_bin": "--nvidia-smi-bin",
    "infiniband": "--no-infiniband", "gather_rdma": "--no-gather-rdma", "global_tags": "--global-tag",
}


def _global_tags(items: tuple[str, ...]) -> dict[str, str]:
    from clusterkit.errors import UsageError

    tags: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise UsageError(f"--global-tag {item!r}: give KEY=VALUE")
        if key in tags:
            raise UsageError(f"--global-tag {key}: given twice")
        tags[key] = value
    return tags


def _command_words(text: str) -> list[str]:
    from clusterkit.errors import UsageError

    try:
        return shlex.split(text)
    except ValueError as e:
        raise UsageError(f"--clusterkit-command {text!r}: cannot split it into words: {e}") from None


@click.command("telegraf-config", short_help="Print a Telegraf configuration for the nodes.")
@click.option("--clusterkit-command", "clusterkit_command", default="clusterkit", show_default=True, metavar="CMD",
              help="How Telegraf starts clusterkit on the node: a path, or words split as a shell would "
                   "('/opt/clusterkit/bin/clusterkit', 'python3 -m clusterkit').")
@click.option("--node-check-arg", "node_check_args", multiple=True, metavar="ARG",
              help="One more node-check argument, after 'node-check --format influx' (repeat: "
                   "--node-check-arg=--profile --node-check-arg=h200-sxm).")
@click.option("--no-node-check", "no_node_check", is_flag=True, help="No inputs.exec running node-check.")
@click.option("--interval", default="5m", show_default=True, metavar="DURATION",
              help="Telegraf's collection interval (5m, 1h).")
@click.option("--exec-timeout", default="5s", show_default=True, metavar="DURATION",
              help="inputs.exec's timeout for node-check.")
@click.option("--influx-url", "influx_urls", multiple=True, metavar="URL",
              help="InfluxDB v2 write API base URL (repeat for several; Telegraf writes to one of them).")
@click.option("--influx-org", metavar="ORG", help="InfluxDB organization.")
@click.option("--influx-bucket", metavar="BUCKET", help="InfluxDB bucket.")
@click.option("--no-influx-output", "no_influx_output", is_flag=True,
              help="No outputs.influxdb_v2 (give Telegraf an output in another file).")
@click.option("--no-nvidia-smi", "no_nvidia_smi", is_flag=True, help="No inputs.nvidia_smi.")
@click.option("--nvidia-smi-bin", metavar="PATH", help="inputs.nvidia_smi's bin_path (default: Telegraf's).")
@click.option("--no-infiniband", "no_infiniband", is_flag=True, help="No inputs.infiniband.")
@click.option("--no-gather-rdma", "no_gather_rdma", is_flag=True,
              help="inputs.infiniband without the RDMA counters (gather_rdma = false).")
@click.option("--global-tag", "global_tags", multiple=True, metavar="KEY=VALUE",
              help="A tag Telegraf adds to every metric without it (repeat): cluster=prod, partition=gpu.")
@click.option("-o", "--output", "out", metavar="FILE",
              help="Write the configuration to FILE (atomically) instead of stdout.")
def telegraf_config_cmd(clusterkit_command: str, node_check_args: tuple[str, ...], no_node_check: bool,
                        interval: str, exec_timeout: str, influx_urls: tuple[str, ...], influx_org: Optional[str],
                        influx_bucket: Optional[str], no_influx_output: bool, no_nvidia_smi: bool,
                        nvidia_smi_bin: Optional[str], no_infiniband: bool, no_gather_rdma: bool,
                        global_tags: tuple[str, ...], out: Optional[str]) -> int:
    """Print a Telegraf configuration (Telegraf 1.39.0 or later) that runs `clusterkit node-check
    --format influx` every interval (inputs.exec), collects nvidia-smi and InfiniBand metrics, and
    writes everything to an InfluxDB v2 write API.

    The token is never an option and never in the file: Telegraf reads it from $INFLUX_TOKEN.
    """
    from clusterkit.telemetry.telegraf import make_params, render_telegraf_config

    values: dict[str, Any] = {
        "node_check": not no_node_check, "clusterkit_command": _command_words(clusterkit_command),
        "node_check_args": list(node_check_args), "interval": interval, "exec_timeout": exec_timeout,
        "influx_output": not no_influx_output, "influx_urls": list(influx_urls), "influx_org": influx_org,
        "influx_bucket": influx_bucket, "nvidia_smi": not no_nvidia_smi, "nvidia_smi_bin": nvidia_smi_bin,
        "infiniband": not no_infiniband, "gather_rdma": not no_gather_rdma,
        "global_tags": _global_tags(global_tags),
    }
    text = render_telegraf_config(make_params(values, names=OPTION_OF))
    from clusterkit.fsutil import emit_text

    emit_text(text, out)
    return 0


__all__ = ["telegraf_config_cmd", "OPTION_OF"]
