"""Pairwise reward-model losses and the metrics that go with them."""

import functools

import torch
import torch.nn.functional as F

from lib.config.errors import ConfigError
from lib.config.registry import configurable


def bradley_terry_loss(chosen: torch.Tensor, rejected: torch.Tensor, margin: torch.Tensor,
                       center_rewards_coefficient: float = 0.0) -> torch.Tensor:
    """Per-pair loss, shape [n].

    -log sigmoid(r_c - r_r - margin) is the negative log-likelihood of the Bradley-Terry model
    (Bradley & Terry, 1952; Ouyang et al., 2022, eq. 1); the margin term is Llama 2's (Touvron et
    al., 2023, eq. 2). The optional centering term c * (r_c + r_r)^2 keeps rewards near zero
    (Eisenstein et al., 2023), since the pairwise loss is blind to a shared offset.
    """
    loss = -F.logsigmoid(chosen - rejected - margin)
    if center_rewards_coefficient:
        loss = loss + center_rewards_coefficient * (chosen + rejected) ** 2
    return loss


def _coefficient_problems(center_rewards_coefficient):
    if not center_rewards_coefficient >= 0:
        return [("center_rewards_coefficient", f"center_rewards_coefficient="
                 f"{center_rewards_coefficient} must be >= 0 (0 turns centering off)")]
    return []


@configurable(check=lambda view: _coefficient_problems(
    view.get("build_bradley_terry_loss", "center_rewards_coefficient")))
def build_bradley_terry_loss(center_rewards_coefficient: float = 0.0):
    """The Bradley-Terry pairwise loss, as a callable (chosen, rejected, margin) -> [n].

    Args:
      center_rewards_coefficient: weight of mean((r_c + r_r)^2), >= 0; 0 turns it off. TRL
        suggests 0.01 when rewards are later compared across prompts.
    """
    for _, message in _coefficient_problems(center_rewards_coefficient):
        raise ConfigError(f"build_bradley_terry_loss.{message}")
    return functools.partial(bradley_terry_loss,
                             center_rewards_coefficient=center_rewards_coefficient)


METRIC_SUMS = ("loss", "correct", "ties", "margin", "chosen", "rejected", "reward_sq", "pairs")


def metric_sums(loss: torch.Tensor, chosen: torch.Tensor, rejected: torch.Tensor,
                weight: torch.Tensor) -> torch.Tensor:
    """Sums over pairs, in METRIC_SUMS order, to be added across micro-batches and ranks.

    Sums rather than means, so the result is exact however the pairs are split. `weight` is 1
    for real pairs and 0 for the placeholders a rank runs when it has run out of eval pairs.
    """
    diff = (chosen - rejected).detach()
    c, r = chosen.detach(), rejected.detach()
    return torch.stack([
        (loss.detach() * weight).sum(), ((diff > 0).float() * weight).sum(),
        ((diff == 0).float() * weight).sum(), (diff * weight).sum(), (c * weight).sum(),
        (r * weight).sum(), ((c ** 2 + r ** 2) * weight).sum(), weight.sum()])


def metrics_from_sums(sums: torch.Tensor, prefix: str) -> dict:
    """loss, accuracy (strictly chosen > rejected), tie rate, margin, reward means and std."""
    s = dict(zip(METRIC_SUMS, sums.tolist()))
    n = max(s["pairs"], 1.0)
    mean = (s["chosen"] + s["rejected"]) / (2 * n)
    var = max(s["reward_sq"] / (2 * n) - mean ** 2, 0.0)
    return {f"{prefix}/loss": s["loss"] / n, f"{prefix}/accuracy": s["correct"] / n,
            f"{prefix}/tie_rate": s["ties"] / n, f"{prefix}/margin": s["margin"] / n,
            f"{prefix}/reward_chosen": s["chosen"] / n,
            f"{prefix}/reward_rejected": s["rejected"] / n,
            f"{prefix}/reward_std": var ** 0.5, f"{prefix}/pairs": int(s["pairs"])}
