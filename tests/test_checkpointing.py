"""Checkpoints survive kills, resume exactly, and refuse what they should (real DCP, real
processes killed with SIGKILL at chosen moments through lib/faults.py)."""

import json
import signal
import subprocess
import sys
import time

import pytest
import torch
from torch.distributed.checkpoint.format_utils import dcp_to_torch_save

from lib.faults import POINTS
from tests.conftest import REPO, run_launcher

pytestmark = pytest.mark.slow

BASE = ["--gin_file=gin/reward.gin", "--gin_file=gin/debug/smoke.gin",
        "--gin_bindings=Trainer.num_steps=8", "--gin_bindings=Trainer.checkpoint_every=4",
        "--gin_bindings=Trainer.log_every=1", "--gin_bindings=Trainer.eval_every=0",
        "--gin_bindings=RunLogger.use_wandb=False"]


def _run(workdir, *extra, env=None):
    return run_launcher([*BASE, *extra, f"--workdir={workdir}"], env=env)


def _losses(workdir):
    """{step: train loss}; fails if a step was recorded twice (a resume must drop the records
    past its checkpoint)."""
    records = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    steps = [r["step"] for r in records if "train/loss" in r]
    assert len(steps) == len(set(steps)), f"a step recorded twice: {steps}"
    return {r["step"]: r["train/loss"] for r in records if "train/loss" in r}


def _weights(checkpoint, tmp_path):
    out = tmp_path / f"{checkpoint.parent.parent.name}-{checkpoint.name}.pt"
    dcp_to_torch_save(str(checkpoint), str(out))
    return torch.load(out, weights_only=False)["model"]


def _steps(workdir):
    return sorted(int(d.name[5:]) for d in (workdir / "checkpoints").glob("step_*"))


@pytest.fixture(scope="module")
def straight(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("straight") / "w"
    proc = _run(workdir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return workdir


@pytest.mark.parametrize("kill_after", [4, 6], ids=["at_a_checkpoint", "between_checkpoints"])
def test_kill_and_resume_gives_identical_losses_and_weights(straight, tmp_path, kill_after):
    workdir = tmp_path / "w"
    killed = _run(workdir, env={"GINTUNE_CRASH_AT": f"step_end:{kill_after}"})
    assert killed.returncode == -signal.SIGKILL
    assert max(_losses(workdir)) == kill_after and _steps(workdir) == [4]
    resumed = _run(workdir)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "resuming from" in resumed.stderr and "step_4" in resumed.stderr
    assert _losses(workdir) == _losses(straight)  # every step once, bit for bit
    got, want = _weights(workdir / "checkpoints/step_8", tmp_path), _weights(
        straight / "checkpoints/step_8", tmp_path)
    assert got.keys() == want.keys()
    assert all(torch.equal(got[k], want[k]) for k in want)


# (crash point, checkpoints complete right after the crash); keep_last=1 so that the save of
# step 4 also retires step 2.
CRASHES = [("partial_created", [2]), ("shards_written", [2]), ("state_written", [2]),
           ("marker_written", [2]), ("renamed", [2, 4]), ("old_removed", [4])]


def test_every_save_phase_is_covered():
    assert {p for p, _ in CRASHES} == set(POINTS) - {"step_end"}


@pytest.mark.parametrize("point, complete", CRASHES, ids=[p for p, _ in CRASHES])
def test_sigkill_during_a_save_keeps_the_previous_checkpoint(straight, tmp_path, point,
                                                             complete):
    workdir = tmp_path / "w"
    args = ["--gin_bindings=Trainer.checkpoint_every=2", "--gin_bindings=Checkpointer.keep_last=1"]
    killed = _run(workdir, *args, env={"GINTUNE_CRASH_AT": f"{point}:4"})
    assert killed.returncode == -signal.SIGKILL
    from lib.checkpointing import Checkpointer

    assert Checkpointer(str(workdir)).complete_steps() == complete
    resumed = _run(workdir, *args)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert f"resuming from {workdir / 'checkpoints' / f'step_{complete[-1]}'}" in resumed.stderr
    assert _losses(workdir) == _losses(straight)
    leftovers = [d.name for d in (workdir / "checkpoints").iterdir() if d.name.startswith(".")]
    assert leftovers == [] and _steps(workdir) == [8]


def _start(workdir, *extra):
    cmd = [sys.executable, "-m", "launchers.train", *BASE, *extra, f"--workdir={workdir}"]
    return subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def _wait_for_step(workdir, step, proc, timeout=120):
    deadline = time.time() + timeout
    while time.time() < deadline and proc.poll() is None:
        metrics = workdir / "metrics.jsonl"
        if metrics.exists() and any(json.loads(line)["step"] >= step
                                    for line in metrics.read_text().splitlines()):
            return
        time.sleep(0.02)
    raise AssertionError(f"step {step} never came; {proc.poll()=}")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_a_stop_signal_saves_at_the_step_boundary_and_exits_75(straight, tmp_path, sig):
    workdir = tmp_path / "w"
    # A bigger batch makes steps slow enough that the signal lands mid-run.
    proc = _start(workdir, "--gin_bindings=Trainer.global_batch_size=256")
    _wait_for_step(workdir, 1, proc)
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 75, err[-3000:]
    stopped_at = max(_losses(workdir))
    assert stopped_at < 8
    assert _steps(workdir) == sorted({s for s in (4, stopped_at) if s <= stopped_at})
    assert f"stopped by a signal at step {stopped_at}" in err
    assert "Resume with the same command" in err and f"--workdir={workdir}" in err
    resumed = _run(workdir, "--gin_bindings=Trainer.global_batch_size=256")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert sorted(_losses(workdir)) == list(range(1, 9))


def test_a_non_finite_loss_stops_naming_the_step_and_keeps_the_last_good_checkpoint(tmp_path):
    workdir = tmp_path / "w"
    proc = _run(workdir, "--gin_bindings=lr=1e30", "--gin_bindings=Trainer.max_grad_norm=0.0",
                "--gin_bindings=Trainer.checkpoint_every=1")
    assert proc.returncode == 3, proc.stderr[-3000:]
    last = proc.stderr.strip().splitlines()[-1]
    assert last.startswith("error: non-finite loss or gradient at step 2"), last
    assert last.endswith(f"; last good checkpoint: {workdir / 'checkpoints' / 'step_1'}"), last
    assert proc.stderr.count("error:") == 1
    assert _steps(workdir) == [1]


def test_async_saves_give_the_same_checkpoints_and_log_blocking_time(straight, tmp_path):
    workdir = tmp_path / "w"
    proc = _run(workdir, "--gin_bindings=Checkpointer.async_save=True")
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "checkpoint started" in proc.stderr and "training blocked" in proc.stderr
    assert _losses(workdir) == _losses(straight)
    got, want = _weights(workdir / "checkpoints/step_8", tmp_path), _weights(
        straight / "checkpoints/step_8", tmp_path)
    assert all(torch.equal(got[k], want[k]) for k in want)
    blocked = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()
               if "checkpoint/blocked_s" in line]
    assert [r["step"] for r in blocked] == [4, 8]


def test_resume_refuses_a_data_changing_config_unless_allowed(straight, tmp_path):
    import shutil

    workdir = tmp_path / "w"
    shutil.copytree(straight, workdir)
    shutil.rmtree(workdir / "checkpoints" / "step_8")
    refused = _run(workdir, "--gin_bindings=Trainer.seed=3")
    assert refused.returncode == 2
    assert "changes the model, tokenizer, data or its order: Trainer.seed: 0 -> 3" in \
        refused.stderr
    # one problem; the advice comes after the list and is not counted as a second one
    assert "error: 1 config problem:" in refused.stderr
    assert refused.stderr.rstrip().endswith(
        "pass --allow_config_change to resume anyway, or use a new --workdir for a fresh start")
    allowed = _run(workdir, "--gin_bindings=Trainer.seed=3", "--allow_config_change")
    assert allowed.returncode == 0, allowed.stderr[-3000:]
    assert "config changed since the checkpoint: Trainer.seed: 0 -> 3" in allowed.stderr


def test_a_checkpoint_whose_metadata_changed_is_never_loaded(straight, tmp_path):
    import shutil

    from lib.checkpointing import Checkpointer

    workdir = tmp_path / "w"
    shutil.copytree(straight, workdir)
    assert Checkpointer(str(workdir)).complete_steps() == [4, 8]
    with open(workdir / "checkpoints" / "step_8" / ".metadata", "ab") as f:
        f.write(b"\0")
    assert Checkpointer(str(workdir)).complete_steps() == [4]
    (workdir / "checkpoints" / "step_4" / "COMPLETE.json").unlink()
    assert Checkpointer(str(workdir)).complete_steps() == []


def test_explicit_resume_point_must_exist(straight, tmp_path):
    proc = _run(straight, "--resume_from=5")
    assert proc.returncode == 2
    assert "--resume_from=5:" in proc.stderr and "is not a complete checkpoint" in proc.stderr


def test_resume_continues_the_same_wandb_run(tmp_path):
    workdir = tmp_path / "w"
    killed = _run(workdir, "--gin_bindings=RunLogger.use_wandb=True",
                  env={"GINTUNE_CRASH_AT": "step_end:6"})
    assert killed.returncode == -signal.SIGKILL
    resumed = _run(workdir, "--gin_bindings=RunLogger.use_wandb=True")
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    runs = sorted((workdir / "wandb").glob("offline-run-*"))
    assert len(runs) == 2
    run_id = json.loads((workdir / "checkpoints/step_4/trainer_state.json").read_text())[
        "wandb_run_id"]
    assert all(r.name.endswith(f"-{run_id}") for r in runs)
