"""Serving job scripts: golden files per engine and mode, shell checks (bash -n, shellcheck, also of
the task script every rank runs), quoting of hostile values, and the scripts run by bash with
stand-ins for srun, scontrol, ip and the engine (each task computes its own rank and addresses).

Golden files live in tests/golden/deploy/ (the same policy as tests/golden/slurm/: a missing or
different one fails; CLUSTERKIT_UPDATE_GOLDEN=1 rewrites them, then review the diff).
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

from clusterkit.deploy import render as rd
from clusterkit.deploy.render import make_params, port_for, render, template_for
from clusterkit.errors import UsageError
from tests.unit.test_slurm_templates import _fake, check_golden, sbatch_words

GOLDEN = Path(__file__).resolve().parent.parent / "golden" / "deploy"
TEMPLATE_DIR = Path(rd.template_dir())

HOSTILE = "x'; touch PWNED; echo '$(touch PWNED)"
HOSTILE_DIR = "/scratch/my logs/$(touch PWNED)/`touch PWNED`"

BASE: dict[str, Any] = {"log_dir": "/shared/serve-logs", "partition": "gpu"}
#: golden file name -> parameters
CASES: dict[str, dict[str, Any]] = {
    "vllm-2nodes": {**BASE, "engine": "vllm", "model": "meta-llama/Llama-3.1-405B-Instruct", "tp": 16, "nodes": 2,
                    "nodelist": ["gpu-001", "gpu-002"], "socket_ifname": "ens1f0", "ib_hca": "=mlx5_0:1,mlx5_3:1"},
    "vllm-1node-4gpus": {**BASE, "engine": "vllm", "model": "/models/llama-3.1-8b", "tp": 4, "nodes": 1,
                         "nodelist": ["gpu-007"], "served_model_name": "llama-8b", "time": "2-00:00:00",
                         "exclusive": False, "extra_args": ["--max-model-len", "8192"]},
    "vllm-ray-2nodes": {**BASE, "engine": "vllm", "mode": "ray", "model": "deepseek-ai/DeepSeek-V3", "tp": 8,
                        "pp": 2, "nodes": 2, "nodelist": ["gpu-003", "gpu-004"],
                        "socket_ifnames": {"gpu-003": "ens1f0", "gpu-004": "ens2f0"},
                        "ray_command": ["/opt/venv/bin/ray"], "engine_command": ["/opt/venv/bin/vllm"]},
    "sglang-2nodes": {**BASE, "engine": "sglang", "model": "Qwen/Qwen2.5-72B-Instruct", "tp": 16, "nodes": 2,
                      "nodelist": ["gpu-001", "gpu-002"], "http_port": 30000, "master_port": 50000,
                      "env": {"NCCL_DEBUG": "WARN", "SGLANG_X": "a b"}, "extra_args": "--mem-fraction-static 0.85"},
    "sglang-4nodes-pp": {**BASE, "engine": "sglang", "model": "deepseek-ai/DeepSeek-V3", "tp": 16, "pp": 2,
                         "nodes": 4, "nodelist": ["gpu-001", "gpu-002", "gpu-003", "gpu-004"],
                         "account": "ml", "reservation": "serve", "sbatch_options": ["--qos=high"]},
    "vllm-hostile": {"engine": "vllm", "model": HOSTILE, "tp": 16, "nodes": 2, "nodelist": ["gpu-001", "gpu-002"],
                     "log_dir": HOSTILE_DIR, "job_name": 'x"; rm -rf / #', "partition": "gpu'; reboot; '",
                     "served_model_name": "$(touch PWNED)", "engine_command": [HOSTILE_DIR + "/vllm", "--flag=$HOME"],
                     "env": {"HF_TOKEN": "it's \"quoted\" `touch PWNED`"},
                     "extra_args": ["--x", "$(touch PWNED)", "; touch PWNED", "&&"]},
}


def rendered(case: str) -> str:
    return render(make_params(**CASES[case]))


def inner_script(text: str) -> str:
    """The single-quoted script each task runs (between ``bash -c '`` and ``' clusterkit-serve-rank``)."""
    m = re.search(r"bash -c '\n(.*?)\n' clusterkit-serve-rank", text, re.S)
    assert m, "no task script"
    return m.group(1)


# --------------------------------------------------------------------------- golden files
@pytest.mark.parametrize("case", sorted(CASES))
def test_render_matches_the_golden_file(case):
    check_golden(case, rendered(case), GOLDEN)


def test_every_golden_file_has_a_case_and_every_template_one():
    assert sorted(p.stem for p in GOLDEN.glob("*.sh")) == sorted(CASES)
    used = {template_for(c["engine"], c.get("mode", "native")) for c in CASES.values()}
    assert used == set(rd.TEMPLATES)
    assert sorted(p.name[: -len(".sbatch.j2")] for p in TEMPLATE_DIR.glob("[!_]*.sbatch.j2")) == sorted(rd.TEMPLATES)


def test_renders_are_reproducible_and_say_where_they_come_from():
    for case in CASES:
        text = rendered(case)
        assert text == rendered(case)
        lines = text.splitlines()
        assert lines[0] == "#!/bin/bash" and text.endswith("\n") and not text.endswith("\n\n")
        assert lines[1].startswith("# Rendered by clusterkit from the serving template ")
        assert not re.search(r"20[0-9]{2}-[0-9]{2}-[0-9]{2}T", text)


# --------------------------------------------------------------------------- shell checks
@pytest.mark.parametrize("case", sorted(CASES))
def test_bash_n(tmp_path, case):
    for name, text in (("job", rendered(case)), ("task", "#!/bin/bash\n" + inner_script(rendered(case)) + "\n")):
        path = tmp_path / f"{name}.sh"
        path.write_text(text)
        p = subprocess.run(["bash", "-n", str(path)], capture_output=True, text=True)
        assert p.returncode == 0, f"{name}: {p.stderr}"


@pytest.mark.skipif(shutil.which("shellcheck") is None,
                    reason="shellcheck is not installed (apt-get install shellcheck; CI installs it)")
@pytest.mark.parametrize("case", sorted(CASES))
def test_shellcheck(tmp_path, case):
    for name, text in (("job", rendered(case)), ("task", "#!/bin/bash\n" + inner_script(rendered(case)) + "\n")):
        path = tmp_path / f"{name}.sh"
        path.write_text(text)
        p = subprocess.run(["shellcheck", "-s", "bash", str(path)], capture_output=True, text=True)
        assert p.returncode == 0, f"{name}: {p.stdout}{p.stderr}"


def test_every_value_in_the_templates_goes_through_shq():
    sources = sorted(TEMPLATE_DIR.glob("*.j2"))
    assert len(sources) >= 4
    for path in sources:
        for expr in re.findall(r"{{(.*?)}}", path.read_text(), re.S):
            assert re.search(r"\|\s*shq(_join)?\s*$", expr), f"{path.name}: {{{{{expr}}}}} is not quoted"


def test_the_task_script_holds_no_rendered_value():
    """What each rank runs is the same text for every job: values reach it as arguments or
    exported variables, so no value can break out of its single quotes."""
    scripts = {inner_script(rendered(c)) for c in CASES if template_for(CASES[c]["engine"],
                                                                         CASES[c].get("mode", "native")) == "vllm"}
    assert len(scripts) == 1
    (script,) = scripts
    assert "'" not in script
    assert "NODE_RANK=$SLURM_PROCID" in script and 'scontrol show hostnames "$SLURM_JOB_NODELIST"' in script
    for case in CASES:
        assert "'" not in inner_script(rendered(case))


def test_hostile_values_stay_one_word():
    text = rendered("vllm-hostile")
    for line in text.splitlines():
        if line.startswith("#SBATCH"):
            assert shlex.split(line[len("#SBATCH"):]) == sbatch_words(line)
    (jn,) = [ln for ln in text.splitlines() if ln.startswith("#SBATCH --job-name")]
    assert sbatch_words(jn) == ['--job-name=x"; rm -rf / #']
    (out,) = [ln for ln in text.splitlines() if ln.startswith("#SBATCH -o")]
    assert sbatch_words(out) == ["-o", HOSTILE_DIR + "/serve-%j.out"]


# --------------------------------------------------------------------------- parameters
def test_parameters_are_checked():
    ok = CASES["vllm-2nodes"]
    for bad, match in (
        ({"tp": 8}, "do not fill 2 node"),
        ({"nodelist": ["gpu-001"]}, "nodelist has 1 node"),
        ({"nodelist": ["gpu-001", "gpu-001"]}, "twice"),
        ({"nodelist": ["gpu-001", "a b"]}, "not a node name"),
        ({"socket_ifname": "eth0; reboot"}, "not a network interface"),
        ({"log_dir": "relative/dir"}, "absolute path"),
        ({"log_dir": "/x/%j"}, "'%'"),
        ({"ib_hca": "mlx5_0 mlx5_1"}, "ib_hca"),
        ({"env": {"IFS": "x"}}, "IFS"),
        ({"env": {"lower": "x"}}, "not an environment variable name"),
        ({"mode": "ray", "engine": "sglang"}, "vLLM only"),
        ({"http_port": 65000}, "past 65535"),
        ({"unknown": 1}, "unknown"),
        ({"engine_command": []}, "engine_command"),
    ):
        with pytest.raises(UsageError, match=match):
            make_params(**{**ok, **bad})
    with pytest.raises(UsageError, match="vLLM only"):
        template_for("sglang", "ray")
    assert port_for(8000, "12345", 1000) == 8345


def test_defaults():
    p = make_params(model="m", nodes=1, nodelist=["n1"], log_dir="/l", engine="sglang")
    assert p.engine_command == ["python", "-m", "sglang.launch_server"] and p.health_path == "/health_generate"
    assert p.time is None and "--time" not in render(p)
    p = make_params(model="m", nodes=1, nodelist=["n1"], log_dir="/l/", tp=2)
    assert p.engine_command == ["vllm"] and p.health_path == "/health" and p.log_dir == "/l"
    assert "#SBATCH --gres=gpu:2" in render(p)


# --------------------------------------------------------------------------- run with stand-ins
FAKE_SRUN = r"""
# stand-in srun: runs the command once per node of $FAKE_NODES, each a task with its own
# SLURM_PROCID and SLURMD_NODENAME (all at once, like srun); with $FAKE_KILL_ON_BAD_EXIT, the
# first task that fails ends the others (srun --kill-on-bad-exit)
while [[ $1 == --* ]]; do echo "$1" >> "$OUT_DIR/srun-options"; shift; done
IFS=, read -r -a nodes <<< "$FAKE_NODES"
pids=()
for r in "${!nodes[@]}"; do
    SLURM_PROCID=$r SLURMD_NODENAME=${nodes[$r]} SLURM_NNODES=${#nodes[@]} SLURM_NTASKS=${#nodes[@]} \
        CUDA_VISIBLE_DEVICES=0,1,2,3,4,5,6,7 "$@" &
    pids+=($!)
done
rc=0
for _ in "${pids[@]}"; do
    wait -n
    r=$?
    if (( r != 0 && rc == 0 )); then
        rc=$r
        if [[ -n ${FAKE_KILL_ON_BAD_EXIT:-} ]]; then
            kill "${pids[@]}" 2>/dev/null
        fi
    fi
done
exit $rc
"""
FAKE_SCONTROL = r"""
# stand-in scontrol: hostnames of $FAKE_HOSTNAMES (else $FAKE_NODES); NodeAddr 127.0.99.<index+1>
# (or a name, for the node given in $FAKE_NAMED_NODE)
IFS=, read -r -a nodes <<< "$FAKE_NODES"
if [[ $1 == show && $2 == hostnames ]]; then tr , "\n" <<< "${FAKE_HOSTNAMES:-$FAKE_NODES}"; exit 0; fi
if [[ $1 == -o && $3 == node ]]; then
    for i in "${!nodes[@]}"; do
        if [[ ${nodes[$i]} == "$4" ]]; then
            addr=127.0.99.$((i + 1))
            [[ $4 == "${FAKE_NAMED_NODE:-}" ]] && addr=localhost
            echo "NodeName=$4 Arch=x86_64 CoresPerSocket=8 NodeAddr=$addr NodeHostName=$4 State=IDLE"
            exit 0
        fi
    done
    echo "Node $4 not found"; exit 1
fi
exit 2
"""
FAKE_IP = r"""
# stand-in ip: interface ens1f0 has 127.0.98.<rank+1> on every node
[[ $* == "-4 -o addr show dev ens1f0" ]] || exit 1
echo "2: ens1f0    inet 127.0.98.$((SLURM_PROCID + 1))/24 brd 127.0.98.255 scope global ens1f0"
"""
FAKE_ENGINE = r"""
printf "%s\0" "$@" > "$OUT_DIR/args.$NODE_RANK"
env | grep -E "^(VLLM_HOST_IP|MASTER_ADDR|NODE_RANK|GLOO_SOCKET_IFNAME|NCCL_SOCKET_IFNAME|NCCL_IB_HCA|HF_TOKEN|RAY_ADDRESS)=" \
    | sort > "$OUT_DIR/env.$NODE_RANK"
exit "${FAKE_RC:-0}"
"""


def _run(tmp_path: Path, params: dict[str, Any], nodes: str = "gpu-001,gpu-002",
         env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    bindir = tmp_path / "bin"
    for name, body in (("srun", FAKE_SRUN), ("scontrol", FAKE_SCONTROL), ("ip", FAKE_IP)):
        _fake(bindir / name, body)
    engine_dir = tmp_path / "engine dir $(touch PWNED)"
    _fake(engine_dir / "engine", FAKE_ENGINE)
    logs = tmp_path / "logs $(touch PWNED)"
    params = {**params, "engine_command": [str(engine_dir / "engine"), *params.get("engine_command", ["vllm"])[1:]],
              "log_dir": str(logs)}
    if params.get("mode") == "ray":
        params["ray_command"] = [str(engine_dir / "engine"), "ray-as-engine"]
    script = tmp_path / "job.sh"
    script.write_text(render(make_params(**params)))
    e = {"PATH": f"{bindir}:{os.environ['PATH']}", "SLURM_JOB_ID": "4321", "SLURM_JOB_NODELIST": "gpu-[001-002]",
         "SLURM_JOB_NUM_NODES": str(len(nodes.split(","))), "SLURMD_NODENAME": nodes.split(",")[0],
         "OUT_DIR": str(tmp_path), "FAKE_NODES": nodes, **(env or {})}
    return subprocess.run(["bash", str(script)], capture_output=True, text=True, env=e, cwd=tmp_path, timeout=60)


def _args(tmp_path: Path, rank: int) -> list[str]:
    return (tmp_path / f"args.{rank}").read_text().split("\0")[:-1]


def _env(tmp_path: Path, rank: int) -> dict[str, str]:
    return dict(ln.split("=", 1) for ln in (tmp_path / f"env.{rank}").read_text().splitlines())


def _log(tmp_path: Path, rank: int) -> str:
    return (tmp_path / "logs $(touch PWNED)" / f"serve-4321.rank{rank}.log").read_text()


def test_vllm_job_gives_each_rank_its_own_rank_and_addresses(tmp_path):
    p = _run(tmp_path, CASES["vllm-hostile"], env={"FAKE_RC": "0"})
    # an engine that exits, even with 0, fails its task: a serving rank must not end
    assert p.returncode == 1, p.stderr
    assert (tmp_path / "srun-options").read_text().split() == ['--nodes=2', "--ntasks-per-node=1",
                                                                "--kill-on-bad-exit=1"]
    tail = ["--flag=$HOME", "serve", HOSTILE, "--tensor-parallel-size", "16", "--pipeline-parallel-size", "1",
            "--host", "0.0.0.0", "--served-model-name", "$(touch PWNED)", "--x", "$(touch PWNED)", "; touch PWNED",
            "&&", "--nnodes", "2"]
    port = str(29500 + 4321 % 1000)
    assert _args(tmp_path, 0) == tail + ["--node-rank", "0", "--master-addr", "127.0.99.1", "--master-port", port,
                                         "--port", str(8000 + 321)]
    assert _args(tmp_path, 1) == tail + ["--node-rank", "1", "--master-addr", "127.0.99.1", "--master-port", port,
                                         "--headless"]
    assert _env(tmp_path, 0) == {"HF_TOKEN": "it's \"quoted\" `touch PWNED`", "MASTER_ADDR": "127.0.99.1",
                                 "NODE_RANK": "0", "VLLM_HOST_IP": "127.0.99.1"}
    assert _env(tmp_path, 1)["VLLM_HOST_IP"] == "127.0.99.2"
    assert "rank 1 on gpu-002: the engine exited with code 0" in _log(tmp_path, 1)
    assert "clusterkit-serve: the serving step of job 4321 ended (exit 1)" in p.stdout
    assert not list(tmp_path.rglob("PWNED"))


def test_socket_interface_sets_gloo_nccl_and_the_host_ip(tmp_path):
    p = _run(tmp_path, CASES["vllm-2nodes"], env={"FAKE_RC": "7"})
    assert p.returncode == 7, p.stderr
    e0, e1 = _env(tmp_path, 0), _env(tmp_path, 1)
    assert e0["GLOO_SOCKET_IFNAME"] == e0["NCCL_SOCKET_IFNAME"] == "ens1f0" and e0["NCCL_IB_HCA"] == "=mlx5_0:1,mlx5_3:1"
    # VLLM_HOST_IP: the interface's address on each node; the master: Slurm's NodeAddr of the first node
    assert (e0["VLLM_HOST_IP"], e1["VLLM_HOST_IP"]) == ("127.0.98.1", "127.0.98.2")
    assert e0["MASTER_ADDR"] == e1["MASTER_ADDR"] == "127.0.99.1"


def test_per_node_interfaces_and_a_missing_interface_fails_loudly(tmp_path):
    params = {**CASES["vllm-2nodes"], "socket_ifname": None,
              "socket_ifnames": {"gpu-001": "ens1f0", "gpu-002": "ib9"}}
    p = _run(tmp_path, params)
    assert p.returncode != 0  # rank 1 stops (2); which rank's status the step reports first races
    assert _env(tmp_path, 0)["GLOO_SOCKET_IFNAME"] == "ens1f0"
    assert "interface ib9 (GLOO_SOCKET_IFNAME) has no IPv4 address here: Gloo would hang" in _log(tmp_path, 1)


def test_node_addresses_given_as_names_are_resolved(tmp_path):
    p = _run(tmp_path, CASES["vllm-1node-4gpus"], nodes="gpu-007", env={"FAKE_NAMED_NODE": "gpu-007"})
    assert p.returncode == 1, p.stderr
    assert _env(tmp_path, 0)["VLLM_HOST_IP"] == "127.0.0.1"  # localhost, through getent ahostsv4
    assert "--nnodes" not in _args(tmp_path, 0)  # one node: no multi-node flags


def test_sglang_job_ranks_and_dist_init_addr(tmp_path):
    params = {**CASES["sglang-2nodes"], "engine_command": ["python", "-m", "sglang.launch_server"]}
    p = _run(tmp_path, params)
    assert p.returncode == 1, p.stderr
    a0, a1 = _args(tmp_path, 0), _args(tmp_path, 1)
    common = ["-m", "sglang.launch_server", "--model-path", "Qwen/Qwen2.5-72B-Instruct", "--tp", "16", "--host",
              "0.0.0.0", "--mem-fraction-static", "0.85", "--port", str(30000 + 321), "--nnodes", "2"]
    assert a0 == common + ["--node-rank", "0", "--dist-init-addr", f"127.0.99.1:{50000 + 321}"]
    assert a1 == common + ["--node-rank", "1", "--dist-init-addr", f"127.0.99.1:{50000 + 321}"]


def test_vllm_ray_job_starts_the_head_then_serves(tmp_path):
    # the stand-in "ray" exits at once: rank 0 then fails waiting for the head's port
    p = _run(tmp_path, {**CASES["vllm-ray-2nodes"], "nodelist": ["gpu-001", "gpu-002"], "socket_ifnames": {}},
             env={"FAKE_KILL_ON_BAD_EXIT": "1"})
    assert p.returncode == 3
    assert "starting the Ray head" in _log(tmp_path, 0) and "the Ray head did not listen" in _log(tmp_path, 0)
    assert _args(tmp_path, 0)[:2] == ["ray-as-engine", "start"] and "--head" in _args(tmp_path, 0)


def test_rank_zero_must_run_on_the_first_node(tmp_path):
    p = _run(tmp_path, CASES["vllm-2nodes"], nodes="gpu-002,gpu-001", env={"FAKE_HOSTNAMES": "gpu-001,gpu-002"})
    assert p.returncode == 2
    assert "rank 0 runs on gpu-002, not on the first node of the job (gpu-001)" in _log(tmp_path, 0)


def test_outside_slurm_the_script_says_so(tmp_path):
    path = tmp_path / "job.sh"
    path.write_text(rendered("vllm-2nodes"))
    p = subprocess.run(["bash", str(path)], capture_output=True, text=True, env={"PATH": os.environ["PATH"]})
    assert p.returncode != 0 and "submit this script with sbatch" in p.stderr


def test_a_missing_golden_file_fails_here_too(tmp_path, monkeypatch):
    monkeypatch.delenv("CLUSTERKIT_UPDATE_GOLDEN", raising=False)
    with pytest.raises(pytest.fail.Exception, match="missing"):
        check_golden("vllm-2nodes", rendered("vllm-2nodes"), tmp_path)
    assert not list(tmp_path.iterdir())
