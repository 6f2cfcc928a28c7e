#!/bin/bash
# Rendered by clusterkit from the Slurm job template nccl
# (clusterkit slurm render nccl): change the parameters and render again
# rather than editing this file.
#
# Runs nccl-tests across this job's allocation: one task (one MPI rank) per GPU, started by srun
# through its MPI plugin. The output is nccl-tests' own (clusterkit parse nccl-tests reads it).
#SBATCH --job-name=clusterkit-nccl
#SBATCH --nodes=4
#SBATCH --ntasks-per-node=4
#SBATCH --gres=gpu:4
#SBATCH --time=00:30:00
#SBATCH -o %x-%j.out
#SBATCH --partition=gpu
#SBATCH --exclusive

# Every value above and below is quoted to stay literal: a '$' in one must not expand.
# shellcheck disable=SC2016
set -euo pipefail

: "${SLURM_JOB_NODELIST:?not inside a Slurm job: submit this script with sbatch}"

nccl_test=/opt/nccl-tests/build/all_gather_perf
if [[ ! -x $nccl_test ]]; then
    echo "clusterkit nccl: $nccl_test: no such executable on $(hostname)" >&2
    exit 2
fi

export NCCL_DEBUG=INFO
export NCCL_IB_HCA='=mlx5_0,mlx5_3'
export NCCL_SOCKET_IFNAME='^lo,docker'
export UCX_TLS=rc,sm

# a comment line to nccl-tests parsers; every rank's node and GPU follow in nccl-tests' header
echo "# clusterkit nccl: job $SLURM_JOB_ID, nodes $SLURM_JOB_NODELIST, ${SLURM_NTASKS:-?} tasks"

# The single-quoted script runs inside each task: anything it reads from Slurm's environment
# (SLURM_LOCALID: the task's rank on its node) is that task's own value.
# Each task sees one GPU: the SLURM_LOCALID-th of those Slurm gave the job on that node.
srun --mpi=pmi2 --kill-on-bad-exit=1 bash -c '
    if [[ -n ${CUDA_VISIBLE_DEVICES:-} ]]; then
        IFS=, read -r -a gpus <<< "$CUDA_VISIBLE_DEVICES"
        export CUDA_VISIBLE_DEVICES=${gpus[$SLURM_LOCALID]}
    else
        export CUDA_VISIBLE_DEVICES=$SLURM_LOCALID
    fi
    exec "$@"' nccl-task \
    "$nccl_test" -b 1M -e 8G -f 2 \
    -n 50 -w 10 -c 0 -g 1 -z 1
