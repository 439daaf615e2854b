"""Two CPU processes under torchrun (gloo): exact eval on an uneven set, and checkpoints that
move between world sizes through DCP resharding."""

import json
import re

import pytest

from tests.conftest import DEMO, run_launcher

pytestmark = [pytest.mark.slow, pytest.mark.distributed]

# A constant schedule, so that extending num_steps on resume leaves the lr unchanged.
BASE = ["--gin_file=gin/reward.gin", "--gin_file=gin/debug/smoke.gin",
        "--gin_bindings=build_lr_schedule.decay='constant'", "--gin_bindings=Trainer.log_every=1",
        "--gin_bindings=Trainer.eval_every=0", "--gin_bindings=RunLogger.use_wandb=False"]


def _run(workdir, *extra, nproc=1, env=None, status=0):
    proc = run_launcher([*BASE, *extra, f"--workdir={workdir}"], env=env,
                        torchrun_nproc=nproc if nproc > 1 else None)
    assert proc.returncode == status, proc.stderr[-4000:]
    return proc


def _records(workdir):
    return [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]


def _losses(workdir):
    return {r["step"]: r["train/loss"] for r in _records(workdir) if "train/loss" in r}


def test_eval_on_an_uneven_set_is_exact_on_two_ranks(tmp_path):
    nine = tmp_path / "nine.jsonl"
    nine.write_text("".join((DEMO / "eval.jsonl").read_text().splitlines(True)[:9]))
    evals = {}
    for nproc in (1, 2):
        workdir = tmp_path / f"w{nproc}"
        _run(workdir, f"--gin_bindings=build_preference_data.eval_files=['{nine}']",
             "--gin_bindings=Trainer.eval_batch_size=2", nproc=nproc)
        evals[nproc] = [r for r in _records(workdir) if "eval/loss" in r][-1]
    assert evals[1]["eval/pairs"] == evals[2]["eval/pairs"] == 9
    assert evals[2]["eval/accuracy"] == evals[1]["eval/accuracy"]
    for key in ("eval/loss", "eval/margin", "eval/reward_std"):
        assert evals[2][key] == pytest.approx(evals[1][key], rel=1e-5, abs=1e-6)


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("straight") / "w"
    _run(workdir, "--gin_bindings=Trainer.num_steps=6")
    return workdir


@pytest.mark.parametrize("first, then", [(2, 1), (1, 2)], ids=["2_to_1", "1_to_2"])
def test_a_checkpoint_resumes_at_another_world_size(straight, tmp_path, first, then):
    workdir = tmp_path / "w"
    _run(workdir, "--gin_bindings=Trainer.num_steps=3", nproc=first)
    proc = _run(workdir, "--gin_bindings=Trainer.num_steps=6", nproc=then)
    assert "resuming from" in proc.stderr and "step_3" in proc.stderr
    assert (workdir / "checkpoints" / "step_6" / "COMPLETE.json").exists()
    got, want = _losses(workdir), _losses(straight)
    assert sorted(got) == list(range(1, 7))
    # The same global batches at every step; only the order of float reductions differs.
    assert [got[s] for s in range(1, 7)] == pytest.approx([want[s] for s in range(1, 7)],
                                                           rel=1e-4)


def test_a_sigterm_to_the_torchrun_agent_saves_every_rank_and_exits_75(straight, tmp_path):
    """scancel, or a user's kill: the agent gets SIGTERM (sent here by rank 0 to its parent
    after step 2), passes it to both ranks, which save and stop; the same command resumes, and
    the losses are those of an uninterrupted run. (SLURM's SIGUSR1 warning: tests/slurm.)"""
    workdir = tmp_path / "w"
    proc = _run(workdir, "--gin_bindings=Trainer.num_steps=6", nproc=2, status=75,
                env={"GINTUNE_SIGNAL_AT": "step_end:2:agent"})
    assert proc.stderr.strip().splitlines()[-1].startswith(
        "error: torchrun got SIGTERM and passed SIGTERM to every rank, which save a checkpoint")
    stopped_at = max(int(p.name.removeprefix("step_"))
                     for p in (workdir / "checkpoints").glob("step_*"))
    saved = workdir / "checkpoints" / f"step_{stopped_at}"
    assert 2 <= stopped_at < 6 and (saved / "COMPLETE.json").exists()
    assert sorted(p.name for p in saved.glob("*.distcp")) == ["__0_0.distcp", "__1_0.distcp"]
    assert f"stopped by a signal at step {stopped_at}" in proc.stderr
    assert "-m launchers.torchrun --nnodes=1 --nproc_per_node=2 -m launchers.train" in proc.stderr

    proc = _run(workdir, "--gin_bindings=Trainer.num_steps=6", nproc=2)
    assert f"step_{stopped_at}" in proc.stderr
    got, want = _losses(workdir), _losses(straight)
    assert [r["step"] for r in _records(workdir) if "train/loss" in r] == list(range(1, 7))
    assert [got[s] for s in range(1, 7)] == pytest.approx([want[s] for s in range(1, 7)],
                                                           rel=1e-4)


def test_a_bug_in_a_rank_ends_torchrun_with_status_1_and_one_line_naming_the_rank(tmp_path):
    """(A config problem's status 2 under torchrun: tests/launchers/test_train_e2e.py.)"""
    proc = _run(tmp_path / "w", nproc=2, env={"GINTUNE_RAISE_AT": "step_end:1"}, status=1)
    assert "fault injected at step_end:1" in proc.stderr
    last = proc.stderr.strip().splitlines()[-1]
    assert re.fullmatch(r"error: rank [01] exited with status 1 \(an unexpected error; its log "
                        r"above says why\); torchrun stopped the others", last), last


def test_slurm_example_is_valid_bash_that_runs_torchrun_from_the_submit_directory():
    import subprocess

    from tests.conftest import REPO

    script = REPO / "launchers" / "slurm_train.sh"
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0
    text = script.read_text()
    assert "-m launchers.torchrun" in text and "--rdzv_backend=c10d" in text
    assert "scontrol requeue" in text and "--open-mode=append" in text
    assert "-m launchers.train" in text and 'cd "${SLURM_SUBMIT_DIR' in text
