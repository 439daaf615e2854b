"""Sampling completions for training (GRPO rollouts): the one seam a serving engine would replace.

`Sampler` has two calls: `sync(model)` before a rollout (the policy's current weights reach the
generator) and `generate(prompts, settings, generator)`. This implementation generates in the
training process with torchtune's `generate` (a KV cache that exists only during the call),
batched, prompts left-padded. Unsharded, it generates with the training model itself; sharded
with FSDP2 (more than one rank, or bf16), every rank gathers the full weights into its own
unsharded copy in `sync` (a collective) and then generates for its own prompts with no
collective, so ranks may stop at different lengths. A vLLM engine for GPU rollouts would
implement the same two calls (weights pushed in `sync`); it is not built here.
"""

import dataclasses
import functools
import time
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


def _next_token(model, input_pos, x, mask=None, *, temperature, top_k, q, top_p, greedy):
    """torchtune's generate_next_token with nucleus sampling; argmax when greedy."""
    logits = model(x, input_pos=input_pos, mask=mask)[:, -1]
    if greedy:
        return logits.argmax(-1, keepdim=True).int(), logits.unsqueeze(1)
    probs = torch.softmax(filter_logits(logits.float(), temperature, top_k, top_p), dim=-1)
    # The exponential-race draw torchtune uses: argmax(p / q), q ~ Exp(1) from the rng.
    return (probs / q).argmax(-1, keepdim=True).int(), logits.unsqueeze(1)


class Sampler:
    """Generates completions with the policy's current weights (see the module doc)."""

    def __init__(self, copy: Optional[torch.nn.Module]):
        """`copy`: an unsharded model of the policy's architecture to generate with, for a
        sharded policy; None generates with the policy itself."""
        self.copy = copy
        self.model = None
        self.sync_s = 0.0

    def sync(self, model) -> None:
        """Makes the generator use `model`'s current weights; with a copy, a collective on
        every rank."""
        if self.copy is None:
            self.model = model
            return
        from torch.distributed.checkpoint.state_dict import (StateDictOptions,
                                                             get_model_state_dict)

        t0 = time.perf_counter()
        full = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True))
        self.copy.load_state_dict(full)
        self.model = self.copy
        self.sync_s = time.perf_counter() - t0

    @torch.no_grad()
    def generate(self, prompts: Sequence[List[int]], settings: Sampling, pad_id: int,
                 generator: Optional[torch.Generator] = None) -> List[List[int]]:
        """One completion per prompt (token ids, the stop token kept when one ended it)."""
        from torchtune.generation import generate
        from torchtune.modules.common_utils import local_kv_cache

        model = self.model
        device = next(model.parameters()).device
        dtype = next(model.parameters()).dtype
        longest = max(len(p) for p in prompts)
        batch = torch.full((len(prompts), longest), pad_id, dtype=torch.long, device=device)
        for i, p in enumerate(prompts):  # left padding: every prompt ends where generation starts
            batch[i, longest - len(p):] = torch.tensor(p, device=device)
        was_training = model.training
        model.eval()
        step = functools.partial(_next_token, top_p=settings.top_p, greedy=settings.greedy)
        try:
            with local_kv_cache(model, batch_size=len(prompts), device=device, dtype=dtype,
                                decoder_max_seq_len=longest + settings.max_new_tokens):
                tokens, _ = generate(model, batch, max_generated_tokens=settings.max_new_tokens,
                                     pad_id=pad_id, temperature=settings.temperature,
                                     top_k=settings.top_k or None,
                                     stop_tokens=list(settings.stop_tokens), rng=generator,
                                     custom_generate_next_token=step)
        finally:
            model.train(was_training)
        out = []
        stops = set(settings.stop_tokens)
        for row in tokens[:, longest:].tolist():
            end = next((i for i, t in enumerate(row) if t in stops), None)
            out.append(row if end is None else row[:end + 1])
        return out
