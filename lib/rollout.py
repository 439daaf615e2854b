"""Sampling completions for training (GRPO rollouts): the one seam a serving engine would replace.

`Sampler` has two calls: `sync(model)` before a rollout (the policy's current weights reach the
generator) and `generate(prompts, settings, generator)`. This implementation generates in the
training process, batched, prompts left-padded, with a KV cache that exists only during the
call (torchtune's `local_kv_cache` and its padding masks). Unsharded, it generates with the
training model itself. Sharded with FSDP2 (more than one rank, or bf16), every rank gathers the
full weights into its own unsharded copy in `sync` (a collective, one tensor at a time; the copy
holds them in the precision the policy computes in) and then generates for its own prompts with
no collective, so ranks may stop at different lengths. A vLLM engine for GPU
rollouts would implement the same two calls (weights pushed in `sync`); it is not built here.
"""

import dataclasses
from typing import List, Optional, Sequence

import torch


@dataclasses.dataclass(frozen=True)
class Sampling:
    """How completions are drawn (see grpo_task for each field's meaning and default)."""
    max_new_tokens: int
    stop_tokens: Sequence[int]
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0  # 0: no top-k cut
    greedy: bool = False


def filter_logits(logits: torch.Tensor, temperature: float, top_k: int,
                  top_p: float) -> torch.Tensor:
    """Logits [b, v] scaled by 1/temperature, with the tokens outside the top-k and outside
    the smallest set whose probability reaches top_p (nucleus; Holtzman et al., 2020) set to
    -inf. The most likely token always stays."""
    logits = logits / temperature
    if top_k and top_k < logits.shape[-1]:
        pivot = torch.topk(logits, top_k).values[..., -1:]
        logits = logits.masked_fill(logits < pivot, float("-inf"))
    if top_p < 1.0:
        ordered, order = torch.sort(logits, descending=True)
        probs = torch.softmax(ordered, dim=-1)
        # Drop a token when the tokens before it already reach top_p.
        drop = probs.cumsum(-1) - probs >= top_p
        drop[..., 0] = False
        logits = logits.masked_fill(drop.scatter(-1, order, drop), float("-inf"))
    return logits


def _pick(logits: torch.Tensor, settings: "Sampling", generator) -> torch.Tensor:
    """[b] next tokens: argmax when greedy, else a draw from the filtered distribution by the
    exponential race torchtune uses (argmax of p / q, q ~ Exp(1) from `generator`)."""
    if settings.greedy:
        return logits.argmax(-1)
    probs = torch.softmax(filter_logits(logits.float(), settings.temperature, settings.top_k,
                                        settings.top_p), dim=-1)
    q = torch.empty_like(probs).exponential_(1, generator=generator)
    return (probs / q).argmax(-1)


class Sampler:
    """Generates completions with the policy's current weights (see the module doc)."""

    def __init__(self, copy: Optional[torch.nn.Module], device: torch.device):
        """`copy`: an unsharded model of the policy's architecture to generate with, for a
        sharded policy; None generates with the policy itself. `device`: this rank's device,
        where generation runs (a sharded policy's parameters may sit on the CPU, offloaded)."""
        self.copy, self.device = copy, device
        self.model = None

    def sync(self, model) -> None:
        """Makes the generator use `model`'s current weights; with a copy, a collective on
        every rank."""
        if self.copy is None:
            self.model = model
            return
        from torch.distributed.tensor import DTensor

        # One tensor gathered at a time, straight into the copy: never a second full copy.
        mine, theirs = self.copy.state_dict(), model.state_dict()
        if mine.keys() != theirs.keys():
            differ = sorted(mine.keys() ^ theirs.keys())[:5]
            raise RuntimeError(f"the generation copy's weights differ from the policy's: {differ}")
        with torch.no_grad():
            for name, value in theirs.items():
                if isinstance(value, DTensor):
                    # Gathered on the device: offloaded shards sit on the CPU, where the
                    # gather would go through gloo.
                    value = DTensor.from_local(
                        value.to_local().to(self.device, non_blocking=True), value.device_mesh,
                        value.placements, shape=value.shape, stride=value.stride()).full_tensor()
                mine[name].copy_(value)
        self.model = self.copy

    @torch.no_grad()
    def generate(self, prompts: Sequence[List[int]], settings: Sampling, pad_id: int,
                 generator: Optional[torch.Generator] = None) -> List[List[int]]:
        """One completion per prompt (token ids, the stop token kept when one ended it)."""
        from torchtune.generation import (get_causal_mask_from_padding_mask,
                                          get_position_ids_from_padding_mask)
        from torchtune.modules.common_utils import local_kv_cache

        if not settings.greedy and generator is None:
            raise ValueError("sampling needs a generator (greedy=True does not)")
        model, device = self.model, self.device
        # The KV cache holds what attention computes in: a sharded policy's parameters are its
        # fp32 master weights, while under bf16 mixed precision its keys and values are bf16.
        dtype = getattr(model, "compute_dtype", None) or next(model.parameters()).dtype
        longest, new = max(len(p) for p in prompts), settings.max_new_tokens
        batch = torch.full((len(prompts), longest), pad_id, dtype=torch.long)
        real = torch.zeros((len(prompts), longest + new), dtype=torch.bool)
        for i, p in enumerate(prompts):  # left padding: every prompt ends where generation starts
            batch[i, longest - len(p):] = torch.tensor(p)
            real[i, longest - len(p):] = True
        batch, real = batch.to(device), real.to(device)  # one copy each, not one per prompt
        # Padding is hidden from every query and positions count real tokens only, so a row's
        # completion does not depend on its neighbours' lengths.
        masks = get_causal_mask_from_padding_mask(real, target_seq_len=longest + new)
        positions = get_position_ids_from_padding_mask(real)
        stops = torch.tensor(list(settings.stop_tokens), device=device)
        done = torch.zeros(len(prompts), dtype=torch.bool, device=device)
        steps = []
        was_training = model.training
        model.eval()
        try:
            with local_kv_cache(model, batch_size=len(prompts), device=device, dtype=dtype,
                                decoder_max_seq_len=longest + new):
                logits = model(batch, input_pos=positions[:, :longest],
                               mask=masks[:, :longest])[:, -1]
                for t in range(new):
                    token = torch.where(done, pad_id, _pick(logits, settings, generator))
                    steps.append(token)
                    done |= torch.isin(token, stops)
                    if bool(done.all()) or t == new - 1:
                        break
                    at = longest + t
                    logits = model(token[:, None], input_pos=positions[:, at:at + 1],
                                   mask=masks[:, at:at + 1])[:, -1]
        finally:
            model.train(was_training)
        tokens = torch.stack(steps, dim=1)
        out = []
        stops = set(settings.stop_tokens)
        for row in tokens.tolist():
            end = next((i for i, t in enumerate(row) if t in stops), None)
            out.append(row if end is None else row[:end + 1])
        return out
