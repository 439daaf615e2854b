#!/bin/bash
# Multi-node training on SLURM: one torchrun per node, joined by torchrun's own c10d
# rendezvous on the first node. Everything after the script name goes to launchers.train:
#
#   sbatch --nodes=2 launchers/slurm_train.sh \
#     --gin_file=gin/experiments/llama3_2_1b_reward.gin \
#     --gin_bindings="hf_checkpoint_dir='/models/Llama-3.2-1B-Instruct'" \
#     --gin_bindings="train_files=['/data/train.jsonl']" --gin_bindings="eval_files=['/data/eval.jsonl']"
#
# Submit it from the repository root: sbatch runs a copy of this script from its spool
# directory, so it works in $SLURM_SUBMIT_DIR and starts the workers with the venv's python
# (`python -m launchers.torchrun`: torchrun with gintune's exit statuses, which also works when
# the venv keeps a system CUDA torch and has no torchrun of its own; PYTHON=... picks another
# interpreter).
#
# Preemption and time limits: two minutes before the time limit SLURM sends SIGUSR1 to every
# process of the job step (--signal=USR1@120; `scancel --signal=USR1 <job>` does the same by
# hand). Each node's torchrun agent then sends SIGTERM to its ranks, which save a checkpoint at
# the next step boundary and stop; the agent waits up to 110 s for that (--shutdown_timeout; its
# default of 30 s is too short for a large checkpoint) and exits 75. SIGUSR1 rather than SIGTERM
# because W&B's service process, which SLURM signals too, exits on SIGTERM (losing the run's
# last records) and ignores SIGUSR1. On 75 this script requeues the job (`scontrol requeue`, up
# to MAX_REQUEUES times, 20 by default): the job keeps its id, so its workdir, named after the
# id, is the same and the run resumes from its newest checkpoint; the log (%x-%j.out) is
# appended to. Any other status ends the job with that status (2 config or data, 3 non-finite
# loss, 74 disk, 1 a bug).
#
# srun runs without --kill-on-bad-exit: to srun, 75 is a bad exit, and on two nodes the first
# torchrun to exit 75 would make srun kill the other (seen with SLURM 22.05: the job failed with
# 143 and was not requeued). A rank that dies makes the other nodes' ranks fail in their next
# collective (at once when its connections close; at worst at the process group's 10-minute
# timeout), so their torchruns end too. --wait=600 is a backstop for anything else left
# running 10 minutes after the first node's torchrun ended. Nodes that finish normally leave
# together: torchrun's agents wait for each other (up to 300 s) while rank 0 writes what only
# it writes (the Hugging Face export, W&B's last records).
#SBATCH --job-name=gintune
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=1
#SBATCH --gpus-per-node=8
#SBATCH --cpus-per-task=32
#SBATCH --time=24:00:00
#SBATCH --signal=USR1@120
#SBATCH --requeue
#SBATCH --output=%x-%j.out
#SBATCH --open-mode=append
set -euo pipefail

# One rank per GPU SLURM gave this node (--gpus-per-node above); GPUS_PER_NODE=... overrides.
GPUS_PER_NODE=${GPUS_PER_NODE:-${SLURM_GPUS_ON_NODE:-8}}
WORKDIR=${WORKDIR:-runs/${SLURM_JOB_NAME}-${SLURM_JOB_ID}}
HEAD_NODE=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)
# The rendezvous port on the first node, from the job id: two jobs that share a node (each on
# part of its GPUs) would otherwise both use 29500, and the second would join the first's store.
RDZV_PORT=${RDZV_PORT:-$((20000 + SLURM_JOB_ID % 10000))}
cd "${SLURM_SUBMIT_DIR:-.}"
PYTHON=${PYTHON:-.venv/bin/python}

MAX_REQUEUES=${MAX_REQUEUES:-20}

status=0
srun --kill-on-bad-exit=0 --wait=600 "$PYTHON" -m launchers.torchrun \
  --nnodes="$SLURM_NNODES" --nproc_per_node="$GPUS_PER_NODE" --shutdown_timeout=110 \
  --rdzv_backend=c10d --rdzv_endpoint="$HEAD_NODE:$RDZV_PORT" --rdzv_id="$SLURM_JOB_ID" \
  -m launchers.train --workdir="$WORKDIR" "$@" || status=$?

if [ "$status" -eq 75 ]; then
  if [ "${SLURM_RESTART_COUNT:-0}" -lt "$MAX_REQUEUES" ]; then
    echo "slurm_train.sh: stopped by a signal after a checkpoint; requeueing job $SLURM_JOB_ID" \
      "(restart $((${SLURM_RESTART_COUNT:-0} + 1)) of at most $MAX_REQUEUES) into $WORKDIR" >&2
    scontrol requeue "$SLURM_JOB_ID"
  else
    echo "error: job $SLURM_JOB_ID was requeued $MAX_REQUEUES times (MAX_REQUEUES); not again." \
      "Resubmit with WORKDIR=$WORKDIR to resume" >&2
  fi
fi
exit "$status"
