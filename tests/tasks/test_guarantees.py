"""Every task keeps the reward task's guarantees: exact resume through SIGTERM and SIGKILL, two
ranks under torchrun with the same numbers, relaunch from the saved config, the runs table.

The reward task has its own, finer tests (tests/test_checkpointing.py, tests/test_distributed.py);
here the same claims run for every other task, on one shared straight run per task.
"""

import json
import signal

import pytest
import torch
from torch.distributed.checkpoint.format_utils import dcp_to_torch_save

from tests.conftest import DEMO, REPO, run_launcher

pytestmark = pytest.mark.slow

# name: (files and bindings of the config, its data builder, its eval file, its eval headline
# metric, its eval count). dpo_lora runs DPO with LoRA adapters (FSDP2 over a frozen base at 2
# ranks) and its reference as the adapters-off model; grpo samples its own completions (from
# scratch here: the demo's SFT start is not needed for these claims).
PAIRS = DEMO / "eval.jsonl"
COMPARE = REPO / "assets" / "compare" / "eval.jsonl"
TASKS = {"sft": (["--gin_file=gin/sft.gin"], "build_sft_data", PAIRS, "eval/loss",
                 "eval/tokens"),
         "dpo": (["--gin_file=gin/dpo.gin"], "build_preference_data", PAIRS, "eval/loss",
                 "eval/pairs"),
         "dpo_lora": (["--gin_file=gin/dpo.gin", "--gin_file=gin/overlays/lora.gin",
                       "--gin_bindings=dpo_task.reference='frozen_copy'"],
                      "build_preference_data", PAIRS, "eval/loss", "eval/pairs"),
         "grpo": (["--gin_file=gin/grpo.gin", "--gin_bindings=Trainer.init_from=''"],
                  "build_prompt_data", COMPARE, "eval/pass_at_1", "eval/prompts")}


def _base(task, tmp_path_factory):
    config, data, source = TASKS[task][:3]
    nine = tmp_path_factory.getbasetemp() / f"nine-{source.parent.name}.jsonl"
    if not nine.exists():  # an eval set that two ranks split unevenly
        nine.write_text("".join(source.read_text().splitlines(True)[:9]))
    return [*config, "--gin_file=gin/debug/smoke.gin",
            "--gin_bindings=Trainer.num_steps=8", "--gin_bindings=Trainer.checkpoint_every=4",
            "--gin_bindings=Trainer.eval_every=4", "--gin_bindings=Trainer.log_every=1",
            "--gin_bindings=Trainer.eval_batch_size=2", f"--gin_bindings={data}.eval_files="
            f"['{nine}']", "--gin_bindings=RunLogger.use_wandb=False",
            # constant, so a shorter run has the same lr at each step as the straight run
            "--gin_bindings=build_lr_schedule.decay='constant'"]


def _records(workdir):
    return [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]


def _numbers(workdir):
    """[(step, loss or eval headline)] of every train and eval record, in the order written."""
    keys = ("train/loss", "eval/loss", "eval/pass_at_1")
    return [(r["step"], next(r[k] for k in keys if k in r)) for r in _records(workdir)
            if any(k in r for k in keys)]


def _weights(checkpoint, out):
    dcp_to_torch_save(str(checkpoint), str(out))
    return torch.load(out, weights_only=False)["model"]


@pytest.fixture(scope="module", params=sorted(TASKS))
def straight(request, tmp_path_factory):
    task = request.param
    base = _base(task, tmp_path_factory)
    workdir = tmp_path_factory.mktemp(task) / "straight"
    proc = run_launcher([*base, f"--workdir={workdir}"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    return task, base, workdir


def test_sigterm_sigkill_and_resume_give_the_straight_run_bit_for_bit(straight, tmp_path):
    task, base, want = straight
    workdir = tmp_path / "w"
    args = [*base, f"--workdir={workdir}"]
    stopped = run_launcher(args, env={"GINTUNE_SIGNAL_AT": "step_end:2"})
    assert stopped.returncode == 75, stopped.stderr[-3000:]
    assert "stopped by a signal at step 3" in stopped.stderr
    killed = run_launcher(args, env={"GINTUNE_CRASH_AT": "step_end:6"})
    assert killed.returncode == -signal.SIGKILL
    assert "resuming from" in killed.stderr and "step_3" in killed.stderr
    resumed = run_launcher(args)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert "step_4" in resumed.stderr.split("resuming from", 1)[1].splitlines()[0]
    assert _numbers(workdir) == _numbers(want)  # each step once, in order, bit for bit
    got = _weights(workdir / "checkpoints/step_8", tmp_path / "got.pt")
    ref = _weights(want / "checkpoints/step_8", tmp_path / "want.pt")
    assert got.keys() == ref.keys() and all(torch.equal(got[k], ref[k]) for k in ref)


@pytest.mark.distributed
def test_two_ranks_train_and_evaluate_like_one(straight, tmp_path):
    task, base, want = straight
    workdir = tmp_path / "w"
    proc = run_launcher([*base, "--gin_bindings=Trainer.num_steps=4",
                         f"--workdir={workdir}"], torchrun_nproc=2)
    assert proc.returncode == 0, proc.stderr[-4000:]
    shards = sorted(p.name for p in (workdir / "checkpoints" / "step_4").glob("*.distcp"))
    assert shards == ["__0_0.distcp", "__1_0.distcp"]
    # Every task streams its shards from rank 0 (lib/models/streaming.py); the copies a task
    # keeps are made from a meta template (lib/models/copies.py). These models are from
    # scratch, so rank 0 draws them whole, as one process does. DPO's cached reference is
    # keyed by the digest of the initial weights, which rank 0 computes as they stream: the
    # same key.
    summary = json.loads((workdir / "summary.json").read_text())
    assert summary["startup/streamed_weights"] and summary["startup/rank_0_built_full_model"]
    assert len(summary["startup/peak_rss_gb_by_rank"]) == 2
    straight = json.loads((want / "summary.json").read_text())
    assert summary.get("reference/key") == straight.get("reference/key")
    headline, count = TASKS[task][3:]
    one = {r["step"]: r for r in _records(want) if headline in r}[4]
    two = {r["step"]: r for r in _records(workdir) if headline in r}[4]
    # 9 examples over 2 ranks: sums reduced over ranks, so counts are exact and means agree
    # up to the order of float additions (GRPO: each prompt's completions are sampled alike at
    # any world size).
    assert two[count] == one[count] > 0
    for key, value in one.items():
        if key.startswith("eval/") and isinstance(value, float):
            assert two[key] == pytest.approx(value, rel=1e-5, abs=1e-6), key
    train = lambda w: [loss for s, loss in _numbers(w) if s <= 4][:4]  # noqa: E731
    assert train(workdir) == pytest.approx(train(want), rel=1e-5)


def test_the_saved_config_relaunches_to_the_same_numbers(straight, tmp_path):
    task, _, want = straight
    saved = want / "checkpoints" / "step_8" / "operative_config.gin"
    proc = run_launcher([f"--gin_file={saved}", f"--workdir={tmp_path / 'again'}"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert _numbers(tmp_path / "again") == _numbers(want)


def test_the_runs_table_reads_every_task(straight):
    from lib import runs

    task, _, want = straight
    record = runs.from_run_dir(want)
    headline = {"sft": "eval/token_accuracy", "grpo": "eval/pass_at_1"}.get(task, "eval/accuracy")
    header, rows = runs.table([record], [headline, "eval/loss"])
    last = [r for r in _records(want) if headline in r][-1]
    assert rows[0][header.index(f"final {headline}")] == last[headline]
    assert repr(record.config["Trainer.task"]) == f"@{task.split('_')[0]}_task()"


@pytest.mark.parametrize("straight", ["dpo_lora"], indirect=True)
def test_dpo_with_lora_takes_the_adapters_off_model_as_its_reference(straight):
    _, _, want = straight
    first = [r for r in _records(want) if "train/loss" in r][0]
    assert first["step"] == 1 and first["train/margin"] == 0.0
    assert first["train/loss"] == pytest.approx(0.6931472, abs=1e-7)
    summary = json.loads((want / "summary.json").read_text())
    assert summary["reference/mode"] == "frozen_copy" and "reference/key" not in summary
