"""The Telegraf configuration (clusterkit telemetry telegraf-config): golden files, TOML structure,
quoting of hostile values, parameter checks, the command, and (where a telegraf binary is
installed) Telegraf's own reading of the file.

Golden files live in tests/golden/telemetry/. A missing or different one fails; to (re)write them
on purpose, run these tests with CLUSTERKIT_UPDATE_GOLDEN=1 and review the diff.
"""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from hypothesis import given, settings
from hypothesis import strategies as st

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    tomllib = pytest.importorskip("tomli")

from clusterkit.errors import OutputError, UsageError
from clusterkit.telemetry import telegraf
from clusterkit.telemetry.cli_telegraf import telegraf_config_cmd
from clusterkit.telemetry.telegraf import (FILTERS, TelegrafParams, make_params, render_telegraf_config, toml_array,
                                           toml_basic, toml_bool, toml_key, toml_str)
from tests.infra import golden

ROOT = Path(__file__).resolve().parent.parent.parent
GOLDEN = ROOT / "tests" / "golden" / "telemetry"
TEMPLATE = Path(telegraf.__file__).resolve().parent / "templates" / telegraf.TEMPLATE

OUT = {"influx_urls": ["http://influx.example:8086"], "influx_org": "ops", "influx_bucket": "clusterkit"}

#: Everything a TOML string or Telegraf's reading of it could trip on: quotes, backslashes, line
#: breaks, a table header, a comment, environment references, a tab, DEL, a line separator, a
#: bidi override, non-ASCII and a non-BMP character.
HOSTILE = ('a"b\\c\'d\n]]\n[[outputs.file]]\nfiles = ["stdout"] # ${INFLUX_TOKEN} $HOME $$x ${X:-y} '
           '\t\r\x7f\x1b\u2028\u202e é 🚀 """ \'\'\' \\u0041 end')
#: A program path: no glob characters (Telegraf globs the program's name), the rest as hostile.
HOSTILE_PROGRAM = '/opt/my ck/"q"/$(id)/${INFLUX_TOKEN}/]]\n x/clusterkit'
HOSTILE_URL = 'https://influx.example:8086/a"b\\c]]/${INFLUX_TOKEN}?q=$HOME&r=\'x\'#"]]'

#: golden file name -> parameters
CASES: dict[str, dict[str, Any]] = {
    "default": dict(OUT),
    "full": {
        "clusterkit_command": ["/opt/clusterkit/bin/clusterkit"], "node_check_args": ["--profile", "h200-sxm"],
        "interval": "10m", "exec_timeout": "30s",
        "influx_urls": ["https://influx-a.example:8086", "https://influx-b.example:8086"],
        "influx_org": "gpu-ops", "influx_bucket": "fleet", "nvidia_smi_bin": "/usr/local/bin/nvidia-smi",
        "gather_rdma": False, "global_tags": {"cluster": "prod", "partition": "gpu", "site": "eu-west-1"},
    },
    "inputs-only": {"influx_output": False, "nvidia_smi": False, "infiniband": False,
                    "clusterkit_command": "python3 -m clusterkit"},
    "no-node-check": {**OUT, "node_check": False},
    "hostile": {
        "clusterkit_command": [HOSTILE_PROGRAM, HOSTILE], "node_check_args": [HOSTILE, "--weights-dir", "$HOME/w"],
        "influx_urls": [HOSTILE_URL], "influx_org": HOSTILE, "influx_bucket": HOSTILE, "nvidia_smi_bin": HOSTILE,
        "global_tags": {"cluster": HOSTILE, "site-2": "${INFLUX_TOKEN}"},
    },
}


def check_golden(name: str, text: str, directory: Path = GOLDEN) -> None:
    golden.check_golden(name, text, directory, ".conf")


def rendered(case: str) -> str:
    return render_telegraf_config(make_params(CASES[case]))


def telegraf_reads(value: str) -> str:
    """What Telegraf makes of a parsed string value: its environment substitution turns ``$$``
    into ``$`` (left to right; ``${VAR}`` and ``$VAR`` would be replaced, and must not be left)."""
    assert re.fullmatch(r"(?:[^$]|\$\$)*", value), f"an unescaped '$' in {value!r}"
    return value.replace("$$", "$")


def parsed(case: str) -> dict[str, Any]:
    return tomllib.loads(rendered(case))


# --------------------------------------------------------------------------- golden files
@pytest.mark.parametrize("case", sorted(CASES))
def test_render_matches_the_golden_file(case):
    check_golden(case, rendered(case))


def test_every_golden_file_has_a_case():
    assert sorted(p.stem for p in GOLDEN.glob("*.conf")) == sorted(CASES)


def test_a_missing_golden_file_fails_and_is_not_written(tmp_path, monkeypatch):
    monkeypatch.delenv("CLUSTERKIT_UPDATE_GOLDEN", raising=False)
    with pytest.raises(pytest.fail.Exception, match="missing"):
        check_golden("nothing-here", "text\n", tmp_path)
    assert not (tmp_path / "nothing-here.conf").exists()
    (tmp_path / "x.conf").write_text("old\n")
    with pytest.raises(pytest.fail.Exception, match=r"(?s)differs.*-old\n\+new"):
        check_golden("x", "new\n", tmp_path)
    monkeypatch.setenv("CLUSTERKIT_UPDATE_GOLDEN", "1")
    check_golden("nothing-here", "text\n", tmp_path)
    assert (tmp_path / "nothing-here.conf").read_text() == "text\n"


def test_renders_are_reproducible_and_say_where_they_come_from():
    for case in CASES:
        text = rendered(case)
        assert text == rendered(case)
        assert text.startswith("# Telegraf configuration rendered by clusterkit (clusterkit telemetry telegraf-config)")
        assert text.endswith("\n") and not text.endswith("\n\n")
        assert "Telegraf 1.39.0 or later" in text and telegraf.MIN_TELEGRAF == "1.39.0"
        assert not re.search(r"20[0-9]{2}-[0-9]{2}-[0-9]{2}", text)


def test_the_template_is_package_data():
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    patterns = pyproject["tool"]["setuptools"]["package-data"]["clusterkit"]
    assert "telemetry/templates/*.j2" in patterns
    assert TEMPLATE.is_file()


def test_every_value_in_the_template_goes_through_a_toml_filter():
    exprs = re.findall(r"{{(.*?)}}", TEMPLATE.read_text(encoding="utf-8"), re.S)
    assert exprs
    names = "|".join(FILTERS)
    for expr in exprs:
        assert re.search(rf"\|\s*(?:{names})\s*$", expr), f"{{{{{expr}}}}} is not quoted for TOML"


# --------------------------------------------------------------------------- structure
def test_the_default_config_has_the_expected_structure():
    doc = parsed("default")
    agent = doc["agent"]
    assert agent["interval"] == "5m" and agent["hostname"] == "" and agent["omit_hostname"] is False
    assert doc["global_tags"] == {}
    (exe,) = doc["inputs"]["exec"]
    commands = exe["commands"]
    assert isinstance(commands, list) and all(isinstance(c, list) for c in commands)
    assert all(isinstance(w, str) for c in commands for w in c)
    assert commands == [["clusterkit", "node-check", "--format", "influx"]]
    assert exe["data_format"] == "influx" and exe["timeout"] == "5s"
    assert exe["influx_timestamp_precision"] == "1ms"  # docs/metrics.md: clusterkit's timestamps are ms
    assert doc["inputs"]["nvidia_smi"] == [{}]
    assert doc["inputs"]["infiniband"] == [{"gather_rdma": True}]
    (out,) = doc["outputs"]["influxdb_v2"]
    assert out == {"urls": ["http://influx.example:8086"], "token": "${INFLUX_TOKEN}", "organization": "ops",
                   "bucket": "clusterkit"}


def test_the_full_config():
    doc = parsed("full")
    assert doc["agent"]["interval"] == "10m"
    assert doc["global_tags"] == {"cluster": "prod", "partition": "gpu", "site": "eu-west-1"}
    (exe,) = doc["inputs"]["exec"]
    assert exe["commands"] == [["/opt/clusterkit/bin/clusterkit", "node-check", "--format", "influx",
                                "--profile", "h200-sxm"]]
    assert exe["timeout"] == "30s"
    assert doc["inputs"]["nvidia_smi"] == [{"bin_path": "/usr/local/bin/nvidia-smi"}]
    assert doc["inputs"]["infiniband"] == [{"gather_rdma": False}]
    (out,) = doc["outputs"]["influxdb_v2"]
    assert out["urls"] == ["https://influx-a.example:8086", "https://influx-b.example:8086"]
    assert (out["organization"], out["bucket"], out["token"]) == ("gpu-ops", "fleet", "${INFLUX_TOKEN}")


@pytest.mark.parametrize("off, gone", [
    ({"node_check": False}, ("inputs", "exec")), ({"nvidia_smi": False}, ("inputs", "nvidia_smi")),
    ({"infiniband": False}, ("inputs", "infiniband")), ({"influx_output": False}, ("outputs", None)),
])
def test_each_input_and_the_output_can_be_turned_off(off, gone):
    doc = tomllib.loads(render_telegraf_config(make_params({**OUT, **off})))
    section, name = gone
    if name is None:
        assert section not in doc
    else:
        assert name not in doc[section]
        assert len(doc[section]) == 2  # the other two inputs stay


def test_the_clusterkit_command_and_node_check_args_are_argv_words():
    doc = parsed("inputs-only")
    assert doc["inputs"] == {"exec": doc["inputs"]["exec"]} and "outputs" not in doc
    assert doc["inputs"]["exec"][0]["commands"] == [["python3", "-m", "clusterkit", "node-check", "--format", "influx"]]
    p = make_params({**OUT, "node_check_args": "--profile 'my profile.yaml' --checks gpu,ib"})
    assert p.node_check_argv()[4:] == ["--profile", "my profile.yaml", "--checks", "gpu,ib"]


# --------------------------------------------------------------------------- hostile values
def test_hostile_values_round_trip_exactly():
    doc = parsed("hostile")
    (exe,) = doc["inputs"]["exec"]
    (argv,) = exe["commands"]
    assert [telegraf_reads(w) for w in argv] == [HOSTILE_PROGRAM, HOSTILE, "node-check", "--format", "influx",
                                                 HOSTILE, "--weights-dir", "$HOME/w"]
    (out,) = doc["outputs"]["influxdb_v2"]
    assert [telegraf_reads(u) for u in out["urls"]] == [HOSTILE_URL]
    assert telegraf_reads(out["organization"]) == HOSTILE and telegraf_reads(out["bucket"]) == HOSTILE
    assert out["token"] == "${INFLUX_TOKEN}"  # the one reference Telegraf is meant to replace
    assert telegraf_reads(doc["inputs"]["nvidia_smi"][0]["bin_path"]) == HOSTILE
    assert {k: telegraf_reads(v) for k, v in doc["global_tags"].items()} == {"cluster": HOSTILE,
                                                                             "site-2": "${INFLUX_TOKEN}"}
    # nothing the values hold became a table or a key of its own
    assert set(doc) == {"global_tags", "agent", "inputs", "outputs"}
    assert set(doc["outputs"]) == {"influxdb_v2"} and set(doc["inputs"]) == {"exec", "nvidia_smi", "infiniband"}


#: A basic string as Telegraf's TOML parser (influxdata/toml, parse.peg) reads one: no raw
#: control character, tab or DEL; escapes b t n f r " / \ uXXXX UXXXXXXXX only.
INFLUX_TOML_BASIC = re.compile(r'"(?:[ !#-\[\]-\U0010FFFF]|\\[btnfr"/\\]|\\u[0-9A-Fa-f]{4}|\\U[0-9A-Fa-f]{8})*"')


@pytest.mark.parametrize("case", sorted(CASES))
def test_every_string_is_one_telegraf_can_parse(case):
    for line in rendered(case).splitlines():
        assert not re.search(r"[\x00-\x08\x0a-\x1f\x7f]", line)
        if line.lstrip().startswith("#") or "=" not in line:
            continue
        value = line.split("=", 1)[1].strip()
        strings = re.findall(r'"(?:[^"\\]|\\.)*"', value)
        assert re.sub(r'"(?:[^"\\]|\\.)*"', "", value).strip(" ,[]") in ("", "true", "false"), line
        for s in strings:
            assert INFLUX_TOML_BASIC.fullmatch(s), s


def test_no_token_anywhere(monkeypatch):
    secret = "s3cr3t-T0ken-value"
    monkeypatch.setenv("INFLUX_TOKEN", secret)
    monkeypatch.setenv("CLUSTERKIT_INFLUX_TOKEN_FILE", "/nonexistent/token")
    for case in CASES:
        text = rendered(case)
        assert secret not in text and "token_file" not in text
        assert [ln.strip() for ln in text.splitlines() if re.match(r"\s*token\s*=", ln)] in (
            [], ['token = "${INFLUX_TOKEN}"'])
    with pytest.raises(UsageError, match="token is never a parameter"):
        make_params({**OUT, "token": secret})
    with pytest.raises(UsageError, match="token is never a parameter"):
        make_params({**OUT, "influx_token": secret})
    help_text = CliRunner().invoke(telegraf_config_cmd, ["--help"]).output
    assert "--influx-token" not in help_text and "--token" not in help_text


# --------------------------------------------------------------------------- filters
@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=60))
def test_toml_basic_round_trips_any_text(text):
    assert tomllib.loads(f"x = {toml_basic(text)}\n")["x"] == text
    quoted = toml_str(text)
    assert INFLUX_TOML_BASIC.fullmatch(quoted)
    assert telegraf_reads(tomllib.loads(f"x = {quoted}\n")["x"]) == text


def test_filters():
    assert toml_basic('a"b\\c\td\x7f\u2028é') == '"a\\"b\\\\c\\td\\u007F\\u2028é"'
    assert toml_str("${INFLUX_TOKEN} $HOME $$") == '"$${INFLUX_TOKEN} $$HOME $$$$"'
    assert toml_array([]) == "[]"
    assert toml_array(["a", ["b", "c$"]]) == '["a", ["b", "c$$"]]'
    assert toml_bool(True) == "true" and toml_bool(False) == "false"
    assert toml_key("site-2") == "site-2"
    for bad in (lambda: toml_str(None), lambda: toml_str(True), lambda: toml_str(["a"]), lambda: toml_array("ab"),
                lambda: toml_array({"a": 1}), lambda: toml_bool("true"), lambda: toml_key("a b"),
                lambda: toml_key('a"'), lambda: toml_basic("\ud800")):
        with pytest.raises(UsageError):
            bad()


# --------------------------------------------------------------------------- parameters
@pytest.mark.parametrize("params, message", [
    ({}, "needs influx_urls, influx_org, influx_bucket"),
    ({**OUT, "nope": 1}, "unknown parameter 'nope'"),
    ({**OUT, "interval": "5"}, "interval: '5' is not a duration"),
    ({**OUT, "interval": "5m\n[x]"}, "interval: .* is not a duration"),
    ({**OUT, "interval": 300}, "interval: give a duration as a string"),
    ({**OUT, "interval": "0s"}, "must be above zero"),
    ({**OUT, "exec_timeout": "1h"}, "exec_timeout 1h is longer than interval 5m"),
    ({**OUT, "influx_urls": ["influx:8086"]}, "is not an http:// or https:// URL"),
    ({**OUT, "influx_urls": ["http://a b/"]}, "white space or a control character"),
    ({**OUT, "influx_urls": ["http://a:99999/"]}, "is not a URL"),
    ({**OUT, "influx_org": ""}, "influx_org: must not be empty"),
    ({**OUT, "influx_bucket": "a\x00b"}, "NUL"),
    ({**OUT, "influx_bucket": "a\ud800"}, "surrogate"),
    ({**OUT, "influx_bucket": 5}, "give a string"),
    ({**OUT, "clusterkit_command": []}, "at least one word"),
    ({**OUT, "clusterkit_command": "'a"}, "cannot split"),
    ({**OUT, "clusterkit_command": ["/opt/ck[1]/clusterkit"]}, "glob pattern"),
    ({**OUT, "node_check_args": ["--format=json"]}, "--format=json"),
    ({**OUT, "node_check_args": ["--healthcheck"]}, "not for it"),
    ({**OUT, "nvidia_smi": "false"}, "nvidia_smi: Input should be a valid boolean"),
    ({**OUT, "global_tags": {"host": "x"}}, "'host' is a tag of clusterkit's own points"),
    ({**OUT, "global_tags": {"a b": "x"}}, "not a tag name"),
    ({**OUT, "global_tags": {"a": ""}}, "global_tags.a: must not be empty"),
    ({**OUT, "node_check": False, "nvidia_smi": False, "infiniband": False}, "every input is off"),
])
def test_bad_parameters_are_one_line_usage_errors(params, message):
    with pytest.raises(UsageError) as e:
        make_params(params)
    text = str(e.value)
    assert re.search(message, text), text
    assert "\n" not in text and text.startswith("telegraf config: ")


def test_params_are_frozen_and_render_takes_a_mapping_too():
    p = make_params(OUT)
    assert isinstance(p, TelegrafParams)
    with pytest.raises(Exception):
        p.interval = "1m"  # type: ignore[misc]
    assert render_telegraf_config(OUT) == render_telegraf_config(p)
    with pytest.raises(UsageError):
        render_telegraf_config({"interval": "x"})
    assert TelegrafParams(**OUT) == p
    with pytest.raises(UsageError, match=r"^telegraf config: interval: 'x' is not a duration"):
        TelegrafParams(**OUT, interval="x")


# --------------------------------------------------------------------------- the command
def _run(args: list[str]) -> Any:
    return CliRunner().invoke(telegraf_config_cmd, args, standalone_mode=False)


def test_the_command_prints_what_the_params_render():
    r = _run(["--clusterkit-command", "/opt/clusterkit/bin/clusterkit", "--node-check-arg=--profile",
              "--node-check-arg", "h200-sxm", "--interval", "10m", "--exec-timeout", "30s",
              "--influx-url", "https://influx-a.example:8086", "--influx-url", "https://influx-b.example:8086",
              "--influx-org", "gpu-ops", "--influx-bucket", "fleet", "--nvidia-smi-bin", "/usr/local/bin/nvidia-smi",
              "--no-gather-rdma", "--global-tag", "cluster=prod", "--global-tag", "partition=gpu",
              "--global-tag", "site=eu-west-1"])
    assert r.exception is None, r.output
    assert r.output == rendered("full")
    r = _run(["--no-influx-output", "--no-nvidia-smi", "--no-infiniband", "--clusterkit-command",
              "python3 -m clusterkit"])
    assert r.exception is None and r.output == rendered("inputs-only")
    r = _run(["--no-node-check", "--influx-url", "http://influx.example:8086", "--influx-org", "ops",
              "--influx-bucket", "clusterkit"])
    assert r.exception is None and r.output == rendered("no-node-check")


def test_the_command_keeps_hostile_values():
    r = _run(["--clusterkit-command", f"'{HOSTILE_PROGRAM}'", "--node-check-arg", HOSTILE, "--influx-url",
              HOSTILE_URL, "--influx-org", HOSTILE, "--influx-bucket", HOSTILE, "--global-tag", f"cluster={HOSTILE}"])
    assert r.exception is None, r.exception
    doc = tomllib.loads(r.output)
    assert [telegraf_reads(w) for w in doc["inputs"]["exec"][0]["commands"][0]] == [
        HOSTILE_PROGRAM, "node-check", "--format", "influx", HOSTILE]
    assert telegraf_reads(doc["global_tags"]["cluster"]) == HOSTILE


@pytest.mark.parametrize("args, message", [
    ([], "--influx-url, --influx-org, --influx-bucket"),
    (["--no-influx-output", "--interval", "5x"], "--interval: '5x' is not a duration"),
    (["--no-influx-output", "--interval", "1s"], "--exec-timeout 5s is longer than --interval 1s"),
    (["--no-influx-output", "--global-tag", "cluster"], "--global-tag 'cluster': give KEY=VALUE"),
    (["--no-influx-output", "--global-tag", "a=1", "--global-tag", "a=2"], "--global-tag a: given twice"),
    (["--no-influx-output", "--global-tag", "gpu=1"], "--global-tag gpu: 'gpu' is a tag"),
    (["--no-influx-output", "--clusterkit-command", "'x"], "--clusterkit-command .*cannot split"),
    (["--no-influx-output", "--node-check-arg", "--json"], "--node-check-arg: '--json'"),
    (["--influx-url", "ftp://x", "--influx-org", "o", "--influx-bucket", "b"], "--influx-url: 'ftp://x'"),
])
def test_the_command_names_the_option_at_fault(args, message):
    r = _run(args)
    assert isinstance(r.exception, UsageError), r.output
    assert re.search(message, str(r.exception)), str(r.exception)


def test_dash_o_writes_the_file_atomically(tmp_path):
    target = tmp_path / "telegraf.conf"
    target.write_text("old")
    r = _run(["--no-influx-output", "-o", str(target)])
    assert r.exception is None and r.output == ""
    assert target.read_text(encoding="utf-8") == render_telegraf_config({"influx_output": False})
    assert stat.S_IMODE(target.stat().st_mode) == 0o644
    assert sorted(p.name for p in tmp_path.iterdir()) == ["telegraf.conf"]  # no temporary file left
    r = _run(["--no-influx-output", "-o", str(tmp_path / "missing" / "telegraf.conf")])
    assert isinstance(r.exception, OutputError) and "cannot write" in str(r.exception)


# --------------------------------------------------------------------------- Telegraf itself
def _telegraf_version(binary: str) -> tuple[int, ...]:
    p = subprocess.run([binary, "--version"], capture_output=True, text=True, timeout=30)
    m = re.search(r"(\d+)\.(\d+)\.(\d+)", p.stdout + p.stderr)
    return tuple(int(x) for x in m.groups()) if m else (0,)


@pytest.mark.skipif(shutil.which("telegraf") is None,
                    reason="telegraf is not installed (not in Debian's archive; InfluxData's repository has it)")
def test_telegraf_reads_the_config_and_runs_node_check(tmp_path):
    binary = shutil.which("telegraf")
    assert binary is not None
    if _telegraf_version(binary) < (1, 39, 0):
        pytest.skip("telegraf older than 1.39.0 cannot read argv-array exec commands")
    stand_in = tmp_path / "ck dir" / "clusterkit"
    stand_in.parent.mkdir()
    # a stand-in for clusterkit: checks its argv, prints one point with a millisecond timestamp
    stand_in.write_text('#!/bin/sh\n[ "$1 $2 $3" = "node-check --format influx" ] || exit 9\n'
                        '[ "$4" = \'$HOME "x"\' ] || exit 8\n'
                        'echo "gpu,check=gpu.temperature,gpu=3,host=gpu-017 status_code=0i,value=31 1741064767000"\n')
    stand_in.chmod(0o755)
    conf = tmp_path / "telegraf.conf"
    conf.write_text(render_telegraf_config({"clusterkit_command": [str(stand_in)], "node_check_args": ['$HOME "x"'],
                                            "nvidia_smi": False, "infiniband": False, **OUT,
                                            "global_tags": {"cluster": "$HOME"}}))
    p = subprocess.run([binary, "--config", str(conf), "--test", "--input-filter", "exec"], capture_output=True,
                       text=True, timeout=60, env={**os.environ, "INFLUX_TOKEN": "x"})
    assert p.returncode == 0, p.stderr
    assert "gpu,check=gpu.temperature" in p.stdout and "1741064767000000000" in p.stdout, p.stdout + p.stderr
    assert "cluster=$HOME" in p.stdout, p.stdout  # "$$HOME" read back as "$HOME", not the variable
