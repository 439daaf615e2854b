"""Every shipped .gin file parses against the real configurables."""

import pathlib

import gin
import pytest

from lib import config

GIN_DIR = pathlib.Path(__file__).resolve().parent.parent / "gin"
GIN_FILES = sorted(GIN_DIR.rglob("*.gin"))
# Overlays only shorten or adjust a full config; they are checked applied after one.
OVERLAYS = {"debug"}


def test_gin_files_are_found():
    assert len(GIN_FILES) >= 8


@pytest.mark.parametrize("path", GIN_FILES, ids=lambda p: str(p.relative_to(GIN_DIR)))
def test_shipped_gin_file_parses(path):
    files = [str(path)]
    if path.parent.name in OVERLAYS:
        files = ["gin/reward.gin", str(path)]
    bindings = []
    text = path.read_text()
    if "hf_checkpoint_dir" in text:
        bindings.append("hf_checkpoint_dir = '/models/x'")
    if "train_files = %gin.REQUIRED" in text:
        bindings += ["train_files = ['a.jsonl']", "eval_files = ['b.jsonl']"]
    config.set_search_roots([config.REPO_ROOT])
    config.parse(files, bindings)
    if path.parent.name not in ("base", "tasks", "models"):  # complete configs
        assert gin.query_parameter("Trainer.model_fn") is not None
        assert gin.query_parameter("Trainer.num_steps") > 0


def test_required_macro_left_unset_is_named():
    config.set_search_roots([config.REPO_ROOT])
    with pytest.raises(config.ConfigError, match="required macro.*hf_checkpoint_dir"):
        config.parse(["gin/experiments/qwen2_5_0_5b_reward.gin"],
                     ["train_files = ['a.jsonl']", "eval_files = ['b.jsonl']"])


def test_canonical_config_trains_with_the_lr_binding():
    config.set_search_roots([config.REPO_ROOT])
    config.parse(["gin/reward.gin"], ["lr=1e-4"])
    assert gin.query_parameter("%lr") == 1e-4
    assert repr(gin.query_parameter("build_adamw.lr")) == "%lr"
