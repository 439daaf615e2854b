"""SFT: completion-only targets, the data forms, and a loss that no batch split changes."""

import json
import subprocess
import sys

import pytest
import torch

from lib.data.sft_data import SFTExample, encode_examples, parse_row
from lib.data.sources import DataError, read_rows
from lib.models.logprobs import IGNORE
from lib.tasks.sft import collate_examples
from tests.conftest import REPO


def test_targets_cover_the_completion_and_eos_only():
    batch = collate_examples([SFTExample([1, 10, 11, 20, 21, 2], 3, "a"),
                              SFTExample([1, 12, 22, 2], 2, "b")], pad_id=0,
                             train_on_prompt=False)
    assert batch["tokens"].tolist() == [[1, 10, 11, 20, 21, 2], [1, 12, 22, 2, 0, 0]]
    # position t predicts token t + 1; only completion tokens (and EOS) are targets
    assert batch["targets"].tolist() == [[IGNORE, IGNORE, 20, 21, 2, IGNORE],
                                         [IGNORE, 22, 2, IGNORE, IGNORE, IGNORE]]
    assert batch["weight"] == 5 and batch["num_tokens"] == 10
    everything = collate_examples([SFTExample([1, 10, 11, 20, 2], 3, "a")], 0, True)
    assert everything["targets"].tolist() == [[10, 11, 20, 2, IGNORE]]


def test_row_forms(tmp_path):
    msgs = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"},
            {"role": "assistant", "content": "hello"}]
    assert parse_row({"prompt": "Q", "completion": "A"}, "x") == ("Q", "A")
    assert parse_row({"messages": msgs}, "x") == (msgs[:2], msgs[2:])
    assert parse_row({"prompt": msgs[:2], "completion": msgs[2:]}, "x") == (msgs[:2], msgs[2:])
    with pytest.raises(DataError, match=r"x: 'messages' has no assistant message"):
        parse_row({"messages": msgs[:2]}, "x")
    with pytest.raises(DataError, match=r"x: expected 'prompt' and 'completion' .*; got the "
                       r"fields answer, prompt$"):
        parse_row({"prompt": "Q", "answer": "A"}, "x")
    with pytest.raises(DataError, match=r"; got 'prompt' is str and 'completion' is null$"):
        parse_row({"prompt": "Q", "completion": None}, "x")
    with pytest.raises(DataError, match=r"; got 'prompt' is str and 'completion' is int$"):
        parse_row({"prompt": "Q", "completion": 7}, "x")


def test_an_empty_assistant_message_is_counted_and_dropped_or_refused(demo_tokenizer):
    """The chat template's markup around an empty reply is not a reply."""
    def chat(reply):
        return ([{"role": "user", "content": "hi"}], [{"role": "assistant", "content": reply}])

    rows = [(*chat("hello"), "m:1"), (*chat(""), "m:2"), (*chat("  "), "m:3")]
    kept, stats = encode_examples(rows, demo_tokenizer, 128, "error")
    assert [e.source for e in kept] == ["m:1"] and stats.dropped_empty_completion == 2
    with pytest.raises(DataError, match="^m:2: "):
        encode_examples(rows, demo_tokenizer, 128, "error", empty_policy="error")


def test_a_column_mapping_and_a_saved_dataset_folder(tmp_path):
    datasets = pytest.importorskip("datasets")
    rows = [{"instruction": "Q1", "output": "A1"}, {"instruction": "Q2", "output": "A2"}]
    datasets.DatasetDict({"train": datasets.Dataset.from_list(rows)}).save_to_disk(
        tmp_path / "ds")
    got = read_rows(f"{tmp_path / 'ds'}:train", {"prompt": "instruction", "completion": "output"})
    assert [parse_row(r, w) for r, w in got] == [("Q1", "A1"), ("Q2", "A2")]
    assert got[1][1] == f"{tmp_path / 'ds'}:train:2"
    with pytest.raises(DataError, match="holds the splits train; name one"):
        read_rows(tmp_path / "ds")
    with pytest.raises(DataError, match=r":1: no column 'answer'"):
        read_rows(f"{tmp_path / 'ds'}:train", {"completion": "answer"})


def test_a_dataset_by_name_and_split_through_datasets_offline(tmp_path, monkeypatch):
    pytest.importorskip("datasets")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "cache"))
    (tmp_path / "local").mkdir()
    (tmp_path / "local" / "train.jsonl").write_text(json.dumps({"prompt": "Q", "completion": "A"})
                                                    + "\n")
    ((row, where),) = read_rows(f"hf:{tmp_path / 'local'}:train")
    assert parse_row(row, where) == ("Q", "A") and where == f"hf:{tmp_path / 'local'}:train:1"


def test_a_dataset_missing_from_the_local_cache_is_named(tmp_path, monkeypatch):
    pytest.importorskip("datasets")
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    with pytest.raises(DataError, match="hf:nobody/nothing:train: not in the local Hugging"):
        read_rows("hf:nobody/nothing:train")


def test_truncation_cuts_the_prompt_first_then_the_completion_without_eos(demo_tokenizer):
    rows = [("What should I know about gardening and cooking and cycling today?",
             "Sure! For gardening, water the tomatoes early in the morning.", "r:1"),
            ("Q", "", "r:2")]
    full, _ = encode_examples(rows[:1], demo_tokenizer, 512, "error")
    n_prompt = full[0].prompt_length
    cut, stats = encode_examples(rows, demo_tokenizer, n_prompt + 3, "truncate")
    assert stats.truncated == 1 and stats.dropped_empty_completion == 1 and stats.kept == 1
    (example,) = cut
    assert len(example.tokens) == n_prompt + 3 and example.tokens[0] == demo_tokenizer.bos_id
    completion = full[0].tokens[n_prompt:]
    assert example.tokens[example.prompt_length:] == completion[:len(example.tokens)
                                                                - example.prompt_length]
    assert example.tokens[-1] != demo_tokenizer.eos_id
    tight, _ = encode_examples(rows[:1], demo_tokenizer, 6, "truncate")
    assert tight[0].prompt_length == 1 and len(tight[0].tokens) == 6  # BOS, then completion
    with pytest.raises(DataError, match="r:1: .* longer than max_length=6"):
        encode_examples(rows[:1], demo_tokenizer, 6, "error")


SPLITS = {"one batch": (1, 4, 4), "1 rank x 4 micro-batches": (1, 4, 1),
          "2 ranks x 2 micro-batches": (2, 4, 1)}


@pytest.mark.slow
@pytest.mark.distributed
def test_the_loss_and_gradients_do_not_depend_on_the_batch_split(tmp_path):
    """The mean over the global batch's completion tokens, whatever the split (to 1e-6)."""
    results = {}
    for name, (nproc, global_batch, micro) in SPLITS.items():
        out = tmp_path / f"{nproc}-{micro}.pt"
        args = ["--gin_file=gin/sft.gin",
                f"--gin_bindings=Trainer.global_batch_size={global_batch}",
                f"--gin_bindings=Trainer.micro_batch_size={micro}",
                "--gin_bindings=Trainer.max_grad_norm=0.0"]
        launcher = ([sys.executable, "-m", "launchers.torchrun", "--standalone",
                     f"--nproc_per_node={nproc}"] if nproc > 1 else [sys.executable])
        proc = subprocess.run([*launcher, str(REPO / "tests/tasks/step_probe.py"), str(out),
                               *args], cwd=REPO, capture_output=True, text=True, timeout=300)
        assert proc.returncode == 0, proc.stderr[-3000:]
        results[name] = torch.load(out, weights_only=False)
    want = results["one batch"]
    # Examples differ in length, so a mean of per-micro-batch means would differ here.
    assert want["metrics"]["train/tokens"] > 0
    for name, got in results.items():
        assert got["metrics"]["train/tokens"] == want["metrics"]["train/tokens"], name
        assert got["metrics"]["train/loss"] == pytest.approx(want["metrics"]["train/loss"],
                                                            abs=1e-6), name
        for key, grad in want["grads"].items():
            torch.testing.assert_close(got["grads"][key], grad, atol=1e-6, rtol=1e-5,
                                       msg=f"{name}: {key}")


def test_the_sft_demo_config_reads_prompts_and_chosen_replies(search_roots):
    from launchers.train import BUILDS
    from lib import config

    cfg = config.load(["gin/sft.gin"], [], builds=BUILDS)
    text = cfg.effective_text()
    assert "Trainer.task = @sft_task()" in text
    assert "build_sft_data.columns = {'completion': 'chosen'}" in text
    first = json.loads((REPO / "assets/demo/train.jsonl").read_text().splitlines()[0])
    (row, _), = read_rows(REPO / "assets/demo/train.jsonl", {"completion": "chosen"})[:1]
    assert parse_row(row, "x") == (first["prompt"], first["chosen"])


@pytest.mark.slow
def test_eval_samples_reach_the_console_metrics_and_wandb(tmp_path):
    """In bf16, where the model is sharded (FSDP2) and its parameters are fp32 master weights
    while attention computes in bf16; the unsharded fp32 model's samples are shown in
    tests/tasks/test_guarantees.py's SFT runs (one rank, and two, sharded), which take them."""
    from tests.conftest import run_launcher

    workdir = tmp_path / "w"
    proc = run_launcher(["--gin_file=gin/sft.gin", "--gin_file=gin/debug/smoke.gin",
                         "--gin_bindings=sft_task.num_samples=2",
                         "--gin_bindings=fsdp.param_dtype='bfloat16'", f"--workdir={workdir}"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stderr.count("sample @ step 4 | prompt ") == 2
    records = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    samples = [r for r in records if "eval/samples" in r]
    assert [r["step"] for r in samples] == [2, 4]
    assert set(samples[-1]["eval/samples"][0]) == {"prompt", "completion", "reference"}
    (record,) = (workdir / "wandb").glob("offline-run-*/run-*.wandb")
    assert b"eval/samples" in record.read_bytes()
