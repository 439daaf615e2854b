"""Which pairs each rank reads, and how a batch is laid out."""

import pytest

from lib.data.batching import StepSchedule, collate, eval_shard
from lib.data.encoding import EncodedPair


def test_ranks_split_the_global_batch_without_overlap():
    schedules = [StepSchedule(100, 8, rank, 2, 2, seed=3) for rank in range(2)]
    for step in (0, 5, 12, 13):  # 12 steps per epoch: 13 is in the second epoch
        parts = [sum(s.micro_batches(step), []) for s in schedules]
        assert all(len(p) == 4 for p in parts)
        assert not set(parts[0]) & set(parts[1])
    single = StepSchedule(100, 8, 0, 1, 4, seed=3)
    assert sorted(sum(single.micro_batches(5), [])) == sorted(
        sum(schedules[0].micro_batches(5), []) + sum(schedules[1].micro_batches(5), []))


def test_order_is_a_function_of_seed_and_step_only():
    a, b = StepSchedule(50, 5, 0, 1, 5, seed=1), StepSchedule(50, 5, 0, 1, 5, seed=1)
    for step in range(25):
        a.micro_batches(step)
    assert a.micro_batches(23) == b.micro_batches(23)
    assert StepSchedule(50, 5, 0, 1, 5, seed=2).micro_batches(0) != b.micro_batches(0)
    epoch = sorted(i for step in range(10) for i in b.micro_batches(step)[0])
    assert epoch == list(range(50))


def test_impossible_split_names_the_numbers():
    with pytest.raises(ValueError, match=r"global_batch_size=10 must be divisible by "
                                         r"world_size \(2\) x micro_batch_size \(4\)"):
        StepSchedule(100, 10, 0, 2, 4, seed=0)


def test_eval_shards_cover_every_pair_once_with_equal_batch_counts():
    shards = [eval_shard(9, r, 2, 2) for r in range(2)]
    assert len(shards[0]) == len(shards[1]) == 3
    flat = [i for s in shards for b in s for i in b]
    assert sorted(flat) == list(range(9))


def test_collate_stacks_chosen_then_rejected_right_padded():
    pairs = [EncodedPair([1, 2, 3], [1, 4], 0.5, "a"), EncodedPair([1, 5], [1, 6, 7, 8], None, "b")]
    b = collate(pairs, pad_id=0)
    assert b["tokens"].tolist() == [[1, 2, 3, 0], [1, 5, 0, 0], [1, 4, 0, 0], [1, 6, 7, 8]]
    assert b["attention_mask"].sum(-1).tolist() == [3, 2, 2, 4]
    assert b["margin"].tolist() == [0.5, 0.0]
    assert b["num_tokens"] == 11
