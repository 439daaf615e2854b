"""The FSDP wrapper's options run on CPU where torch supports them, and train alike."""

import json

import pytest

from tests.conftest import run_launcher

pytestmark = pytest.mark.slow

SMOKE = ["--gin_file=gin/reward.gin", "--gin_file=gin/debug/smoke.gin",
         "--gin_bindings=RunLogger.use_wandb=False"]
EXPECTED_LOSS_AT_4 = 0.6334946751594543  # tests/launchers/expected_smoke_losses.json


def _final_train_loss(workdir):
    records = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    return [r["train/loss"] for r in records if "train/loss" in r][-1]


@pytest.mark.parametrize("bindings, rel, wrapped", [
    (["fsdp.activation_checkpointing=True"], 1e-5, False),  # recomputes the same activations
    (["fsdp.param_dtype='bfloat16'"], 2e-2, True),  # bf16 compute, fp32 master weights
    (["fsdp.compile_blocks=True"], 1e-4, False),  # inductor on CPU (a minute of compiling)
    (["fsdp.shard_single_process=True"], 1e-5, True),
    (["fsdp.shard_single_process=True", "fsdp.reshard_after_forward=False"], 1e-5, True),
    # two micro-batches a step: gradients reduced after each (default), or once after both
    (["fsdp.shard_single_process=True", "fsdp.defer_gradient_sync=True"], 1e-5, True),
])
def test_option_runs_on_cpu_and_trains_alike(tmp_path, bindings, rel, wrapped):
    """At world size 1, FSDP2 wraps the model only for bf16 or when asked to."""
    proc = run_launcher([*SMOKE, *(f"--gin_bindings={b}" for b in bindings),
                         f"--workdir={tmp_path / 'w'}"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert _final_train_loss(tmp_path / "w") == pytest.approx(EXPECTED_LOSS_AT_4, rel=rel)
    assert ("model is not wrapped with FSDP2" not in proc.stderr) == wrapped


def test_options_an_unwrapped_model_ignores_are_named(tmp_path):
    proc = run_launcher([*SMOKE, "--gin_bindings=fsdp.reshard_after_forward=False",
                         "--gin_bindings=fsdp.defer_gradient_sync=True",
                         f"--workdir={tmp_path / 'w'}"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    for binding in ("reshard_after_forward=False", "defer_gradient_sync=True"):
        assert (f"fsdp.{binding} has no effect on an unwrapped model (it applies from 2 "
                "processes, or with fsdp.shard_single_process=True)") in proc.stderr


def test_cpu_offload_is_refused_without_a_gpu(tmp_path):
    proc = run_launcher([*SMOKE, "--gin_bindings=fsdp.cpu_offload=True", "--validate_only"])
    assert proc.returncode == 2
    assert "fsdp: cpu_offload=True moves parameters from a GPU to the CPU" in proc.stderr


def test_offloaded_ranks_share_the_nodes_cpus(monkeypatch):
    """torchrun leaves OMP_NUM_THREADS=1 for several ranks a node; offloading resets it."""
    from lib.parallel import offload_threads

    monkeypatch.setattr("os.sched_getaffinity", lambda pid: set(range(16)))
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "8")
    assert offload_threads() == 2
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "32")
    assert offload_threads() == 1
    monkeypatch.delenv("LOCAL_WORLD_SIZE")
    assert offload_threads() == 16
