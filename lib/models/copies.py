"""Copies of the model a task keeps beside it: a frozen reference, a generation copy.

Made after the model is sharded, from a template built on the meta device (no memory), so no
rank ever holds a full copy it does not need and every rank can stream its shards of the
initial weights (lib/models/streaming.py) whatever the task:

- `frozen()`: the initial model, frozen, sharded and wrapped as the model is (FSDP2, the same
  precision and options). Each rank copies its own shards from the model's, so the copy computes
  exactly what the initial model computes (in bf16 too) at the cost of one more shard per rank.
  Call it before any update.
- `unsharded(dtype)`: the model's architecture, unsharded on this rank's device, its parameters
  in `dtype` (the precision the model computes in: bf16 under bf16 mixed precision, buffers such
  as RoPE caches kept as built, as FSDP2 keeps them), values undefined: for a copy whose values
  are filled later (GRPO's generation copy, `Sampler.sync`).
"""

from typing import Callable

import torch
from torch import nn


def _allocate(model: nn.Module, device: torch.device) -> nn.Module:
    """An unsharded meta model allocated on `device` (values undefined, RoPE caches built)."""
    model.to_empty(device=device)
    with torch.device(device):
        for module in model.modules():
            if hasattr(module, "rope_init"):  # RoPE caches: buffers outside the state dict
                module.rope_init()
    return model


class ModelCopies:
    def __init__(self, model: nn.Module, template: Callable[[], nn.Module],
                 shard: Callable[[nn.Module], nn.Module], device: torch.device):
        """`model`: the sharded (or unwrapped) model; `template()`: a new model of its
        architecture (adapters included) on the meta device; `shard`: wraps a module as the
        model was wrapped."""
        self._model, self._template, self._shard, self._device = model, template, shard, device

    def frozen(self) -> nn.Module:
        copy = self._shard(self._template())
        if next(copy.parameters()).is_meta:  # left unwrapped (one process in float32)
            _allocate(copy, self._device)
        source = self._model.state_dict()
        with torch.no_grad():
            for name, tensor in copy.state_dict().items():
                # The same sharding on both sides: each rank copies its own shards.
                tensor.copy_(source[name])
        return copy.eval().requires_grad_(False)

    def unsharded(self, dtype: torch.dtype = torch.float32) -> nn.Module:
        copy = _allocate(self._template(), self._device)
        for param in copy.parameters():
            if param.dtype != dtype:
                param.data = torch.empty_like(param, dtype=dtype)
        return copy.requires_grad_(False)
