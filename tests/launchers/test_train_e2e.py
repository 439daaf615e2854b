"""End-to-end runs of the real launcher on CPU: files written, checkpoints, W&B offline, errors."""

import json
import os
import pathlib
import subprocess
import sys

import pytest

from launchers.train import BUILDS
from tests.conftest import REPO, run_launcher, where
from tests.test_readme import check_console_example

pytestmark = pytest.mark.slow

SMOKE = ["--gin_file=gin/reward.gin", "--gin_file=gin/debug/smoke.gin",
         "--gin_bindings=lr=1e-4"]


@pytest.fixture(scope="module")
def smoke_run(tmp_path_factory):
    """One short run from a working directory outside the repository, default workdir."""
    cwd = tmp_path_factory.mktemp("elsewhere")
    proc = run_launcher(SMOKE, cwd=cwd, fresh=True)  # fresh: checks import-time output
    assert proc.returncode == 0, proc.stderr[-4000:]
    (workdir,) = (cwd / "runs").iterdir()
    return workdir, proc


def _metrics(workdir):
    return [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]


def test_default_workdir_is_named_after_the_config_under_the_working_directory(smoke_run):
    workdir, _ = smoke_run
    assert workdir.name.startswith("reward-")


def test_operative_config_records_the_cli_lr_everywhere(smoke_run):
    workdir, _ = smoke_run
    text = (workdir / "operative_config.gin").read_text()
    assert (f"lr = 0.0001  # --gin_bindings[0]; overrides {where('gin/reward.gin', 'lr =')}, "
            f"{where('gin/base/trainer.gin', 'lr =')}") in text.splitlines()
    assert f"build_adamw.lr = %lr  # {where('gin/base/trainer.gin', 'build_adamw.lr')}" in text
    for step in (2, 4):
        ckpt = workdir / "checkpoints" / f"step_{step}"
        assert (ckpt / "operative_config.gin").read_text() == text
    (run_dir,) = (workdir / "wandb").glob("offline-run-*")
    assert (run_dir / "files" / "operative_config.gin").read_text() == text
    assert not (run_dir / "files" / "operative_config.gin").is_symlink()


def test_wandb_run_holds_the_flat_filterable_config(smoke_run):
    workdir, _ = smoke_run
    (record,) = (workdir / "wandb").glob("offline-run-*/run-*.wandb")
    data = record.read_bytes()
    for key in (b"build_adamw/lr", b"Trainer/num_steps", b"llama3_model/embed_dim"):
        assert key in data


def test_metrics_and_progress_are_reported(smoke_run):
    workdir, proc = smoke_run
    records = _metrics(workdir)
    train = [r for r in records if "train/loss" in r]
    evals = [r for r in records if "eval/accuracy" in r]
    assert [r["step"] for r in train] == [2, 4] and [r["step"] for r in evals] == [2, 4]
    for key in ("train/accuracy", "train/tie_rate", "train/margin", "train/reward_chosen",
                "train/reward_rejected", "train/reward_std", "train/tokens_per_s", "train/lr",
                "train/tokens", "train/step_s_median", "train/grad_norm",
                "train/packing_efficiency"):
        assert key in train[0]
    # Packed by default: real tokens over computed ones (the demo's padded batches: about 0.6).
    assert 0.75 < train[0]["train/packing_efficiency"] <= 1.0
    assert evals[-1]["eval/pairs"] == 400
    assert "step 4/4 | loss" in proc.stderr and "tok/s" in proc.stderr and "eta" in proc.stderr
    assert "Detected no triton" not in proc.stderr  # torchao's warning, silenced at its logger
    summary = json.loads((workdir / "summary.json").read_text())
    assert summary["data/train/kept"] == 3000 and summary["data/eval/over_length"] == 0
    assert 0 < summary["startup/first_step_s"] < 120


def test_debug_run_is_deterministic_and_matches_stored_losses(smoke_run, tmp_path):
    workdir, _ = smoke_run
    again = run_launcher([*SMOKE, f"--workdir={tmp_path / 'again'}"])
    assert again.returncode == 0, again.stderr[-3000:]
    first, second = _metrics(workdir), _metrics(tmp_path / "again")
    losses = [{k: v for k, v in r.items() if k.endswith("/loss")} for r in first]
    assert losses == [{k: v for k, v in r.items() if k.endswith("/loss")} for r in second]
    expected = json.loads((pathlib.Path(__file__).parent / "expected_smoke_losses.json")
                          .read_text())
    for key in ("train/loss", "eval/loss"):
        got = {str(r["step"]): r[key] for r in first if key in r}
        assert got == pytest.approx(expected[key], rel=1e-4)


def test_saved_config_relaunches_to_the_same_config_and_losses(smoke_run, tmp_path):
    from lib.config import flat_config

    workdir, _ = smoke_run
    saved = workdir / "checkpoints" / "step_4" / "operative_config.gin"
    proc = run_launcher([f"--gin_file={saved}", f"--workdir={tmp_path / 'again'}"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    again = (tmp_path / "again" / "operative_config.gin").read_text()
    assert flat_config(again) == flat_config(saved.read_text())
    assert f"lr = 0.0001  # {saved}:" in again  # provenance now points at the saved file
    losses = lambda w: [r.get("train/loss", r.get("eval/loss")) for r in _metrics(w)]  # noqa
    assert losses(tmp_path / "again") == losses(workdir)


def test_dataloader_workers_started_with_spawn_give_the_same_batches(smoke_run, tmp_path):
    workdir, _ = smoke_run
    proc = run_launcher([*SMOKE, "--gin_bindings=Trainer.num_workers=1",
                         f"--workdir={tmp_path / 'w'}"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    losses = lambda w: [r.get("train/loss", r.get("eval/loss")) for r in _metrics(w)]  # noqa
    assert losses(tmp_path / "w") == losses(workdir)


def test_checkpoint_loads_back_and_reproduces_the_logged_eval(smoke_run):
    """Rebuild the run from its saved config, load step 4, and re-evaluate."""
    from lib import config, distributed
    from lib.checkpointing import Checkpointer
    from lib.trainer import Trainer

    workdir, _ = smoke_run
    ckpt = workdir / "checkpoints" / "step_4"
    config.set_search_roots([REPO])
    config.load([str(ckpt / "operative_config.gin")], [], builds=BUILDS)
    dist_info = distributed.init()
    reload_dir = workdir.parent / "reloaded"
    trainer = Trainer(str(reload_dir), dist_info, Checkpointer(str(reload_dir)))
    fresh = trainer.evaluate()
    trainer.restore(ckpt)
    assert trainer.step == 4
    reloaded = trainer.evaluate()
    logged = [r for r in _metrics(workdir) if r["step"] == 4 and "eval/loss" in r][0]
    assert reloaded["eval/loss"] == pytest.approx(logged["eval/loss"], rel=1e-5)
    assert reloaded["eval/accuracy"] == logged["eval/accuracy"]
    assert fresh["eval/loss"] != pytest.approx(logged["eval/loss"], rel=1e-3)


def test_a_missing_gin_file_exits_2_and_writes_nothing(tmp_path):
    proc = run_launcher(["--gin_file=gin/nope.gin", f"--workdir={tmp_path / 'w'}"])
    assert proc.returncode == 2
    assert "--gin_file 'gin/nope.gin' not found" in proc.stderr
    assert not (tmp_path / "w").exists()


def test_a_wandb_failure_does_not_stop_training(tmp_path):
    workdir = tmp_path / "w"
    proc = run_launcher([*SMOKE, f"--workdir={workdir}"], env={"WANDB_MODE": "not-a-mode"})
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "W&B disabled for this run" in proc.stderr
    assert any("eval/accuracy" in r for r in _metrics(workdir))


def test_canonical_command_reaches_the_readme_accuracy(tmp_path):
    """The README's demo: the exact command, 300 steps, held-out accuracy >= 0.80."""
    proc = run_launcher(["--gin_file=gin/reward.gin", "--gin_bindings=lr=1e-4",
                         f"--workdir={tmp_path / 'w'}"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    final = [r for r in _metrics(tmp_path / "w") if "eval/accuracy" in r][-1]
    assert final["step"] == 300
    assert final["eval/accuracy"] >= 0.80
    saved = (tmp_path / "w" / "operative_config.gin").read_text()
    assert "lr = 0.0001  # --gin_bindings[0]" in saved
    check_console_example(proc.stderr)


def test_ranks_with_different_configs_all_stop_with_a_message(tmp_path):
    cmd = [sys.executable, "-m", "launchers.torchrun", "--standalone", "--nproc_per_node=2",
           str(REPO / "tests" / "launchers" / "rank_dependent_train.py"), *SMOKE,
           f"--workdir={tmp_path / 'w'}"]
    proc = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=300,
                          env={**os.environ, "WANDB_MODE": "offline"})
    assert proc.returncode == 2
    assert "ranks hold different configs (ranks [1] differ from rank 0)" in proc.stderr
    assert "Trainer.seed = 1  # --gin_bindings[1]" in proc.stderr
    assert proc.stderr.strip().splitlines()[-1].endswith(
        "exited with status 2 (a config or data problem; its log above says why); torchrun "
        "stopped the others")
    assert not (tmp_path / "w").exists()


def test_two_ranks_under_torchrun_train_and_save_one_checkpoint(tmp_path):
    workdir = tmp_path / "w"
    proc = run_launcher([*SMOKE, f"--workdir={workdir}"], torchrun_nproc=2)
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert len(list((workdir / "wandb").glob("offline-run-*"))) == 1
    shards = sorted(p.name for p in (workdir / "checkpoints" / "step_4").glob("*.distcp"))
    assert shards == ["__0_0.distcp", "__1_0.distcp"]
    evals = [r for r in _metrics(workdir) if "eval/accuracy" in r]
    assert evals[-1]["eval/pairs"] == 400
