"""Padding-free batches: the layout, and every task's per-sequence results equal to the padded
ones to 1e-5 in float32 (rewards, DPO log-probability sums, SFT token losses)."""

import types

import pytest
import torch

from lib.data.batching import collate, collate_packed
from lib.data.encoding import encode_pairs
from lib.data.packing import block_causal_mask, pack, place
from lib.data.sources import read_pairs
from lib.data.sft_data import SFTExample
from lib.tasks.dpo import DPOTask
from lib.tasks.reward import RewardTask
from lib.tasks.sft import SFTTask, collate_examples
from tests.conftest import DEMO


def test_first_fit_decreasing_fills_rows_as_long_as_the_longest_sequence():
    rows, offsets, row_length, num_rows = place([5, 3, 2, 4, 1])
    assert row_length == 5 and num_rows == 3
    # 5 | 4 1 | 3 2: longest first, each into the first row with room.
    assert (rows, offsets) == ([0, 2, 2, 1, 1], [0, 0, 3, 0, 4])


def test_pack_restarts_positions_and_the_mask_keeps_each_sequence_to_itself():
    batch = pack([[1, 2, 3], [4, 5], [6]], pad_id=0)
    assert batch["tokens"].tolist() == [[1, 2, 3], [4, 5, 6]]
    assert batch["positions"].tolist() == [[0, 1, 2], [0, 1, 0]]
    assert batch["segments"].tolist() == [[0, 0, 0], [1, 1, 2]]
    assert batch["ends"].tolist() == [2, 4, 5] and batch["starts"].tolist() == [0, 3, 5]
    assert (batch["num_tokens"], batch["computed_tokens"]) == (6, 6)
    mask = block_causal_mask(batch["segments"])
    assert mask[1].tolist() == [[True, False, False], [True, True, False],
                                [False, False, True]]
    padded = pack([[1, 2, 3], [4]], pad_id=0)
    assert padded["segments"].tolist() == [[0, 0, 0], [1, -1, -1]]
    # A pad position sees itself only (a finite softmax nobody reads).
    assert block_causal_mask(padded["segments"])[1].tolist() == [
        [True, False, False], [False, True, False], [False, False, True]]


@pytest.fixture(scope="module")
def pairs(demo_tokenizer):
    encoded, _ = encode_pairs(read_pairs(DEMO / "eval.jsonl")[:12], demo_tokenizer, 128, "error")
    return encoded


def _model(demo_tokenizer, head):
    from torchtune.models.llama3 import llama3

    torch.manual_seed(0)
    model = llama3(vocab_size=demo_tokenizer.vocab_size, num_layers=2, num_heads=4,
                   num_kv_heads=2, embed_dim=64, intermediate_dim=128, max_seq_len=256)
    if head == "reward":
        model.output = torch.nn.Linear(64, 1, bias=False)
    return model.eval()


def _task(cls, *args):
    task = cls(*args)
    task.dist = types.SimpleNamespace(device=torch.device("cpu"))
    return task


@torch.no_grad()
def test_packed_rewards_equal_padded_ones(pairs, demo_tokenizer):
    model, task = _model(demo_tokenizer, "reward"), _task(RewardTask, None, None)
    padded = collate(pairs, demo_tokenizer.pad_id)
    packed = collate_packed(pairs, demo_tokenizer.pad_id)
    assert packed["computed_tokens"] < padded["computed_tokens"]
    assert packed["num_tokens"] == padded["num_tokens"]
    for got, want in zip(task.forward(model, packed), task.forward(model, padded)):
        torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


@torch.no_grad()
def test_packed_dpo_log_probabilities_and_counts_equal_padded_ones(pairs, demo_tokenizer):
    model = _model(demo_tokenizer, "lm")
    task = _task(DPOTask, None, None, "cached")
    got = task._logps(model, collate_packed(pairs, demo_tokenizer.pad_id))
    want = task._logps(model, collate(pairs, demo_tokenizer.pad_id))
    torch.testing.assert_close(got[1], want[1], rtol=0, atol=0)  # response tokens, exactly
    torch.testing.assert_close(got[0], want[0], rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("train_on_prompt", [False, True])
@torch.no_grad()
def test_packed_sft_loss_sums_equal_padded_ones(pairs, demo_tokenizer, train_on_prompt):
    model = _model(demo_tokenizer, "lm")
    task = _task(SFTTask, None, train_on_prompt, 0, 0)
    examples = [SFTExample(p.chosen, p.prompt_lengths[0], p.source) for p in pairs]
    batches = [collate_examples(examples, demo_tokenizer.pad_id, train_on_prompt, packed)
               for packed in (True, False)]
    assert batches[0]["weight"] == batches[1]["weight"]
    (got_loss, got), (want_loss, want) = (task._sums(model, b) for b in batches)
    torch.testing.assert_close(got_loss, want_loss, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
