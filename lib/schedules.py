"""Learning-rate schedules: linear warmup, then cosine, linear or constant."""

import math

import torch

from lib.config.errors import ConfigError
from lib.config.registry import configurable

DECAYS = ("cosine", "linear", "constant")


def schedule_problems(num_steps: int, warmup_steps: int, decay: str, min_lr_ratio: float):
    """[(parameter, message)] for an impossible schedule; empty when it is fine."""
    problems = []
    if decay not in DECAYS:
        problems.append(("decay", f"decay={decay!r}; valid: {', '.join(DECAYS)}"))
    if not 0 <= warmup_steps < num_steps:
        problems.append(("warmup_steps", f"warmup_steps={warmup_steps} must be in "
                         f"[0, num_steps={num_steps}): the warmup must end before training does"))
    if not 0.0 <= min_lr_ratio <= 1.0:
        problems.append(("min_lr_ratio", f"min_lr_ratio={min_lr_ratio} must be in [0, 1]"))
    return problems


def _check(view):
    num_steps = view.get("Trainer", "num_steps") if view.built("Trainer") else 1
    return schedule_problems(num_steps, *(view.get("build_lr_schedule", a) for a in (
        "warmup_steps", "decay", "min_lr_ratio")))


@configurable(caller_args=("optimizer", "num_steps"), check=_check)
def build_lr_schedule(optimizer: torch.optim.Optimizer, num_steps: int, warmup_steps: int = 0,
                      decay: str = "cosine", min_lr_ratio: float = 0.0):
    """A multiplier on the optimizer's lr, applied after each optimizer step.

    Step t (0-based) uses lr * m(t): m rises linearly from 1/(warmup_steps+1) to 1 over the
    warmup, then falls to min_lr_ratio at num_steps along a half cosine or a line, or stays 1.

    Args:
      optimizer: passed by the Trainer.
      num_steps: passed by the Trainer (its num_steps).
      warmup_steps: steps of linear warmup; must be shorter than training.
      decay: "cosine", "linear" or "constant" after the warmup.
      min_lr_ratio: the final multiplier, in [0, 1].
    """
    problems = schedule_problems(num_steps, warmup_steps, decay, min_lr_ratio)
    if problems:
        raise ConfigError("; ".join(f"build_lr_schedule.{m}" for _, m in problems))

    def multiplier(step: int) -> float:
        if step < warmup_steps:
            return (step + 1) / (warmup_steps + 1)
        progress = min((step - warmup_steps) / max(num_steps - warmup_steps, 1), 1.0)
        if decay == "cosine":
            return min_lr_ratio + (1 - min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
        if decay == "linear":
            return min_lr_ratio + (1 - min_lr_ratio) * (1 - progress)
        return 1.0

    return torch.optim.lr_scheduler.LambdaLR(optimizer, multiplier)
