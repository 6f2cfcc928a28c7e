#!/bin/bash
# Rendered by clusterkit from the Slurm job template validate
# (clusterkit slurm render validate): change the parameters and render again
# rather than editing this file.
#
# Validates every node of this job's allocation in one srun step (clusterkit validate --via slurm)
# and writes one report. Exit code: validate's (0 healthy, 1 a node failed, 2 usage error,
# 3 incomplete, 4 internal error).
#SBATCH --job-name=acceptance
#SBATCH --nodes=32
#SBATCH --ntasks-per-node=1
#SBATCH --time=1-00:00:00
#SBATCH -o logs/%x-%j.out
#SBATCH --partition=batch
#SBATCH --account=ops
#SBATCH --reservation=maint
#SBATCH --constraint=h100
#SBATCH --qos=high

# Every value above and below is quoted to stay literal: a '$' in one must not expand.
# shellcheck disable=SC2016
set -euo pipefail

: "${SLURM_JOB_NODELIST:?not inside a Slurm job: submit this script with sbatch}"

# %j in a report path becomes the job id, as in sbatch -o
report=reports/%j.json
report=${report//%j/$SLURM_JOB_ID}
junit=reports/%j.xml
junit=${junit//%j/$SLURM_JOB_ID}

rc=0
/opt/clusterkit/bin/clusterkit validate --via slurm --nodes "$SLURM_JOB_NODELIST" \
    --output "$report" --no-progress \
    --junit "$junit" \
    --profile h200-sxm \
    --checks gpu,nvlink,ib \
    --timeout 1800.5 \
    --sim fleets/lab.yaml \
    --ib-bw \
    --storage-bench \
    --stress \
    --baseline prod -v \
    || rc=$?
echo "# clusterkit validate: exit $rc, report $report"
exit "$rc"
