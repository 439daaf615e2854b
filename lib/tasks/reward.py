"""Reward modeling: a scalar head trained on preference pairs with a pairwise loss.

Each micro-batch runs chosen and rejected sides in one forward; the reward is read at each
side's last real token (lib/models/reward.py). Metrics (`loss`, `accuracy`, `tie_rate`,
`margin`, `reward_chosen`, `reward_rejected`, `reward_std`, `pairs`) are sums over pairs, so
they are exact at any world size; DPO reports its implicit rewards under the same names.
"""

import functools
from typing import Callable

import torch

from lib.config.registry import configurable
from lib.data.batching import StepBatches, collate_pairs
from lib.data.packing import packed_forward
from lib.losses import METRIC_SUMS, metric_sums, metrics_from_sums
from lib.models.limits import max_length_problems
from lib.models.reward import compute_rewards
from lib.tasks import EVAL_METRICS, Task

PAIR_METRICS = ("loss", "accuracy", "tie_rate", "margin", "reward_chosen", "reward_rejected",
                "reward_std")


class RewardTask(Task):
    model_head = "reward"
    sum_names = METRIC_SUMS
    eval_metric_names = PAIR_METRICS
    progress = (("acc", "accuracy", ".3f"),)

    def __init__(self, data_fn: Callable, loss_fn: Callable):
        self.data_fn, self.loss_fn = data_fn, loss_fn

    def build_data(self, tokenizer):
        return self.data_fn(tokenizer)

    def collate(self, pairs):
        return collate_pairs(pairs, self.tokenizer.pad_id, self.pack)

    def step_batches(self):
        return StepBatches(self.schedule, self.data.train, functools.partial(
            collate_pairs, pad_id=self.tokenizer.pad_id, packed=self.pack))

    def forward(self, model, batch):
        """(chosen rewards, rejected rewards, margins), float32, on the model's device."""
        device = self.dist.device
        margin = batch["margin"].to(device, non_blocking=True)
        if "segments" in batch:  # packed: each sequence's reward at its own last token
            out = packed_forward(model, batch, device)
            rewards = out.reshape(-1)[batch["ends"].to(device, non_blocking=True)]
        else:
            tokens, mask = (batch[k].to(device, non_blocking=True)
                            for k in ("tokens", "attention_mask"))
            rewards = compute_rewards(model, tokens, mask, right_padded=True)
        n = rewards.shape[0] // 2
        return rewards[:n].float(), rewards[n:].float(), margin

    def micro_batch_loss(self, model, batch):
        chosen, rejected, margin = self.forward(model, batch)
        per_pair = self.loss_fn(chosen, rejected, margin)
        return per_pair.sum(), metric_sums(per_pair, chosen, rejected,
                                           torch.ones_like(per_pair))

    def metrics(self, sums, prefix):
        return metrics_from_sums(sums, prefix)

    @torch.no_grad()
    def evaluate(self, model) -> dict:
        sums = torch.zeros(len(METRIC_SUMS))
        for batch, weight in self.eval_batches(self.collate):
            chosen, rejected, margin = self.forward(model, batch)
            per_pair = self.loss_fn(chosen, rejected, margin)
            sums += metric_sums(per_pair, chosen, rejected,
                                torch.full_like(chosen, weight)).cpu()
        return metrics_from_sums(self.reduce(sums), "eval")


def _check(view):
    if view.refers_to("reward_task", "data_fn", "build_preference_data"):
        return max_length_problems(view, "build_preference_data")
    return []


@configurable(check=_check, resume_sensitive=("data_fn",))
def reward_task(data_fn: Callable, loss_fn: Callable) -> RewardTask:
    """Reward modeling on preference pairs (Bradley-Terry by default): a scalar head.

    Args:
      data_fn: (tokenizer) -> PreferenceData (e.g. @build_preference_data).
      loss_fn: (chosen rewards, rejected rewards, margins) -> per-pair loss
        (e.g. @build_bradley_terry_loss()).
    """
    return RewardTask(data_fn, loss_fn)


EVAL_METRICS["reward_task"] = RewardTask.eval_metric_names
