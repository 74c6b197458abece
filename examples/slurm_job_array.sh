#!/bin/bash
# Eight workers on one study as a SLURM job array: every task runs the same command against the
# same PostgreSQL database and study name; Optuna's RDB storage hands each one its own trials.
#
#   sbatch examples/slurm_job_array.sh
#
# Edit the #SBATCH lines for your cluster. The database server must be reachable from the
# compute nodes; keep the password out of this file (it would show in `ps` and in the job's
# record): put it in ~/.pgpass (chmod 600) or export PGPASSWORD before sbatch.
#SBATCH --job-name=mame-ft
#SBATCH --array=0-7%8            # 8 workers, all at once
#SBATCH --gres=gpu:1             # one GPU per worker
#SBATCH --cpus-per-task=8
#SBATCH --mem=32G
#SBATCH --time=04:00:00
#SBATCH --requeue                # a preempted worker comes back; its trial is retried, not lost
#SBATCH --output=logs/%x-%A_%a.out

set -euo pipefail
mkdir -p logs
source "${VENV:-$HOME/venvs/transfer-search}/bin/activate"

# SLURM_ARRAY_TASK_ID doubles as the worker index: each worker's sampler gets its own seed.
# A worker killed mid-trial (preemption, node failure, scancel -s KILL) is noticed after 3
# heartbeats (60 s each) by any other worker, which runs that trial again with the same parameters.
exec python run_study.py \
    --space finetune \
    --data "$HOME/data/mame" \
    --trials 200 \
    --storage "postgresql://${USER}@db.example.org/optuna" \
    --study-name mame-ft \
    --artifact-dir /shared/studies/artifacts
