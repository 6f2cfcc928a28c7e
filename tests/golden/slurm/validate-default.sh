#!/bin/bash
# Rendered by clusterkit from the Slurm job template validate
# (clusterkit slurm render validate): change the parameters and render again
# rather than editing this file.
#
# Validates every node of this job's allocation in one srun step (clusterkit validate --via slurm)
# and writes one report. Exit code: validate's (0 healthy, 1 a node failed, 2 usage error,
# 3 incomplete, 4 internal error).
#SBATCH --job-name=clusterkit-validate
#SBATCH --nodes=1
#SBATCH --ntasks-per-node=1
#SBATCH --gres=gpu:8
#SBATCH --time=00:30:00
#SBATCH -o %x-%j.out
#SBATCH --exclusive

# Every value above and below is quoted to stay literal: a '$' in one must not expand.
# shellcheck disable=SC2016
set -euo pipefail

: "${SLURM_JOB_NODELIST:?not inside a Slurm job: submit this script with sbatch}"

# %j in a report path becomes the job id, as in sbatch -o
report=clusterkit-report-%j.json
report=${report//%j/$SLURM_JOB_ID}

rc=0
clusterkit validate --via slurm --nodes "$SLURM_JOB_NODELIST" \
    --output "$report" --no-progress \
    || rc=$?
echo "# clusterkit validate: exit $rc, report $report"
exit "$rc"
