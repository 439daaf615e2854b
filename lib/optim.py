"""The optimizer: AdamW with decoupled weight decay on matrices only."""

from typing import Tuple

import torch

from lib.config.errors import ConfigError
from lib.config.registry import configurable


def adamw_problems(lr, weight_decay, betas, eps):
    """[(parameter, message)] for values AdamW cannot use."""
    problems = []
    if not lr > 0:
        problems.append(("lr", f"lr={lr} must be > 0"))
    if not weight_decay >= 0:
        problems.append(("weight_decay", f"weight_decay={weight_decay} must be >= 0"))
    if not all(0.0 <= b < 1.0 for b in betas):
        problems.append(("betas", f"betas={tuple(betas)} must each be in [0, 1)"))
    if not eps > 0:
        problems.append(("eps", f"eps={eps} must be > 0"))
    return problems


@configurable(caller_args=("model",), check=lambda view: adamw_problems(
    *(view.get("build_adamw", a) for a in ("lr", "weight_decay", "betas", "eps"))))
def build_adamw(model: torch.nn.Module, lr: float, weight_decay: float = 0.0,
                betas: Tuple[float, float] = (0.9, 0.999),
                eps: float = 1e-8) -> torch.optim.Optimizer:
    """AdamW (Loshchilov & Hutter, 2019) over every trainable parameter, in two groups.

    Weight decay applies to parameters with 2 or more dimensions (linear and embedding
    matrices); norm scales and biases (1-D) are not decayed. Decay is decoupled: each step
    multiplies a weight by (1 - lr_t * weight_decay), lr_t being the scheduled rate.

    Args:
      model: passed by the Trainer.
      lr: the peak learning rate; the schedule multiplies it. Bound to the `lr` macro.
      weight_decay: the decoupled decay coefficient for matrices.
      betas: Adam's (beta1, beta2).
      eps: Adam's epsilon.
    """
    problems = adamw_problems(lr, weight_decay, betas, eps)
    if problems:
        raise ConfigError("; ".join(f"build_adamw.{m}" for _, m in problems))
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (decay if p.ndim >= 2 else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": weight_decay, "name": "decay"},
              {"params": no_decay, "weight_decay": 0.0, "name": "no_decay"}]
    trainable = sum(1 for p in model.parameters() if p.requires_grad)
    grouped = {id(p) for g in groups for p in g["params"]}
    if len(grouped) != trainable or len(decay) + len(no_decay) != trainable:
        raise AssertionError("every trainable parameter must be in exactly one group")
    return torch.optim.AdamW(groups, lr=lr, betas=tuple(betas), eps=eps)
