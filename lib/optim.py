"""The optimizer: AdamW with decoupled weight decay on matrices only."""

import gin
import torch


@gin.configurable
def build_adamw(model: torch.nn.Module, lr: float, weight_decay: float = 0.0,
                betas=(0.9, 0.999), eps: float = 1e-8) -> torch.optim.Optimizer:
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
