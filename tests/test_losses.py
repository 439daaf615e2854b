"""The Bradley-Terry loss and pairwise metrics against hand-computed values."""

import math

import pytest
import torch

from lib.losses import (bradley_terry_loss, build_bradley_terry_loss, metric_sums,
                        metrics_from_sums)


def test_bradley_terry_matches_hand_computed_values():
    chosen = torch.tensor([2.0, 0.0, -1.0])
    rejected = torch.tensor([1.0, 0.0, 1.0])
    margin = torch.zeros(3)
    expected = [math.log(1 + math.exp(-1.0)), math.log(2.0), math.log(1 + math.exp(2.0))]
    got = bradley_terry_loss(chosen, rejected, margin)
    assert got.tolist() == pytest.approx(expected, rel=1e-6)


def test_margin_is_subtracted_from_the_reward_difference():
    chosen, rejected = torch.tensor([3.0]), torch.tensor([1.0])
    got = bradley_terry_loss(chosen, rejected, torch.tensor([0.5]))
    assert got.item() == pytest.approx(math.log(1 + math.exp(-(3.0 - 1.0 - 0.5))), rel=1e-6)


def test_centering_term_adds_coefficient_times_squared_sum():
    chosen, rejected = torch.tensor([3.0]), torch.tensor([1.0])
    loss_fn = build_bradley_terry_loss(center_rewards_coefficient=0.01)
    got = loss_fn(chosen, rejected, torch.zeros(1))
    assert got.item() == pytest.approx(math.log(1 + math.exp(-2.0)) + 0.01 * 16.0, rel=1e-6)


def test_negative_centering_coefficient_is_refused():
    with pytest.raises(ValueError, match="center_rewards_coefficient=-0.1 must be >= 0"):
        build_bradley_terry_loss(center_rewards_coefficient=-0.1)


def test_accuracy_is_strict_and_ties_are_counted_apart():
    chosen = torch.tensor([1.0, 0.5, 0.0, 2.0])
    rejected = torch.tensor([0.0, 0.5, 1.0, 1.0])
    loss = bradley_terry_loss(chosen, rejected, torch.zeros(4))
    m = metrics_from_sums(metric_sums(loss, chosen, rejected, torch.ones(4)), "eval")
    assert m["eval/accuracy"] == 0.5
    assert m["eval/tie_rate"] == 0.25
    assert m["eval/margin"] == pytest.approx((1.0 + 0.0 - 1.0 + 1.0) / 4)
    assert m["eval/reward_chosen"] == pytest.approx(3.5 / 4)
    assert m["eval/reward_rejected"] == pytest.approx(2.5 / 4)
    all_rewards = torch.cat([chosen, rejected])
    assert m["eval/reward_std"] == pytest.approx(all_rewards.std(unbiased=False).item(), rel=1e-5)
    assert m["eval/loss"] == pytest.approx(loss.mean().item(), rel=1e-6)


def test_zero_weight_pairs_do_not_count():
    chosen, rejected = torch.tensor([1.0, -5.0]), torch.tensor([0.0, 5.0])
    loss = bradley_terry_loss(chosen, rejected, torch.zeros(2))
    m = metrics_from_sums(metric_sums(loss, chosen, rejected, torch.tensor([1.0, 0.0])), "eval")
    assert m["eval/pairs"] == 1
    assert m["eval/accuracy"] == 1.0
    assert m["eval/loss"] == pytest.approx(loss[0].item())
