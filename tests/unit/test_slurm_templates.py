"""Slurm job templates: golden files, shell checks (bash -n, shellcheck), quoting of hostile values
(the rendered scripts are run with stand-ins for clusterkit, srun and nccl-tests), parameter
validation and the errors of user templates.

Golden files live in tests/golden/slurm/. A missing or different one fails; to (re)write them on
purpose, run these tests with CLUSTERKIT_UPDATE_GOLDEN=1 and review the diff.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import stat
import subprocess
from pathlib import Path
from typing import Any

import pytest

from clusterkit.errors import UsageError
from clusterkit.slurm import templates
from clusterkit.slurm.templates import render, shq, shq_join
from tests.infra import golden

GOLDEN = Path(__file__).resolve().parent.parent / "golden" / "slurm"
BUILTIN_DIR = Path(templates.__file__).resolve().parent / "templates"

HOSTILE_NAME = 'x"; rm -rf / #'
HOSTILE_DIR = "/scratch/my tests/$(touch PWNED)/`touch PWNED`"

#: golden file name -> (template, parameters)
CASES: dict[str, tuple[str, dict[str, Any]]] = {
    "validate-default": ("validate", {}),
    "validate-sim-partition": ("validate", {"sim": True, "partition": "gpu", "nodes": 4, "time": "15",
                                            "checks": "gpu,system", "timeout": 300}),
    "validate-full": ("validate", {
        "job_name": "acceptance", "nodes": 32, "gpus_per_node": 0, "time": "1-00:00:00",
        "output_file": "logs/%x-%j.out", "partition": "batch", "account": "ops", "reservation": "maint",
        "exclusive": False, "sbatch_options": ["--constraint=h100", "--qos=high"],
        "clusterkit_command": ["/opt/clusterkit/bin/clusterkit"], "report": "reports/%j.json",
        "junit": "reports/%j.xml", "profile": "h200-sxm", "checks": ["gpu", "nvlink", "ib"], "timeout": 1800.5,
        "sim": "fleets/lab.yaml", "ib_bw": True, "storage_bench": True, "stress": True,
        "extra_args": ["--baseline", "prod", "-v"]}),
    "validate-hostile": ("validate", {
        "job_name": HOSTILE_NAME, "partition": "gpu'; reboot; '", "output_file": "out $(id).log",
        "clusterkit_command": [HOSTILE_DIR + "/clusterkit", "--flag=$HOME"], "report": HOSTILE_DIR + "/r-%j.json",
        "junit": "a'b\"c $(touch PWNED).xml", "profile": "$(touch PWNED).yaml", "sim": "FOO=bar",
        "extra_args": ["--weights-dir", "/w; touch PWNED", "&&", "|"]}),
    "nccl-2nodes": ("nccl", {"nccl_tests_dir": "/opt/nccl-tests/build", "nodes": 2}),
    "nccl-env": ("nccl", {
        "nccl_tests_dir": "/opt/nccl-tests/build", "nodes": 4, "gpus_per_node": 4, "partition": "gpu",
        "test": "all_gather_perf", "min_bytes": "1M", "max_bytes": "8G", "iters": 50, "warmup_iters": 10,
        "check": 0, "mpi": "pmi2", "one_gpu_per_task": True, "extra_args": ["-g", "1", "-z", "1"],
        "env": {"NCCL_DEBUG": "INFO", "NCCL_IB_HCA": "=mlx5_0,mlx5_3", "UCX_TLS": "rc,sm",
                "NCCL_SOCKET_IFNAME": "^lo,docker"}}),
    "nccl-hostile": ("nccl", {
        "nccl_tests_dir": HOSTILE_DIR, "job_name": HOSTILE_NAME, "account": "a b",
        "env": {"NCCL_DEBUG": "$(touch PWNED)", "NCCL_X": "it's \"quoted\" `touch PWNED`"},
        "extra_args": ["-x", "$(touch PWNED)", "; touch PWNED"]}),
}


def check_golden(name: str, text: str, directory: Path = GOLDEN) -> None:
    golden.check_golden(name, text, directory, ".sh")


def rendered(case: str) -> str:
    name, params = CASES[case]
    return render(name, params)


# --------------------------------------------------------------------------- golden files
@pytest.mark.parametrize("case", sorted(CASES))
def test_render_matches_the_golden_file(case):
    check_golden(case, rendered(case))


def test_every_golden_file_has_a_case():
    assert sorted(p.stem for p in GOLDEN.glob("*.sh")) == sorted(CASES)


def test_a_missing_golden_file_fails_and_is_not_written(tmp_path, monkeypatch):
    monkeypatch.delenv("CLUSTERKIT_UPDATE_GOLDEN", raising=False)
    with pytest.raises(pytest.fail.Exception, match="missing"):
        check_golden("nothing-here", "text\n", tmp_path)
    assert not (tmp_path / "nothing-here.sh").exists()
    (tmp_path / "x.sh").write_text("old\n")
    with pytest.raises(pytest.fail.Exception, match=r"(?s)differs.*-old\n\+new"):
        check_golden("x", "new\n", tmp_path)
    monkeypatch.setenv("CLUSTERKIT_UPDATE_GOLDEN", "1")
    check_golden("nothing-here", "text\n", tmp_path)
    assert (tmp_path / "nothing-here.sh").read_text() == "text\n"


def test_renders_are_reproducible_and_say_where_they_come_from():
    for case, (name, _) in CASES.items():
        text = rendered(case)
        assert text == rendered(case)
        lines = text.splitlines()
        assert lines[0] == "#!/bin/bash" and text.endswith("\n") and not text.endswith("\n\n")
        assert lines[1] == f"# Rendered by clusterkit from the Slurm job template {name}"
        assert "sleep" not in text and not re.search(r"20[0-9]{2}-[0-9]{2}-[0-9]{2}", text)


# --------------------------------------------------------------------------- shell checks
def _script(tmp_path: Path, case: str) -> Path:
    path = tmp_path / f"{case}.sh"
    path.write_text(rendered(case))
    return path


@pytest.mark.parametrize("case", sorted(CASES))
def test_bash_n(tmp_path, case):
    p = subprocess.run(["bash", "-n", str(_script(tmp_path, case))], capture_output=True, text=True)
    assert p.returncode == 0, p.stderr


@pytest.mark.skipif(shutil.which("shellcheck") is None,
                    reason="shellcheck is not installed (apt-get install shellcheck; CI installs it)")
@pytest.mark.parametrize("case", sorted(CASES))
def test_shellcheck(tmp_path, case):
    p = subprocess.run(["shellcheck", "-s", "bash", str(_script(tmp_path, case))], capture_output=True, text=True)
    assert p.returncode == 0, p.stdout + p.stderr


def test_every_value_in_the_builtin_templates_goes_through_shq():
    sources = sorted(BUILTIN_DIR.glob("*" + templates.SUFFIX))
    assert [p.name[: -len(templates.SUFFIX)] for p in sources] == sorted(templates.TEMPLATES)
    for path in sources:
        exprs = re.findall(r"{{(.*?)}}", path.read_text(), re.S)
        assert exprs
        for expr in exprs:
            assert re.search(r"\|\s*shq(_join)?\s*$", expr), f"{path.name}: {{{{{expr}}}}} is not quoted"


# --------------------------------------------------------------------------- hostile values
def sbatch_words(line: str) -> list[str]:
    """The words of an ``#SBATCH`` line as sbatch reads them (Slurm's src/sbatch/opt.c,
    _get_argument): single or double quotes, a backslash escapes the next character even inside
    quotes, an unquoted '#' starts a comment, an unmatched quote is fatal."""
    assert line.startswith("#SBATCH")
    words: list[str] = []
    ptr, n = len("#SBATCH"), len(line)
    while True:
        while ptr < n and line[ptr].isspace():
            ptr += 1
        if ptr >= n:
            return words
        arg, quote, escape = "", "", False
        while ptr < n and (quote or not line[ptr].isspace()):
            c = line[ptr]
            if escape:
                escape = False
            elif c == "\\":
                escape, ptr = True, ptr + 1
                continue
            elif quote:
                if c == quote:
                    quote, ptr = "", ptr + 1
                    continue
            elif c in "'\"":
                quote, ptr = c, ptr + 1
                continue
            elif c == "#":
                return words + [arg] if arg else words
            arg += c
            ptr += 1
        assert not quote, f"sbatch: unmatched {quote} in {line!r}"
        if arg:
            words.append(arg)


def sbatch_args(text: str, option: str) -> list[str]:
    """The words of the ``#SBATCH`` line for ``option``, read as sbatch reads them; a shell
    (shlex) reads the same words."""
    lines = [ln for ln in text.splitlines() if ln.startswith(f"#SBATCH {option}")]
    assert len(lines) == 1, lines
    words = sbatch_words(lines[0])
    assert shlex.split(lines[0][len("#SBATCH "):]) == words
    return words


def test_sbatch_words_reads_like_sbatch():
    assert sbatch_words("#SBATCH --job-name=a  # comment") == ["--job-name=a"]
    assert sbatch_words("#SBATCH --comment=\"a b\" -J 'x #y'") == ["--comment=a b", "-J", "x #y"]
    assert sbatch_words("#SBATCH -J 'a\\b'") == ["-J", "ab"]  # unlike a shell: why backslashes are refused


def test_hostile_sbatch_values_stay_one_word():
    text = rendered("validate-hostile")
    assert sbatch_args(text, "--job-name") == [f"--job-name={HOSTILE_NAME}"]
    assert sbatch_args(text, "--partition") == ["--partition=gpu'; reboot; '"]
    assert sbatch_args(text, "-o") == ["-o", "out $(id).log"]
    nccl = rendered("nccl-hostile")
    assert sbatch_args(nccl, "--job-name") == [f"--job-name={HOSTILE_NAME}"]
    assert sbatch_args(nccl, "--account") == ["--account=a b"]
    for case in CASES:  # every #SBATCH line of every case is read by sbatch and a shell alike
        for line in rendered(case).splitlines():
            if line.startswith("#SBATCH"):
                assert shlex.split(line[len("#SBATCH"):]) == sbatch_words(line)


def test_hostile_assignments_keep_their_value(tmp_path):
    """Each assignment line, alone: bash -n accepts it, shlex reads back the value, and bash
    itself ends up with exactly that value and runs nothing."""
    text = rendered("validate-hostile")
    for var, value in (("report", HOSTILE_DIR + "/r-%j.json"), ("junit", "a'b\"c $(touch PWNED).xml")):
        (line,) = [ln for ln in text.splitlines() if ln.startswith(f"{var}=") and "//" not in ln]
        assert shlex.split(line[len(var) + 1:]) == [value]
        p = subprocess.run(["bash", "-n", "-c", line], capture_output=True, text=True)
        assert p.returncode == 0, p.stderr
        p = subprocess.run(["bash", "-c", f'{line}\nprintf %s "${var}"'], capture_output=True, text=True, cwd=tmp_path)
        assert p.stdout == value
    assert not (tmp_path / "PWNED").exists()


def test_shq_round_trips():
    for value in (HOSTILE_NAME, HOSTILE_DIR, "", "'", "''", "a'b", "=x", "A=b", "~root", "*", "$HOME", "-n", "é ü"):
        assert shlex.split(shq(value)) == [value]
    assert shlex.split(shq_join(["a b", "$(x)", "'"])) == ["a b", "$(x)", "'"]
    assert shq_join("one word") == "'one word'"
    assert shq(8) == "8"
    with pytest.raises(UsageError, match="line break"):
        shq("a\nb")
    with pytest.raises(UsageError, match="unset"):
        shq(None)


def _fake(path: Path, body: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("#!/bin/bash\n" + body)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


def test_validate_script_runs_clusterkit_with_exactly_its_arguments(tmp_path):
    """The hostile validate job, run by bash with a stand-in clusterkit in a hostile directory:
    every argument arrives as one word and nothing else runs."""
    bindir = tmp_path / "bin dir $(touch PWNED)"
    _fake(bindir / "clusterkit", 'printf "%s\\0" "$@" > "$ARGS_FILE"\nexit 3\n')
    params = dict(CASES["validate-hostile"][1])
    params["clusterkit_command"] = [str(bindir / "clusterkit"), "--flag=$HOME"]
    script = tmp_path / "job.sh"
    script.write_text(render("validate", params))
    env = {"PATH": os.environ["PATH"], "SLURM_JOB_NODELIST": "gpu-[001-004]", "SLURM_JOB_ID": "42",
           "ARGS_FILE": str(tmp_path / "args")}
    p = subprocess.run(["bash", str(script)], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert p.returncode == 3, p.stderr  # validate's exit code
    args = (tmp_path / "args").read_text().split("\0")[:-1]
    assert args == ["--flag=$HOME", "validate", "--via", "slurm", "--nodes", "gpu-[001-004]",
                    "--output", HOSTILE_DIR + "/r-42.json", "--no-progress",
                    "--junit", "a'b\"c $(touch PWNED).xml", "--profile", "$(touch PWNED).yaml", "--sim", "FOO=bar",
                    "--weights-dir", "/w; touch PWNED", "&&", "|"]
    assert p.stdout == f"# clusterkit validate: exit 3, report {HOSTILE_DIR}/r-42.json\n"
    assert not list(tmp_path.rglob("PWNED"))


def test_validate_script_outside_slurm_says_so(tmp_path):
    script = _script(tmp_path, "validate-default")
    p = subprocess.run(["bash", str(script)], capture_output=True, text=True, env={"PATH": os.environ["PATH"]})
    assert p.returncode != 0 and "submit this script with sbatch" in p.stderr


FAKE_SRUN = r"""
# a stand-in for srun: records its options, then runs the command once per task of one node,
# each with its own SLURM_LOCALID / SLURM_PROCID and the node's GPUs in CUDA_VISIBLE_DEVICES
opts=()
while [[ $1 == --* ]]; do opts+=("$1"); shift; done
printf "%s\n" "${opts[@]}" > "$OUT_DIR/srun-options"
for i in $(seq 0 $((FAKE_TASKS - 1))); do
    SLURM_LOCALID=$i SLURM_PROCID=$i CUDA_VISIBLE_DEVICES=$FAKE_GPUS "$@" > "$OUT_DIR/task-$i" || exit
done
"""
FAKE_NCCL = r"""
printf "%s\0" "$@"
printf "cvd=%s\0" "${CUDA_VISIBLE_DEVICES:-}"
printf "debug=%s\0x=%s\0" "$NCCL_DEBUG" "$NCCL_X"
"""


def _run_nccl(tmp_path: Path, params: dict[str, Any], tasks: int = 2, gpus: str = "4,6") -> subprocess.CompletedProcess[str]:
    nccl_dir = tmp_path / "nccl tests $(touch PWNED)" / "build"
    _fake(nccl_dir / params.get("test", "all_reduce_perf"), FAKE_NCCL)
    _fake(tmp_path / "fakebin" / "srun", FAKE_SRUN)
    script = tmp_path / "job.sh"
    script.write_text(render("nccl", {**params, "nccl_tests_dir": str(nccl_dir)}))
    env = {"PATH": f"{tmp_path / 'fakebin'}:{os.environ['PATH']}", "SLURM_JOB_NODELIST": "gpu-[001-002]",
           "SLURM_JOB_ID": "7", "SLURM_NTASKS": str(tasks), "OUT_DIR": str(tmp_path), "FAKE_TASKS": str(tasks),
           "FAKE_GPUS": gpus}
    return subprocess.run(["bash", str(script)], capture_output=True, text=True, env=env, cwd=tmp_path)


def _task(tmp_path: Path, i: int) -> list[str]:
    return (tmp_path / f"task-{i}").read_text().split("\0")[:-1]


def test_nccl_script_runs_every_task_with_its_own_values(tmp_path):
    params = dict(CASES["nccl-hostile"][1])
    params["one_gpu_per_task"] = True
    p = _run_nccl(tmp_path, params)
    assert p.returncode == 0, p.stderr
    assert p.stdout == "# clusterkit nccl: job 7, nodes gpu-[001-002], 2 tasks\n"
    assert (tmp_path / "srun-options").read_text().splitlines() == ["--mpi=pmix", "--kill-on-bad-exit=1"]
    args = ["-b", "8", "-e", "16G", "-f", "2", "-n", "20", "-w", "5", "-c", "1", "-x", "$(touch PWNED)", "; touch PWNED"]
    env_seen = ["debug=$(touch PWNED)", "x=it's \"quoted\" `touch PWNED`"]
    # the i-th task gets the i-th of the node's GPUs (computed in the task, at run time)
    assert _task(tmp_path, 0) == args + ["cvd=4"] + env_seen
    assert _task(tmp_path, 1) == args + ["cvd=6"] + env_seen
    assert not list(tmp_path.rglob("PWNED"))


def test_nccl_script_leaves_the_gpus_to_nccl_tests_by_default(tmp_path):
    p = _run_nccl(tmp_path, {"mpi": "pmi2", "test": "sendrecv_perf", "iters": 3}, tasks=3, gpus="0,1,2")
    assert p.returncode == 0, p.stderr
    assert (tmp_path / "srun-options").read_text().splitlines() == ["--mpi=pmi2", "--kill-on-bad-exit=1"]
    for i in range(3):
        assert _task(tmp_path, i)[:8] == ["-b", "8", "-e", "16G", "-f", "2", "-n", "3"]
        assert "cvd=0,1,2" in _task(tmp_path, i)


def test_nccl_script_without_the_binary_exits_2(tmp_path):
    script = tmp_path / "job.sh"
    script.write_text(render("nccl", {"nccl_tests_dir": str(tmp_path / "none")}))
    p = subprocess.run(["bash", str(script)], capture_output=True, text=True,
                       env={"PATH": os.environ["PATH"], "SLURM_JOB_NODELIST": "n1"})
    assert p.returncode == 2 and "all_reduce_perf: no such executable" in p.stderr


def test_the_nccl_comment_line_does_not_disturb_the_nccl_tests_parser():
    from clusterkit.parsers import get_parser

    fixture = Path(__file__).resolve().parent.parent / "fixtures" / "nccl-tests" / \
        "multi_node_10x8_h100_5tests_v2.17.8.txt"
    text = fixture.read_text()
    parse = get_parser("nccl-tests")
    line = "# clusterkit nccl: job 7, nodes cnode3-[002-011], 80 tasks\n"
    assert parse(line + text).model_dump() == parse(text).model_dump()


# --------------------------------------------------------------------------- parameters
def test_defaults():
    v = templates.validate_params("validate", {})
    assert v["nodes"] == 1 and v["gpus_per_node"] == 8 and v["exclusive"] is True
    assert v["clusterkit_command"] == ["clusterkit"] and v["report"] == "clusterkit-report-%j.json"
    n = templates.validate_params("nccl", {"nccl_tests_dir": "/x"})
    assert (n["test"], n["min_bytes"], n["max_bytes"], n["step_factor"], n["iters"], n["warmup_iters"], n["check"],
            n["mpi"], n["env"], n["one_gpu_per_task"]) == ("all_reduce_perf", "8", "16G", 2, 20, 5, 1, "pmix", {}, False)


def test_conveniences():
    v = templates.validate_params("validate", {"sim": True, "checks": "gpu, ib", "account": 1234,
                                                "clusterkit_command": "python3 -m clusterkit"})
    assert v["sim"] == "builtin" and v["checks"] == ["gpu", "ib"] and v["account"] == "1234"
    assert v["clusterkit_command"] == ["python3", "-m", "clusterkit"]
    assert templates.validate_params("validate", {"sim": False})["sim"] is None
    n = templates.validate_params("nccl", {"nccl_tests_dir": "/x", "env": {"NCCL_IB_TIMEOUT": 22, "F": 1.5},
                                           "min_bytes": 1024, "extra_args": "-g 1"})
    assert n["env"] == {"NCCL_IB_TIMEOUT": "22", "F": "1.5"} and n["min_bytes"] == "1024" and n["extra_args"] == ["-g", "1"]
    for t in ("30", "30:00", "01:30:00", "2-00", "2-12:00", "2-12:00:00", "UNLIMITED"):
        assert templates.validate_params("validate", {"time": t})["time"] == t


def test_no_gres_line_without_gpus():
    assert "--gres" not in render("validate", {"gpus_per_node": 0})
    assert "#SBATCH --gres=gpu:4\n" in render("validate", {"gpus_per_node": 4})
    assert "--exclusive" not in render("validate", {"exclusive": False})


@pytest.mark.parametrize("name, params, message", [
    ("validate", {"bogus": 1}, "template validate: unknown parameter 'bogus' (its parameters: job_name, "),
    ("validate", {"nodes": 0}, "template validate: nodes: Input should be greater than or equal to 1"),
    ("validate", {"nodes": "4"}, "template validate: nodes: Input should be a valid integer"),
    ("validate", {"time": 90}, "template validate: time: give the time as a string ('90' for minutes"),
    ("validate", {"time": "1h"}, "template validate: time: '1h' is not a Slurm time"),
    ("validate", {"job_name": "a\nrm -rf /"}, "template validate: job_name: control characters"),
    ("validate", {"job_name": "a\\b"}, "template validate: job_name: a backslash cannot be put on an #SBATCH line"),
    ("validate", {"sbatch_options": "--comment='a\\b'"}, "template validate: sbatch_options.0: a backslash"),
    ("validate", {"partition": ""}, "template validate: partition: must not be empty"),
    ("validate", {"partition": True}, "template validate: partition: give a string, not true/false"),
    ("validate", {"checks": ["gpu; rm"]}, "template validate: checks.0: String should match pattern"),
    ("validate", {"timeout": 0}, "template validate: timeout: Input should be greater than 0"),
    ("validate", {"clusterkit_command": []}, "template validate: clusterkit_command: give the command"),
    ("validate", {"sbatch_options": ["h100"]}, "template validate: sbatch_options: 'h100' is not an sbatch option"),
    ("validate", {"extra_args": "'unclosed"}, "template validate: extra_args: cannot split"),
    ("nccl", {}, "template nccl: nccl_tests_dir: a required parameter"),
    ("nccl", {"nccl_tests_dir": "/x", "test": "../bin/sh"}, "template nccl: test: '../bin/sh' is not an nccl-tests binary"),
    ("nccl", {"nccl_tests_dir": "/x", "gpus_per_node": 0}, "template nccl: gpus_per_node: Input should be greater"),
    ("nccl", {"nccl_tests_dir": "/x", "max_bytes": "16T"}, "template nccl: max_bytes: '16T' is not a size"),
    ("nccl", {"nccl_tests_dir": "/x", "min_bytes": "1G", "max_bytes": "8M"},
     "template nccl: min_bytes (1G) is above max_bytes (8M)"),
    ("nccl", {"nccl_tests_dir": "/x", "mpi": "pmix; reboot"}, "template nccl: mpi: String should match pattern"),
    ("nccl", {"nccl_tests_dir": "/x", "env": {"nccl_debug": "INFO"}}, "template nccl: env: 'nccl_debug' is not an"),
    ("nccl", {"nccl_tests_dir": "/x", "env": {"A B": "1"}}, "template nccl: env: 'A B' is not an environment"),
    ("nccl", {"nccl_tests_dir": "/x", "env": {"IFS": ","}}, "template nccl: env: IFS changes how"),
    ("nccl", {"nccl_tests_dir": "/x", "env": {"NCCL_DEBUG": True}}, "template nccl: env.NCCL_DEBUG: give a string"),
    ("nccl", {"nccl_tests_dir": "/x", "step_factor": 1}, "template nccl: step_factor: Input should be greater"),
])
def test_bad_parameters_are_one_line_naming_the_parameter(name, params, message):
    with pytest.raises(UsageError) as e:
        render(name, params)
    assert str(e.value).startswith(message), str(e.value)
    assert "\n" not in str(e.value)


def test_string_params_are_the_plain_text_ones():
    assert templates.string_params("validate") >= {"job_name", "time", "partition", "report", "profile"}
    assert "sim" not in templates.string_params("validate")  # takes true too
    assert "nodes" not in templates.string_params("validate") and "env" not in templates.string_params("nccl")
    assert templates.string_params("mine") == frozenset()


# --------------------------------------------------------------------------- template lookup and errors
def test_unknown_template_lists_the_known_ones(tmp_path):
    with pytest.raises(UsageError, match=r"^unknown template 'nope'; known: validate, nccl$"):
        render("nope", {})
    (tmp_path / "mine.sbatch.j2").write_text("#!/bin/bash\n")
    with pytest.raises(UsageError, match=r"^unknown template 'nope' \(in .* or built in\); known: validate, nccl, mine$"):
        render("nope", {}, template_dir=str(tmp_path))
    for bad in ("../validate", "a/b", "", ".hidden"):
        with pytest.raises(UsageError, match="is not a template name"):
            render(bad, {}, template_dir=str(tmp_path))
    with pytest.raises(UsageError, match="not a directory"):
        render("validate", {}, template_dir=str(tmp_path / "none"))


def test_template_dir_overrides_a_builtin_and_adds_templates(tmp_path):
    (tmp_path / "validate.sbatch.j2").write_text("#!/bin/bash\n# site {{ template_name | shq }}\n"
                                                  "echo {{ job_name | shq }} {{ nodes | shq }}\n")
    (tmp_path / "burn.sbatch.j2").write_text("#!/bin/bash\necho {{ minutes | shq }} {{ things | shq_join }}\n")
    # the override still gets the built-in's validated parameters, defaults included
    assert render("validate", {"nodes": 3}, template_dir=str(tmp_path)) == \
        "#!/bin/bash\n# site validate\necho clusterkit-validate 3\n"
    with pytest.raises(UsageError, match="unknown parameter 'minutes'"):
        render("validate", {"minutes": 3}, template_dir=str(tmp_path))
    # a template of another name takes its parameters as given
    assert render("burn", {"minutes": 5, "things": ["a b", "c"]}, template_dir=str(tmp_path)) == \
        "#!/bin/bash\necho 5 'a b' c\n"
    assert render("nccl", {"nccl_tests_dir": "/x"}, template_dir=str(tmp_path)).startswith("#!/bin/bash\n# Rendered")
    known = templates.known_templates(str(tmp_path))
    assert list(known) == ["validate", "nccl", "burn"] and "replaced by" in known["validate"]
    assert list(templates.known_templates()) == ["validate", "nccl"]


@pytest.mark.parametrize("source, params, message", [
    ("#!/bin/bash\necho {{ foo | shq }}\necho {{ bar }}\n", {"foo": 1}, "template t: line 3: 'bar' is undefined"),
    ("#!/bin/bash\necho {{ foo.bar | shq }}\n", {"foo": {}}, "template t: line 2: 'dict object' has no attribute 'bar'"),
    ("#!/bin/bash\n{% for x in nothing %}\n{% endfor %}\n", {}, "template t: line 2: 'nothing' is undefined"),
    ("#!/bin/bash\n{% if x %}\necho\n", {"x": 1}, "template t: line 3: Unexpected end of template"),
    ("#!/bin/bash\necho {{ x | nosuchfilter }}\n", {"x": 1}, "template t: line 2: No filter named 'nosuchfilter'"),
    ("#!/bin/bash\n{% include 'gone.j2' %}\n", {}, "template t: line 2: no template 'gone.j2' to include"),
    ("#!/bin/bash\n\n{% include 'inner.sbatch.j2' %}\n", {}, "template t: inner.sbatch.j2 line 2: 'y' is undefined"),
    ("#!/bin/bash\necho {{ x | shq }}\n", {"x": None}, "template t: line 2: shq: the value is unset"),
    ("#!/bin/bash\necho {{ x | shq }}\n", {"x": "a\nb"}, "template t: line 2: shq: 'a\\nb'…: a value with a line break"),
    ("#!/bin/bash\necho {{ 1 + 'a' }}\n", {}, "template t: line 2: TypeError: unsupported operand"),
    ("#!/bin/bash\n", {"not-a-name": 1}, "template t: 'not-a-name' is not a parameter name"),
])
def test_user_template_errors_name_the_template_and_line(tmp_path, source, params, message):
    (tmp_path / "t.sbatch.j2").write_text(source)
    (tmp_path / "inner.sbatch.j2").write_text("# inner\necho {{ y }}\n")
    with pytest.raises(UsageError) as e:
        render("t", params, template_dir=str(tmp_path))
    assert str(e.value).startswith(message), str(e.value)
    assert "\n" not in str(e.value)
