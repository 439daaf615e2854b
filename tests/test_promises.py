"""README promises that need a run of their own: what a resume refuses and applies, RNG
restore, the default W&B path, start-up clean-up, and what config-only commands import."""

import json
import os
import shutil
import signal
import subprocess
import sys

import pytest

from tests.conftest import REPO, run_launcher

pytestmark = pytest.mark.slow

BASE = ["--gin_file=gin/reward.gin", "--gin_file=gin/debug/smoke.gin",
        "--gin_bindings=RunLogger.use_wandb=False", "--gin_bindings=Trainer.log_every=1"]


def _records(workdir):
    return [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("promises") / "w"
    proc = run_launcher([*BASE, f"--workdir={workdir}"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    return workdir


def _copy(finished, tmp_path, keep=(2,)):
    workdir = tmp_path / "w"
    shutil.copytree(finished, workdir)
    for step in (2, 4):
        if step not in keep:
            shutil.rmtree(workdir / "checkpoints" / f"step_{step}")
    return workdir


@pytest.mark.parametrize("binding, change", [
    ("llama3_model.num_layers=3", "llama3_model.num_layers: 2 -> 3"),
    ("build_tokenizer.path='tests/fixtures/v0_reward_smoke/../../../assets/demo'",
     "build_tokenizer.path"),
    ("build_preference_data.max_length=64", "build_preference_data.max_length: 128 -> 64"),
    ("Trainer.global_batch_size=16", "Trainer.global_batch_size: 32 -> 16"),
], ids=["model", "tokenizer", "data", "batch_size"])
def test_a_resume_that_changes_shapes_or_data_is_refused(finished, tmp_path, binding, change):
    workdir = _copy(finished, tmp_path)
    proc = run_launcher([*BASE, f"--gin_bindings={binding}", f"--workdir={workdir}"])
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "changes the model, tokenizer, data or its order: " + change in proc.stderr


def test_a_new_peak_lr_applies_from_the_resumed_step(finished, tmp_path):
    workdir = _copy(finished, tmp_path)
    proc = run_launcher([*BASE, "--gin_bindings=lr=2e-3", f"--workdir={workdir}"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    before = {r["step"]: r["train/lr"] for r in _records(finished) if "train/lr" in r}
    after = {r["step"]: r["train/lr"] for r in _records(workdir) if "train/lr" in r}
    assert after[3] == pytest.approx(before[3] * 2e-3 / 1e-4)  # same schedule, new peak
    assert after[1] == before[1]  # records before the checkpoint are kept as they were


def test_resume_from_a_named_step_and_keep_last_zero(finished, tmp_path):
    workdir = _copy(finished, tmp_path, keep=(2, 4))
    proc = run_launcher([*BASE, "--resume_from=2", "--gin_bindings=Checkpointer.keep_last=0",
                         f"--workdir={workdir}"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"resuming from {workdir / 'checkpoints' / 'step_2'}" in proc.stderr
    assert sorted(p.name for p in (workdir / "checkpoints").iterdir()) == ["step_2", "step_4"]
    steps = [r["step"] for r in _records(workdir) if "train/loss" in r]
    assert steps == [1, 2, 3, 4]  # each step once after the resume


def test_a_step_folder_without_a_valid_marker_is_removed_at_start_up(finished, tmp_path):
    workdir = _copy(finished, tmp_path, keep=(2, 4))
    fake = workdir / "checkpoints" / "step_9"
    fake.mkdir()
    (fake / "__0_0.distcp").write_bytes(b"half written")
    proc = run_launcher([*BASE, f"--workdir={workdir}"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert f"removing incomplete checkpoint folder {fake}" in proc.stderr
    assert not fake.exists() and "resuming from" in proc.stderr


def test_resume_is_exact_when_the_run_draws_from_the_global_generators(tmp_path):
    """Dropout draws from torch's global RNG, so this fails if its restore is lost."""
    args = [*BASE, "--gin_bindings=llama3_model.attn_dropout=0.3",
            "--gin_bindings=Trainer.num_steps=6", "--gin_bindings=Trainer.checkpoint_every=3",
            "--gin_bindings=Trainer.eval_every=0"]
    straight = run_launcher([*args, f"--workdir={tmp_path / 'straight'}"])
    assert straight.returncode == 0, straight.stderr[-3000:]
    killed = run_launcher([*args, f"--workdir={tmp_path / 'w'}"],
                          env={"GINTUNE_CRASH_AT": "step_end:5"})
    assert killed.returncode == -signal.SIGKILL
    resumed = run_launcher([*args, f"--workdir={tmp_path / 'w'}"])
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    losses = lambda w: [(r["step"], r["train/loss"]) for r in _records(w)  # noqa: E731
                        if "train/loss" in r]
    assert losses(tmp_path / "w") == losses(tmp_path / "straight")


def test_an_unexpected_error_keeps_its_traceback_and_ends_saying_what_the_run_did(tmp_path):
    proc = run_launcher([*BASE, f"--workdir={tmp_path / 'w'}"],
                        env={"GINTUNE_RAISE_AT": "step_end:3"})
    assert proc.returncode == 1
    assert "Traceback (most recent call last)" in proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == (
        "error: unexpected RuntimeError (fault injected at step_end:3) while training step 3 "
        f"of the run in {tmp_path / 'w'}; the traceback above shows where")


def test_with_no_wandb_mode_and_no_api_key_the_run_is_recorded_offline(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB")}
    env.update(HOME=str(tmp_path), PYTHONUNBUFFERED="1")
    proc = subprocess.run([sys.executable, "-m", "launchers.train",
                           "--gin_file=gin/reward.gin", "--gin_file=gin/debug/smoke.gin",
                           f"--workdir={tmp_path / 'w'}"], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "W&B: no WANDB_MODE and no API key; recording the run offline" in proc.stderr
    assert list((tmp_path / "w" / "wandb").glob("offline-run-*/run-*.wandb"))


def test_validate_only_imports_neither_torchtune_wandb_dcp_nor_fsdp():
    code = ("import sys\nfrom absl import flags\nimport launchers.train as t\n"
            "flags.FLAGS(['x', '--gin_file=gin/reward.gin', '--validate_only'])\n"
            "assert t.main(['x']) == 0\n"
            "heavy = ('torchtune', 'wandb', 'torch.distributed.checkpoint', "
            "'torch.distributed.fsdp')\n"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in heavy[:2] "
            "or m.startswith(heavy[2:])))\n")
    proc = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.strip().splitlines()[-1] == "[]"


def test_a_relative_gin_file_is_found_in_the_working_directory(tmp_path):
    (tmp_path / "mine.gin").write_text("include 'gin/reward.gin'\nTrainer.seed = 7\n")
    proc = subprocess.run([sys.executable, "-m", "launchers.train", "--gin_file=mine.gin",
                           "--validate_only"], cwd=tmp_path, capture_output=True, text=True,
                          timeout=120, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert f"Trainer.seed = 7  # {tmp_path / 'mine.gin'}:2" in proc.stdout
