"""Greedy completions for eval samples, through the same generator as GRPO's rollouts.

`complete` runs lib/rollout.py's batched generator greedily on the model as it is (sharded or
not: every rank calls it with the same prompts, since a sharded model needs every rank in each
forward, and gets the same tokens), one prompt at a time so that each stops at the model's
longest sequence.
"""

from typing import List, Sequence

import torch


@torch.no_grad()
def complete(model, prompts: Sequence[List[int]], max_new_tokens: int, stop_tokens: List[int],
             max_seq_len: int, device: torch.device) -> List[List[int]]:
    """Greedy completions of each prompt, cut after a stop token.

    Args:
      model: a torchtune decoder with an LM head (sharded or not).
      prompts: token ids, BOS included.
      max_new_tokens: at most this many tokens per completion.
      stop_tokens: ids that end a completion (kept in the output).
      max_seq_len: the model's longest sequence (its rotary cache); completions stop there.
      device: this rank's device.
    """
    from lib.rollout import Sampler, Sampling

    sampler = Sampler(None, device)
    sampler.sync(model)
    out = []
    for prompt in prompts:
        new = min(max_new_tokens, max_seq_len - len(prompt))
        if new < 1:
            out.append([])
            continue
        settings = Sampling(max_new_tokens=new, stop_tokens=tuple(stop_tokens), greedy=True)
        # One prompt is a batch with no padding, so the pad id is never written.
        out.extend(sampler.generate([prompt], settings, pad_id=0))
    return out
