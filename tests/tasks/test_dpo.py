"""DPO: the losses against their papers' formulas, ln 2 at the start, and the reference cache."""

import json
import math
import re
import shutil

import pytest
import torch
import torch.nn.functional as F

from lib.dpo_losses import dpo_norm_loss, ipo_loss, sigmoid_dpo_loss, simpo_loss
from tests.conftest import run_launcher

LN2 = math.log(2.0)
# policy chosen/rejected, reference chosen/rejected (summed log-probs), response lengths
PC, PR = torch.tensor([-10.0, -20.0]), torch.tensor([-12.0, -15.0])
RC, RR = torch.tensor([-11.0, -19.0]), torch.tensor([-11.5, -16.0])
LC, LR = torch.tensor([5.0, 8.0]), torch.tensor([4.0, 6.0])


def test_each_loss_matches_its_formula():
    h = (PC - RC) - (PR - RR)
    loss, chosen, rejected = sigmoid_dpo_loss.__wrapped__(0.1, 0.2)(PC, PR, RC, RR, LC, LR)
    want = -0.8 * F.logsigmoid(0.1 * h) - 0.2 * F.logsigmoid(-0.1 * h)
    torch.testing.assert_close(loss, want)
    torch.testing.assert_close(chosen - rejected, 0.1 * h)
    h_norm = (PC / LC - RC / LC) - (PR / LR - RR / LR)
    loss, _, _ = ipo_loss.__wrapped__(0.5)(PC, PR, RC, RR, LC, LR)
    torch.testing.assert_close(loss, (h_norm - 1.0) ** 2)
    loss, _, _ = dpo_norm_loss.__wrapped__(5.0)(PC, PR, RC, RR, LC, LR)
    torch.testing.assert_close(loss, -F.logsigmoid(5.0 * h_norm))
    loss, chosen, _ = simpo_loss.__wrapped__(2.0, 1.0)(PC, PR, None, None, LC, LR)
    torch.testing.assert_close(loss, -F.logsigmoid(2.0 * (PC / LC - PR / LR) - 1.0))
    torch.testing.assert_close(chosen, 2.0 * PC / LC)


@pytest.mark.parametrize("loss_fn", [sigmoid_dpo_loss.__wrapped__(0.1, 0.0),
                                     sigmoid_dpo_loss.__wrapped__(0.1, 0.3),
                                     dpo_norm_loss.__wrapped__(5.0, 0.1)],
                         ids=["sigmoid", "sigmoid_smoothed", "dpo_norm"])
def test_the_loss_is_ln2_when_policy_and_reference_agree(loss_fn):
    loss, _, _ = loss_fn(PC, PR, PC.clone(), PR.clone(), LC, LR)
    assert loss.tolist() == pytest.approx([LN2, LN2], abs=1e-7)


SMOKE = ["--gin_file=gin/dpo.gin", "--gin_file=gin/debug/smoke.gin",
         "--gin_bindings=Trainer.num_steps=3", "--gin_bindings=Trainer.log_every=1",
         "--gin_bindings=Trainer.eval_every=0", "--gin_bindings=RunLogger.use_wandb=False"]


def _train_records(workdir):
    lines = (workdir / "metrics.jsonl").read_text().splitlines()
    return [r for r in map(json.loads, lines) if "train/loss" in r]


@pytest.fixture(scope="module")
def cached_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("dpo") / "cached"
    proc = run_launcher([*SMOKE, f"--workdir={workdir}"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    return workdir, proc


@pytest.mark.slow
def test_cached_and_on_the_fly_references_give_the_same_losses(cached_run, tmp_path):
    workdir, proc = cached_run
    assert "reference log-probabilities computed and stored" in proc.stderr
    summary = json.loads((workdir / "summary.json").read_text())
    assert len(summary["reference/key"]) == 64 and summary["reference/mode"] == "cached"
    frozen = run_launcher([*SMOKE, "--gin_bindings=dpo_task.reference='frozen_copy'",
                           f"--workdir={tmp_path / 'frozen'}"])
    assert frozen.returncode == 0, frozen.stderr[-3000:]
    cached, fly = _train_records(workdir), _train_records(tmp_path / "frozen")
    assert [r["step"] for r in cached] == [1, 2, 3]
    assert [r["train/loss"] for r in cached] == pytest.approx(
        [r["train/loss"] for r in fly], abs=1e-6)
    # Step 1 runs before any update: the policy is the reference, the loss is ln 2.
    assert fly[0]["train/margin"] == 0.0 and fly[0]["train/reward_chosen"] == 0.0
    assert fly[0]["train/loss"] == pytest.approx(LN2, abs=1e-7)
    assert cached[0]["train/loss"] == pytest.approx(LN2, abs=1e-6)


@pytest.mark.slow
@pytest.mark.distributed
def test_a_frozen_copy_is_sharded_like_the_policy_and_computes_as_it_does(cached_run, tmp_path):
    # Two ranks: the copy, sharded as the policy is, gives the cached losses.
    two = run_launcher([*SMOKE, "--gin_bindings=dpo_task.reference='frozen_copy'",
                        f"--workdir={tmp_path / 'two'}"], torchrun_nproc=2)
    assert two.returncode == 0, two.stderr[-3000:]
    cached, fly = _train_records(cached_run[0]), _train_records(tmp_path / "two")
    assert [r["train/loss"] for r in fly] == pytest.approx(
        [r["train/loss"] for r in cached], abs=1e-5)
    # bf16: the copy computes in the policy's precision (not fp32 beside a bf16 policy), so
    # before any update policy and reference agree exactly.
    bf16 = run_launcher([*SMOKE, "--gin_bindings=dpo_task.reference='frozen_copy'",
                         "--gin_bindings=fsdp.param_dtype='bfloat16'",
                         "--gin_bindings=Trainer.num_steps=2",
                         f"--workdir={tmp_path / 'bf16'}"], torchrun_nproc=2)
    assert bf16.returncode == 0, bf16.stderr[-3000:]
    first = _train_records(tmp_path / "bf16")[0]
    assert first["train/margin"] == 0.0 and first["train/loss"] == pytest.approx(LN2, abs=1e-7)


@pytest.mark.slow
def test_a_resume_never_recomputes_the_reference(cached_run, tmp_path):
    workdir, _ = cached_run
    resumed = tmp_path / "resumed"
    shutil.copytree(workdir, resumed)
    (resumed / "reference_logps.safetensors").unlink()
    proc = run_launcher([*SMOKE, "--gin_bindings=Trainer.num_steps=4",
                         f"--workdir={resumed}"])
    assert proc.returncode == 2
    assert "reference_logps.safetensors is missing" in proc.stderr
    assert "never recomputes the reference from trained weights" in proc.stderr
    assert proc.stderr.count("error:") == 1


@pytest.mark.parametrize("bindings, expected", [
    (["dpo_task.loss_fn = @simpo_loss()", "dpo_task.reference = 'frozen_copy'"],
     "simpo_loss is reference-free, so the binding does nothing"),
    (["sigmoid_dpo_loss.gamma = 0.5"], "unknown parameter 'gamma' of sigmoid_dpo_loss"),
    (["simpo_loss.gamma = 0.5"], "binding of simpo_loss.gamma does nothing"),
    (["sigmoid_dpo_loss.beta = 0.0"], "sigmoid_dpo_loss: beta=0.0 must be > 0"),
    (["sigmoid_dpo_loss.label_smoothing = 0.5"], "label_smoothing=0.5 must be in [0, 0.5)"),
    (["dpo_task.reference = 'policy'"], "reference='policy'; valid: cached, frozen_copy"),
], ids=["simpo_reference", "dpo_gamma", "unused_loss", "beta", "smoothing", "reference"])
def test_a_setting_the_chosen_loss_does_not_use_is_refused(search_roots, bindings, expected):
    from launchers.train import BUILDS
    from lib import config

    with pytest.raises(config.ConfigError, match=re.escape(expected)):
        config.load(["gin/dpo.gin"], bindings, builds=BUILDS)


def test_a_saved_simpo_config_loads_again(search_roots, tmp_path):
    """A saved config writes every default (dpo_task.reference = 'cached'), which the
    reference-free check must not take for a binding that does nothing."""
    from launchers.train import BUILDS
    from lib import config

    cfg = config.load(["gin/dpo.gin"], ["dpo_task.loss_fn = @simpo_loss()"], builds=BUILDS)
    saved = tmp_path / "operative_config.gin"
    saved.write_text(cfg.effective_text())
    assert "dpo_task.reference = 'cached'  # default" in saved.read_text()
    again = config.load([str(saved)], [], builds=BUILDS)
    assert again.effective_text().count("@simpo_loss()") == 1
