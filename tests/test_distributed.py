"""Two CPU processes under torchrun (gloo): exact eval on an uneven set, and checkpoints that
move between world sizes through DCP resharding."""

import json

import pytest

from tests.conftest import DEMO, run_launcher

pytestmark = [pytest.mark.slow, pytest.mark.distributed]

# A constant schedule, so that extending num_steps on resume leaves the lr unchanged.
BASE = ["--gin_file=gin/reward.gin", "--gin_file=gin/debug/smoke.gin",
        "--gin_bindings=build_lr_schedule.decay='constant'", "--gin_bindings=Trainer.log_every=1",
        "--gin_bindings=Trainer.eval_every=0", "--gin_bindings=RunLogger.use_wandb=False"]


def _run(workdir, *extra, nproc=1):
    proc = run_launcher([*BASE, *extra, f"--workdir={workdir}"],
                        torchrun_nproc=nproc if nproc > 1 else None)
    assert proc.returncode == 0, proc.stderr[-4000:]
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


def test_slurm_example_is_valid_bash_that_runs_torchrun_from_the_submit_directory():
    import subprocess

    from tests.conftest import REPO

    script = REPO / "launchers" / "slurm_train.sh"
    assert subprocess.run(["bash", "-n", str(script)]).returncode == 0
    text = script.read_text()
    assert "-m torch.distributed.run" in text and "--rdzv_backend=c10d" in text
    assert "-m launchers.train" in text and 'cd "${SLURM_SUBMIT_DIR' in text
