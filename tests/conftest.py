"""Shared fixtures: a clean gin state per test, the demo tokenizer, and running the launcher."""

import os
import pathlib
import subprocess
import sys

import pytest

from third_party import gin_config

REPO = pathlib.Path(__file__).resolve().parent.parent
DEMO = REPO / "assets" / "demo"


@pytest.fixture(autouse=True)
def clean_gin():
    """Every test starts and ends with no bindings and an unlocked config."""
    gin_config.reset()
    yield
    gin_config.reset()


@pytest.fixture(scope="session")
def demo_tokenizer():
    from lib.data.tokenizer import Tokenizer

    return Tokenizer(DEMO)


def run_launcher(args, cwd=REPO, env=None, timeout=600, torchrun_nproc=None):
    """Runs `python -m launchers.train ARGS` (or under torchrun) and returns the CompletedProcess."""
    full_env = {**os.environ, "WANDB_MODE": "offline", "PYTHONUNBUFFERED": "1", **(env or {})}
    if torchrun_nproc:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
               f"--nproc_per_node={torchrun_nproc}", "-m", "launchers.train", *args]
    else:
        cmd = [sys.executable, "-m", "launchers.train", *args]
    return subprocess.run(cmd, cwd=cwd, env=full_env, capture_output=True, text=True,
                          timeout=timeout)
