"""launchers/slurm_train.sh under a real SLURM (a two-node cluster on this machine whose nodes
are two hosts, network namespaces joined by a virtual bridge, started by tests/slurm/cluster.sh;
`make test-slurm` does both). Not part of `make test`: it needs root to start the daemons and
the namespaces, and about two minutes.

The main job, submitted as a user would (from the repository root, 2 nodes with a rank each on CPU,
one torchrun per node joined by c10d rendezvous): SLURM's SIGUSR1 before the time limit makes
both ranks checkpoint; both nodes' torchrun exit 75; the script requeues the job, which keeps
its id and its workdir; the requeued job resumes from that checkpoint into the same workdir and
appends to the same log; a second SIGUSR1, sent by hand as an operator would
(`scancel --signal=USR1`), stops and requeues it again. Then a job that finishes, and one whose
rank dies on the second node."""

import json
import os
import re
import shutil
import subprocess
import time

import pytest

from tests.conftest import REPO

pytestmark = [pytest.mark.slurm, pytest.mark.skipif(
    shutil.which("sbatch") is None
    or subprocess.run(["sinfo", "-h"], capture_output=True).returncode != 0,
    reason="no SLURM cluster: run `make test-slurm` (starts one with tests/slurm/cluster.sh)")]

# Long enough that SLURM's warning (sent within 30 s of being due) always comes first.
TRAIN = ["--gin_file=gin/reward.gin", "--gin_file=gin/debug/smoke.gin",
         "--gin_bindings=Trainer.num_steps=100000", "--gin_bindings=Trainer.log_every=10",
         "--gin_bindings=Trainer.eval_every=0", "--gin_bindings=Trainer.checkpoint_every=0"]


def _job(job_id):
    out = subprocess.run(["scontrol", "show", "job", str(job_id)], capture_output=True,
                         text=True).stdout
    return dict(re.findall(r"(\w+)=(\S+)", out))


def _wait(predicate, what, timeout, job_id=None, log=None):
    """Polls predicate; with job_id, fails at once when the job has ended for good."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        state = _job(job_id).get("JobState") if job_id else None
        if state in ("COMPLETED", "FAILED", "CANCELLED", "TIMEOUT", "NODE_FAIL"):
            tail = "".join(log.read_text().splitlines(True)[-15:]) if log else ""
            raise AssertionError(f"job {job_id} ended ({state}) while waiting for {what}:\n"
                                 f"{tail}")
        time.sleep(1)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def _steps(workdir):
    path = workdir / "metrics.jsonl"
    if not path.exists():
        return []
    return [r["step"] for r in map(json.loads, path.read_text().splitlines())
            if "train/loss" in r]


def _submit(tmp_path, sbatch_args, train_args, env=None):
    """sbatch of launchers/slurm_train.sh from the repository root, on both nodes with a rank
    each; returns the job id, its workdir and its log."""
    workdir, log = tmp_path / "w", tmp_path / "job.out"
    env = {**os.environ, "WANDB_MODE": "offline", "GPUS_PER_NODE": "1", "WORKDIR": str(workdir),
           **(env or {})}
    submit = subprocess.run(
        ["sbatch", "--parsable", "--nodes=2", "--gpus-per-node=0", "--cpus-per-task=1",
         *sbatch_args, f"--output={log}", "launchers/slurm_train.sh", *train_args],
        cwd=REPO, env=env, capture_output=True, text=True, check=True)
    return submit.stdout.strip().split(";")[0], workdir, log


def _ended(job_id, timeout):
    """The job's record once it has completed or failed."""
    return _wait(lambda: (j := _job(job_id)).get("JobState") in ("FAILED", "COMPLETED") and j,
                 f"job {job_id} to end", timeout)


def test_a_warning_before_the_time_limit_requeues_the_job_into_the_same_workdir(tmp_path):
    job_id, workdir, log = _submit(tmp_path, ["--time=2", "--signal=USR1@60"], TRAIN)
    try:
        # 1. SLURM's warning (60 s before the 2-minute limit): checkpoint, 75, requeue.
        _wait(lambda: _job(job_id).get("Restarts") == "1", "the first requeue", 150, job_id, log)
        first = max(int(p.name.removeprefix("step_"))
                    for p in (workdir / "checkpoints").glob("step_*"))
        text = log.read_text()
        assert text.count("error: torchrun got SIGUSR1 and passed SIGTERM to every rank") == 2
        assert "srun: error: node1: task 0: Exited with exit code 75" in text
        assert "srun: error: node2: task 1: Exited with exit code 75" in text
        assert f"requeueing job {job_id} (restart 1 of at most 20) into {workdir}" in text
        assert _steps(workdir)[-1] <= first

        # 2. The requeued job (released now rather than after SLURM's requeue delay, and given
        # time) resumes from that checkpoint in the same workdir, appending to the same log.
        # SLURM refuses to start a job in the same second its old credential was revoked.
        _wait(lambda: _job(job_id).get("JobState") == "PENDING", "the job to be pending", 60)
        time.sleep(2)
        subprocess.run(["scontrol", "update", f"JobId={job_id}", "StartTime=now",
                        "TimeLimit=10"], check=True)
        _wait(lambda: any(s > first + 10 for s in _steps(workdir)), "the resumed job's steps",
              120, job_id, log)
        subprocess.run(["scancel", "--signal=USR1", job_id], check=True)
        _wait(lambda: _job(job_id).get("Restarts") == "2", "the second requeue", 120, job_id,
              log)
        text = log.read_text()
        assert text.count("fresh start: no checkpoint") == 1
        assert f"resuming from {workdir}/checkpoints/step_{first}" in text
        assert text.count("torchrun got SIGUSR1") == 4  # one agent per node, twice
        assert "W&B logging failed" not in text  # SIGUSR1 spares W&B's service process
        second = max(int(p.name.removeprefix("step_"))
                     for p in (workdir / "checkpoints").glob("step_*"))
        assert second > first
        steps = _steps(workdir)
        assert steps == sorted(set(steps)) and steps[-1] <= second  # each step once
        assert sorted(p.name for p in (workdir / "checkpoints" / f"step_{second}").glob(
            "*.distcp")) == ["__0_0.distcp", "__1_0.distcp"]
        info = json.loads((workdir / "run_info.json").read_text())  # the requeued launch's
        assert info["nodes"] == 2 and info["world_size"] == 2
        assert info["slurm"]["job_id"] == job_id and info["slurm"]["restart_count"] == "1"
        assert f"--rdzv_endpoint=node1:{20000 + int(job_id) % 10000}" in info["command"]
        assert info["hostname"] == "node1"  # rank 0's host, not this machine's
    finally:
        subprocess.run(["scancel", job_id])


def test_a_two_node_job_that_finishes_completes_with_rank_0s_export(tmp_path):
    """The normal end: rank 0 alone writes the Hugging Face export after the last step, while
    the other node's rank has nothing left to do; both torchruns end together, status 0."""
    job_id, workdir, log = _submit(tmp_path, ["--time=5"], [
        "--gin_file=gin/reward.gin", "--gin_file=gin/debug/smoke.gin",
        "--gin_bindings=Trainer.num_steps=20", "--gin_bindings=Trainer.export_hf=True"])
    try:
        job = _ended(job_id, 150)
        assert job["JobState"] == "COMPLETED" and job["ExitCode"] == "0:0", log.read_text()[-3000:]
        assert (workdir / "hf" / "model.safetensors").is_file()
        assert (workdir / "checkpoints" / "step_20" / "COMPLETE.json").is_file()
        assert "error" not in log.read_text().lower()
    finally:
        subprocess.run(["scancel", job_id])


def test_a_rank_that_dies_on_one_node_ends_the_job_without_a_requeue(tmp_path):
    """srun runs without --kill-on-bad-exit (to srun, a preemption's 75 is a bad exit): a rank
    killed on the second node still ends the whole job promptly with status 1, each node's
    torchrun with one line, and the job is not requeued (it was not a preemption)."""
    job_id, workdir, log = _submit(tmp_path, ["--time=5"], TRAIN,
                                   env={"GINTUNE_CRASH_AT": "step_end:3:rank1"})
    try:
        job = _ended(job_id, 120)
        assert job["JobState"] == "FAILED" and job["ExitCode"] == "1:0", job
        assert job["Restarts"] == "0"
        text = log.read_text()
        assert "error: rank 1 was killed by SIGKILL" in text
        assert "srun: error: node2: task 1: Exited with exit code 1" in text
        assert "srun: error: node1: task 0: Exited with exit code 1" in text
        assert "requeueing" not in text and "Traceback" not in text
    finally:
        subprocess.run(["scancel", job_id])
