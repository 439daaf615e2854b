"""Every shipped .gin file (found recursively) passes the strict checks."""

import pathlib
import re

import pytest

from launchers.train import BUILDS
from lib import config

GIN_DIR = pathlib.Path(__file__).resolve().parent.parent / "gin"
GIN_FILES = sorted(GIN_DIR.rglob("*.gin"))
# Runnable configs; the layers they include (base/, tasks/, models/) are checked through them,
# and overlays (debug/, overlays/) applied to every task in tests/test_overlays.py.
COMPLETE = sorted(GIN_DIR.glob("*.gin")) + sorted((GIN_DIR / "experiments").glob("*.gin")) + \
    sorted((GIN_DIR / "benchmarks").glob("*.gin"))
OVERLAYS = sorted((GIN_DIR / "debug").glob("*.gin")) + sorted((GIN_DIR / "overlays").glob("*.gin"))


def _bindings_for(path, hf_dirs, sft_run):
    text = path.read_text()
    bindings = []
    if re.search(r"^Trainer\.init_from = ", text, re.MULTILINE):
        bindings.append(f"Trainer.init_from = '{sft_run}'")
    if re.search(r"Must be set:.*\btrain_files\b", text):  # the header says what it needs
        bindings += ["train_files = ['assets/demo/train.jsonl']",
                     "eval_files = ['assets/demo/eval.jsonl']"]
    model = "qwen2" if "qwen2" in path.name else "llama"
    if "experiments" in path.parts:
        bindings.append(f"hf_checkpoint_dir = '{hf_dirs[model]}'")
    return bindings


def test_gin_files_are_found():
    assert len(GIN_FILES) >= 9 and len(COMPLETE) >= 3 and OVERLAYS


@pytest.mark.parametrize("path", COMPLETE, ids=lambda p: str(p.relative_to(GIN_DIR)))
def test_shipped_config_passes_strict_checks(path, hf_dirs, sft_run, search_roots):
    cfg = config.load([str(path)], _bindings_for(path, hf_dirs, sft_run), builds=BUILDS)
    assert cfg.warnings == []
    assert "Trainer.model_fn" in cfg.effective_text()


def test_every_shipped_file_is_covered(hf_dirs, sft_run, search_roots):
    read = set()
    for path in COMPLETE:
        read |= set(config.load([str(path)], _bindings_for(path, hf_dirs, sft_run),
                                builds=BUILDS).files)
    assert set(GIN_FILES) - set(OVERLAYS) == read


def test_canonical_config_binds_the_cli_lr_to_the_optimizer(search_roots):
    import gin

    config.load(["gin/reward.gin"], ["lr=1e-4"], builds=BUILDS)
    assert gin.query_parameter("%lr") == 1e-4
    assert repr(gin.query_parameter("build_adamw.lr")) == "%lr"
