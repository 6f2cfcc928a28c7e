"""The telemetry options validate gets (``telemetry_options``) and their checks."""

from __future__ import annotations

import click
import pytest
from click.testing import CliRunner

from clusterkit.errors import UsageError
from clusterkit.telemetry.cli import TelemetryOptions, telemetry_options


def _command():
    seen = {}

    @click.command()
    @click.option("--other", default="x")
    @telemetry_options
    def cmd(other: str, telemetry: TelemetryOptions) -> None:
        seen["other"] = other
        seen["telemetry"] = telemetry

    return cmd, seen


def test_options_arrive_as_one_keyword(tmp_path):
    cmd, seen = _command()
    r = CliRunner().invoke(cmd, ["--other", "y", "--influx-url", "http://127.0.0.1:8428", "--influx-org", "o",
                                 "--influx-bucket", "b", "--spool-dir", str(tmp_path), "--spool-max", "16",
                                 "--telemetry-timeout", "3", "--prom-textfile", str(tmp_path / "ck.prom")], env={})
    assert r.exit_code == 0, r.output
    t = seen["telemetry"]
    assert seen["other"] == "y" and t.influx_url == "http://127.0.0.1:8428" and t.spool_max == 16
    s = t.settings()
    assert s.url == "http://127.0.0.1:8428" and s.spool_max_bytes == 16 * 2 ** 20 and s.timeout_s == 3.0
    assert s.prom_textfile == str(tmp_path / "ck.prom") and s.string_fields


def test_help_lists_the_options():
    cmd, _ = _command()
    out = CliRunner().invoke(cmd, ["--help"]).output
    for opt in ("--influx-url", "--influx-org", "--influx-bucket", "--influx-token-file", "--spool-dir", "--spool-max",
                "--telemetry-timeout", "--influx-numbers-only", "--prom-textfile"):
        assert opt in out
    assert "--influx-token " not in out  # never a token on the command line


def test_nothing_asked_is_none_and_defaults():
    assert TelemetryOptions().settings() is None
    s = TelemetryOptions(influx_url="http://127.0.0.1:1/", influx_org="o", influx_bucket="b").settings()
    assert s is not None and s.url == "http://127.0.0.1:1" and s.timeout_s == 10.0
    assert s.spool_max_bytes == 256 * 2 ** 20


@pytest.mark.parametrize("opts, why", [
    ({"influx_url": "http://127.0.0.1:1"}, "needs --influx-org and --influx-bucket"),
    ({"influx_url": "http://127.0.0.1:1", "influx_org": "o"}, "needs --influx-bucket"),
    ({"influx_org": "o"}, "--influx-org needs --influx-url"),
    ({"influx_token_file": "/x"}, "--influx-token-file needs --influx-url"),
    ({"prom_textfile": "/nonexistent-dir/x.prom"}, "no directory"),
    ({"prom_textfile": "/tmp/x.txt"}, "only *.prom"),
])
def test_bad_options_before_the_run(opts, why):
    with pytest.raises(UsageError, match=None) as e:
        TelemetryOptions(**opts).settings()
    assert why in str(e.value)
