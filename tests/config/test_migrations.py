"""Configs written before tasks still load, with a warning, and train exactly as they did."""

import json

import pytest

from launchers.train import BUILDS
from lib import config
from tests.conftest import REPO, run_launcher

SAVED = REPO / "tests/fixtures/v0_reward_smoke/operative_config.gin"


def test_a_config_saved_before_tasks_loads_with_one_warning_per_change(search_roots):
    cfg = config.load([str(SAVED)], [], builds=BUILDS)
    text = cfg.effective_text()
    assert "Trainer.task = @reward_task()" in text
    assert "reward_task.data_fn = @build_preference_data" in text
    assert "Trainer.model_fn = @llama3_model" in text and "llama3_reward_model" not in text
    assert len(cfg.warnings) == 3
    assert any("Trainer.loss_fn is from a config written before tasks" in w
               for w in cfg.warnings)
    assert any("llama3_reward_model is the old name of llama3_model; applying its 12 "
               "binding(s)" in w for w in cfg.warnings)


def test_a_current_config_that_names_a_moved_parameter_is_refused(search_roots):
    with pytest.raises(config.ConfigError, match="unknown parameter 'data_fn' of Trainer"):
        config.load(["gin/reward.gin"], ["Trainer.data_fn = @build_preference_data"],
                    builds=BUILDS)


@pytest.mark.slow
def test_the_saved_config_relaunches_to_the_losses_it_recorded(tmp_path):
    proc = run_launcher([f"--gin_file={SAVED}", f"--workdir={tmp_path / 'w'}",
                         "--gin_bindings=RunLogger.use_wandb=False"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    records = lambda path: [r for r in map(json.loads, path.read_text().splitlines())  # noqa: E731
                            if "train/loss" in r or "eval/loss" in r]
    got, saved = records(tmp_path / "w" / "metrics.jsonl"), records(SAVED.parent / "metrics.jsonl")
    assert [(r["step"], "train/loss" in r) for r in got] == [
        (r["step"], "train/loss" in r) for r in saved]
    # Bit-identical on the machine that saved it; another CPU's float kernels (vector width,
    # summation order) move the losses by about 1e-7.
    for g, s in zip(got, saved):
        for key in ("train/loss", "eval/loss"):
            if key in s:
                assert g[key] == pytest.approx(s[key], rel=1e-5)
