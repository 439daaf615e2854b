"""init_from: the SFT -> DPO pipeline of the README, and what a run records of its start."""

import json

import pytest
import torch

from lib.initialization import state_digest
from tests.conftest import run_launcher

pytestmark = pytest.mark.slow

QUIET = ["--gin_file=gin/debug/smoke.gin", "--gin_bindings=RunLogger.use_wandb=False"]


@pytest.fixture(scope="module")
def sft_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("init") / "sft"
    proc = run_launcher(["--gin_file=gin/sft.gin", *QUIET, f"--workdir={workdir}"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    return workdir


def _summary(workdir):
    return json.loads((workdir / "summary.json").read_text())


def test_dpo_starts_from_the_sft_run_and_records_what_it_loaded(sft_run, tmp_path):
    from torch.distributed.checkpoint.format_utils import dcp_to_torch_save

    workdir = tmp_path / "dpo"
    proc = run_launcher(["--gin_file=gin/dpo.gin", *QUIET,
                         f"--gin_bindings=Trainer.init_from='{sft_run}'",
                         "--gin_bindings=lr=1e-4", "--gin_bindings=Trainer.log_every=1",
                         f"--workdir={workdir}"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = _summary(workdir)
    assert summary["init/source"] == str(sft_run / "checkpoints" / "step_4")
    assert summary["init/kept_fresh"] == []
    dcp_to_torch_save(str(sft_run / "checkpoints/step_4"), str(tmp_path / "sft.pt"))
    weights = torch.load(tmp_path / "sft.pt", weights_only=False)["model"]
    assert summary["init/digest"] == state_digest(weights)
    saved = (workdir / "operative_config.gin").read_text()
    assert f"Trainer.init_from = '{sft_run}'  # --gin_bindings[" in saved
    # The reference is the loaded model too: step 1 (before any update) is at ln 2.
    first = json.loads((workdir / "metrics.jsonl").read_text().splitlines()[0])
    assert first["step"] == 1 and first["train/loss"] == pytest.approx(0.693147, abs=1e-6)


def test_a_reward_model_from_an_sft_run_keeps_a_fresh_head(sft_run, tmp_path):
    workdir = tmp_path / "reward"
    proc = run_launcher(["--gin_file=gin/reward.gin", *QUIET,
                         f"--gin_bindings=Trainer.init_from='{sft_run}'", f"--workdir={workdir}"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert _summary(workdir)["init/kept_fresh"] == ["output.weight"]


def test_init_from_a_folder_without_checkpoints_is_refused_before_any_work(tmp_path):
    proc = run_launcher(["--gin_file=gin/dpo.gin", *QUIET,
                         f"--gin_bindings=Trainer.init_from='{tmp_path}'",
                         f"--workdir={tmp_path / 'w'}"])
    assert proc.returncode == 2
    assert "is neither a run folder (with checkpoints/) nor a complete checkpoint folder" in \
        proc.stderr
    assert not (tmp_path / "w").exists()
