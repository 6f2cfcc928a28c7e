"""`clusterkit slurm render` as a user runs it: the script on stdout (or in -o FILE), parameters
from --params, --set and the dedicated options, user templates, and every mistake one line with
exit 2."""

from __future__ import annotations

import shlex
from pathlib import Path

import pytest

from clusterkit.slurm.templates import render
from tests.cli.test_cli import ck, one_error_line

GOLDEN = Path(__file__).resolve().parent.parent / "golden" / "slurm"


def test_render_prints_the_golden_script():
    p = ck("slurm", "render", "validate")
    assert p.returncode == 0 and p.stderr == ""
    assert p.stdout == (GOLDEN / "validate-default.sh").read_text()
    p = ck("slurm", "render", "nccl", "--nodes", "2", "--set", "nccl_tests_dir=/opt/nccl-tests/build")
    assert p.returncode == 0, p.stderr
    assert p.stdout == (GOLDEN / "nccl-2nodes.sh").read_text()


def test_list():
    p = ck("slurm", "render", "--list")
    assert p.returncode == 0
    names = [ln.split()[0] for ln in p.stdout.splitlines()]
    assert names == ["validate", "nccl"]
    assert "validate --via slurm" in p.stdout


def test_dedicated_options_set_and_params_file(tmp_path):
    params = tmp_path / "p.yaml"
    params.write_text("nodes: 8\npartition: from-file\nenv:\n  NCCL_DEBUG: WARN\n  UCX_TLS: rc\n"
                      "nccl_tests_dir: /opt/nccl-tests/build\nextra_args: [-g, '1']\n")
    p = ck("slurm", "render", "nccl", "--params", str(params), "--partition", "gpu", "--time", "1:30:00",
           "--gpus-per-node", "4", "--output-file", "logs/%j.out", "--set", "env.NCCL_DEBUG=INFO",
           "--set", "one_gpu_per_task=true", "--set", "iters=5", "--set", "job_name=a #b")
    assert p.returncode == 0, p.stderr
    assert p.stdout == render("nccl", {
        "nodes": 8, "partition": "gpu", "time": "1:30:00", "gpus_per_node": 4, "output_file": "logs/%j.out",
        "env": {"NCCL_DEBUG": "INFO", "UCX_TLS": "rc"}, "nccl_tests_dir": "/opt/nccl-tests/build",
        "extra_args": ["-g", "1"], "one_gpu_per_task": True, "iters": 5, "job_name": "a #b"})
    assert "#SBATCH --time=1:30:00\n" in p.stdout  # as written, not YAML's 5400
    assert "#SBATCH --job-name='a #b'\n" in p.stdout  # as written, not cut at ' #'


def test_set_values_are_yaml_except_for_text_parameters():
    p = ck("slurm", "render", "validate", "--set", "checks=[gpu, ib]", "--set", "sim=true", "--set", "timeout=60",
           "--set", "partition=on", "--set", "account=", "--set", "extra_args=[--baseline, prod]")
    assert p.returncode == 0, p.stderr
    assert p.stdout == render("validate", {"checks": ["gpu", "ib"], "sim": True, "timeout": 60, "partition": "on",
                                           "extra_args": ["--baseline", "prod"]})


def test_out_writes_the_file(tmp_path):
    out = tmp_path / "job.sh"
    p = ck("slurm", "render", "validate", "--set", "sim=true", "-o", str(out))
    assert p.returncode == 0 and p.stdout == "" and p.stderr == ""
    assert out.read_text() == render("validate", {"sim": True})
    p = ck("slurm", "render", "validate", "-o", str(tmp_path / "none" / "job.sh"))
    assert p.returncode == 2 and "-o " in one_error_line(p) and "cannot write" in one_error_line(p)


def test_hostile_job_name_stays_one_word():
    name = 'x"; rm -rf / #'
    p = ck("slurm", "render", "validate", "--set", f"job_name={name}")
    assert p.returncode == 0, p.stderr
    (line,) = [ln for ln in p.stdout.splitlines() if ln.startswith("#SBATCH --job-name=")]
    assert shlex.split(line[len("#SBATCH "):]) == [f"--job-name={name}"]


def test_template_dir(tmp_path):
    (tmp_path / "validate.sbatch.j2").write_text("#!/bin/bash\n# ours\nsrun -N {{ nodes | shq }} true\n")
    (tmp_path / "burn.sbatch.j2").write_text("#!/bin/bash\necho {{ minutes | shq }} {{ nodes | shq }}\n")
    (tmp_path / "broken.sbatch.j2").write_text("#!/bin/bash\necho {{ minutes | shq }}\n\necho {{ oops }}\n")
    d = str(tmp_path)
    p = ck("slurm", "render", "validate", "--template-dir", d, "--nodes", "3")
    assert p.returncode == 0 and p.stdout == "#!/bin/bash\n# ours\nsrun -N 3 true\n"
    p = ck("slurm", "render", "burn", "--template-dir", d, "--set", "minutes=5", "--nodes", "2")
    assert p.returncode == 0 and p.stdout == "#!/bin/bash\necho 5 2\n"
    p = ck("slurm", "render", "broken", "--template-dir", d, "--set", "minutes=5")
    assert p.returncode == 2
    assert one_error_line(p) == "clusterkit: error: template broken: line 4: 'oops' is undefined"
    listed = ck("slurm", "render", "--list", "--template-dir", d)
    assert [ln.split()[0] for ln in listed.stdout.splitlines()] == ["validate", "nccl", "broken", "burn"]


@pytest.mark.parametrize("args, message", [
    (["nope"], "unknown template 'nope'; known: validate, nccl"),
    ([], "say which template"),
    (["validate", "--list"], "--list takes no TEMPLATE"),
    (["validate", "--set", "bogus=1"], "template validate: unknown parameter 'bogus'"),
    (["validate", "--set", "nodes"], "--set nodes: give KEY=VALUE"),
    (["validate", "--set", "no-dash=1"], "--set no-dash=1: 'no-dash' is not a parameter name"),
    (["validate", "--set", "nodes=[1"], "--set nodes: '[1' is not a YAML value"),
    (["validate", "--set", "nodes=two"], "template validate: nodes: Input should be a valid integer"),
    (["validate", "--nodes", "0"], "Invalid value for '--nodes'"),
    (["validate", "--nodes", "2", "--set", "nodes=3"], "--nodes and --set nodes=… both set nodes"),
    (["validate", "--time", "soon"], "template validate: time: 'soon' is not a Slurm time"),
    (["validate", "--set", "ib_bw=maybe"], "template validate: ib_bw: Input should be a valid boolean"),
    (["validate", "--template-dir", "/nonexistent-dir"], "template directory /nonexistent-dir: not a directory"),
    (["nccl"], "template nccl: nccl_tests_dir: a required parameter"),
    (["nccl", "--set", "nccl_tests_dir=/x", "--set", "env.lower=1"], "template nccl: env: 'lower' is not an"),
    (["nccl", "--set", "nccl_tests_dir=/x", "--set", "env=1", "--set", "env.A=1"], "--set env.A=1: env is not a mapping"),
    (["nccl", "--set", "nccl_tests_dir=/x", "--gpus-per-node", "0"], "template nccl: gpus_per_node: Input should be"),
])
def test_mistakes_are_one_line_and_exit_2(args, message):
    p = ck("slurm", "render", *args)
    assert p.returncode == 2, p.stdout + p.stderr
    assert message in one_error_line(p)
    assert p.stdout == ""


def test_params_file_mistakes(tmp_path):
    f = tmp_path / "p.yaml"
    f.write_text("- a\n- b\n")
    p = ck("slurm", "render", "validate", "--params", str(f))
    assert p.returncode == 2 and "expected a mapping of parameters, got list" in one_error_line(p)
    f.write_text("nodes: 1\nnodes: 2\n")
    p = ck("slurm", "render", "validate", "--params", str(f))
    assert p.returncode == 2 and "duplicate key 'nodes'" in one_error_line(p)
    f.write_text("time: 1:30:00\n")  # YAML reads 5400: refused, not taken as minutes
    p = ck("slurm", "render", "validate", "--params", str(f))
    assert p.returncode == 2 and "time: give the time as a string" in one_error_line(p)
    p = ck("slurm", "render", "validate", "--params", str(tmp_path / "none.yaml"))
    assert p.returncode == 2 and "cannot read" in one_error_line(p)
