#!/bin/bash
# Rendered by clusterkit from the Slurm job template nccl
# (clusterkit slurm render nccl): change the parameters and render again
# rather than editing this file.
#
# Runs nccl-tests across this job's allocation: one task (one MPI rank) per GPU, started by srun
# through its MPI plugin. The output is nccl-tests' own (clusterkit parse nccl-tests reads it).
#SBATCH --job-name=clusterkit-nccl
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=8
#SBATCH --gres=gpu:8
#SBATCH --time=00:30:00
#SBATCH -o %x-%j.out
#SBATCH --exclusive

# Every value above and below is quoted to stay literal: a '$' in one must not expand.
# shellcheck disable=SC2016
set -euo pipefail

: "${SLURM_JOB_NODELIST:?not inside a Slurm job: submit this script with sbatch}"

nccl_test=/opt/nccl-tests/build/all_reduce_perf
if [[ ! -x $nccl_test ]]; then
    echo "clusterkit nccl: $nccl_test: no such executable on $(hostname)" >&2
    exit 2
fi

# a comment line to nccl-tests parsers; every rank's node and GPU follow in nccl-tests' header
echo "# clusterkit nccl: job $SLURM_JOB_ID, nodes $SLURM_JOB_NODELIST, ${SLURM_NTASKS:-?} tasks"

# The single-quoted script runs inside each task: anything it reads from Slurm's environment
# (SLURM_LOCALID: the task's rank on its node) is that task's own value.
# Every task sees the node's GPUs; nccl-tests picks its device by the task's local rank.
srun --mpi=pmix --kill-on-bad-exit=1 bash -c 'exec "$@"' nccl-task \
    "$nccl_test" -b 8 -e 16G -f 2 \
    -n 20 -w 5 -c 1
