"""Generating completions: the one seam that eval samples (and later rollouts) go through.

Built on torchtune's `generate` with a KV cache that exists only during the call
(`local_kv_cache`), so the training model is left as it was. Every rank calls it with the same
prompts (a sharded model needs every rank in each forward) and gets the same tokens. A serving
engine for GPU rollouts would replace `complete` and nothing else.
"""

from typing import List, Sequence

import torch


@torch.no_grad()
def complete(model, prompts: Sequence[List[int]], max_new_tokens: int, stop_tokens: List[int],
             max_seq_len: int) -> List[List[int]]:
    """Greedy completions of each prompt (one at a time: no padding), cut after a stop token.

    Args:
      model: a torchtune decoder with an LM head (sharded or not).
      prompts: token ids, BOS included.
      max_new_tokens: at most this many tokens per completion.
      stop_tokens: ids that end a completion (kept in the output).
      max_seq_len: the model's longest sequence (its rotary cache); completions stop there.
    """
    from torchtune.generation import generate
    from torchtune.modules.common_utils import local_kv_cache

    device = next(model.parameters()).device
    dtype = next(model.parameters()).dtype
    rng = torch.Generator(device=device).manual_seed(0)  # greedy: drawn from, never decisive
    out = []
    for prompt in prompts:
        new = min(max_new_tokens, max_seq_len - len(prompt))
        if new < 1:
            out.append([])
            continue
        with local_kv_cache(model, batch_size=1, device=device, dtype=dtype,
                            decoder_max_seq_len=len(prompt) + new):
            tokens, _ = generate(model, torch.tensor([prompt], device=device),
                                 max_generated_tokens=new, top_k=1, stop_tokens=stop_tokens,
                                 rng=rng)
        completion = tokens[0, len(prompt):].tolist()
        stop = next((i for i, t in enumerate(completion) if t in stop_tokens), None)
        out.append(completion if stop is None else completion[:stop + 1])
    return out
