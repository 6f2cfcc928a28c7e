#!/bin/bash
# Rendered by clusterkit from the serving template sglang
# (clusterkit deploy serve --dry-run prints it): change the options and render again rather
# than editing this file.
#
# One SGLang server over this job's nodes: one task per node, each running the launcher with
# --nnodes, --node-rank and --dist-init-addr; --tp is the total over the nodes; rank 0 serves
# HTTP on --host 0.0.0.0. The rank is each task's own $SLURM_PROCID (expanded inside the task:
# expanded in the batch shell, every node would read rank 0).
#SBATCH --job-name=clusterkit-serve
#SBATCH --nodes=4
#SBATCH --ntasks-per-node=1
#SBATCH --gres=gpu:8
#SBATCH --nodelist='gpu-[001-004]'
#SBATCH -o /shared/serve-logs/serve-%j.out
#SBATCH --partition=gpu
#SBATCH --account=ml
#SBATCH --reservation=serve
#SBATCH --exclusive
#SBATCH --qos=high

# Every value is quoted to stay literal. The single-quoted script handed to srun is expanded by
# each task, not here: its rank, addresses and interface are that task's own.
# shellcheck disable=SC2016
set -euo pipefail

: "${SLURM_JOB_ID:?not inside a Slurm job: submit this script with sbatch}"

# Ports: each base + (job id % 1000), as clusterkit's controller computes them, so that two
# jobs on one node (or a job and its restart) do not collide.
offset=$(( SLURM_JOB_ID % 1000 ))
export CK_HTTP_PORT=$(( 8000 + offset ))
export CK_MASTER_PORT=$(( 29500 + offset ))
export CK_LOG_DIR=/shared/serve-logs
mkdir -p "$CK_LOG_DIR"

echo "clusterkit-serve: job $SLURM_JOB_ID on $SLURM_JOB_NODELIST: http port $CK_HTTP_PORT, master port $CK_MASTER_PORT; each rank logs to $CK_LOG_DIR/serve-$SLURM_JOB_ID.rank<N>.log"

# One task per node; a task that ends (its engine exited) ends the whole step: Slurm's step state
# then tells clusterkit that a rank died, and the lines srun prints below name it.
rc=0
srun --nodes="$SLURM_JOB_NUM_NODES" --ntasks-per-node=1 --kill-on-bad-exit=1 bash -c '
    set -uo pipefail
    NODE_RANK=$SLURM_PROCID
    mkdir -p "$CK_LOG_DIR" 2>/dev/null
    exec >>"$CK_LOG_DIR/serve-$SLURM_JOB_ID.rank$NODE_RANK.log" 2>&1
    say() { echo "clusterkit-serve: rank $NODE_RANK on $SLURMD_NODENAME: $*"; }
    if [[ $SLURM_NTASKS != "$SLURM_NNODES" ]]; then
        say "$SLURM_NTASKS tasks on $SLURM_NNODES nodes: the ranks need one task per node"
        exit 2
    fi
    # The IPv4 address of node $1 as Slurm knows it (NodeAddr), resolved when it is a name;
    # for this node, the first address of hostname -I when Slurm cannot tell.
    node_addr() {
        local line="" addr=""
        line=$(scontrol -o show node "$1" 2>/dev/null) || line=""
        if [[ $line =~ (^|[[:space:]])NodeAddr=([^[:space:]]+) ]]; then
            addr=${BASH_REMATCH[2]}
        fi
        if [[ -n $addr && ! $addr =~ ^[0-9]+\.[0-9]+\.[0-9]+\.[0-9]+$ ]]; then
            addr=$(getent ahostsv4 "$addr" | { read -r first _ && echo "$first"; }) || addr=""
        fi
        if [[ -z $addr && $1 == "$SLURMD_NODENAME" ]]; then
            read -r addr _ < <(hostname -I) || addr=""
        fi
        echo "$addr"
    }
    # The IPv4 address of this node on interface $1 (empty when it has none)
    if_addr() {
        local _index _name _family cidr=""
        read -r _index _name _family cidr _ < <(ip -4 -o addr show dev "$1" 2>/dev/null) || cidr=""
        echo "${cidr%%/*}"
    }
    if [[ -n ${CK_SOCKET_IFNAMES:-} ]]; then
        for pair in $CK_SOCKET_IFNAMES; do
            if [[ ${pair%%=*} == "$SLURMD_NODENAME" ]]; then
                export GLOO_SOCKET_IFNAME=${pair#*=} NCCL_SOCKET_IFNAME=${pair#*=}
            fi
        done
    fi
    master_node=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)
    if (( NODE_RANK == 0 )) && [[ $master_node != "$SLURMD_NODENAME" ]]; then
        say "rank 0 runs on $SLURMD_NODENAME, not on the first node of the job ($master_node)"
        exit 2
    fi
    MASTER_ADDR=$(node_addr "$master_node")
    VLLM_HOST_IP=""
    if [[ -n ${GLOO_SOCKET_IFNAME:-} ]]; then
        VLLM_HOST_IP=$(if_addr "$GLOO_SOCKET_IFNAME")
        if [[ -z $VLLM_HOST_IP ]]; then
            say "interface $GLOO_SOCKET_IFNAME (GLOO_SOCKET_IFNAME) has no IPv4 address here: Gloo would hang"
            exit 2
        fi
    fi
    if [[ -z $VLLM_HOST_IP ]]; then
        VLLM_HOST_IP=$(node_addr "$SLURMD_NODENAME")
    fi
    if [[ -z $MASTER_ADDR || -z $VLLM_HOST_IP ]]; then
        say "cannot tell the address of $master_node or of this node (scontrol show node: NodeAddr)"
        exit 2
    fi
    export NODE_RANK MASTER_ADDR VLLM_HOST_IP
    say "node $((NODE_RANK + 1)) of $SLURM_NNODES, VLLM_HOST_IP=$VLLM_HOST_IP, master $master_node at $MASTER_ADDR, sockets on ${GLOO_SOCKET_IFNAME:-(any interface)}"
    args=(--port "$CK_HTTP_PORT")
    if (( SLURM_NNODES > 1 )); then
        args+=(--nnodes "$SLURM_NNODES" --node-rank "$NODE_RANK" --dist-init-addr "$MASTER_ADDR:$CK_MASTER_PORT")
    fi
    say "starting: $* ${args[*]}"
    "$@" "${args[@]}"
    rc=$?
    say "the engine exited with code $rc at ${EPOCHREALTIME:-$(date +%s)}"
    if (( rc == 0 )); then
        exit 1
    fi
    exit "$rc"
' clusterkit-serve-rank python -m sglang.launch_server --model-path deepseek-ai/DeepSeek-V3 \
    --tp 16 --pp-size 2 --host 0.0.0.0 || rc=$?

echo "clusterkit-serve: the serving step of job $SLURM_JOB_ID ended (exit $rc)"
exit "$rc"
