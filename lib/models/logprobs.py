"""Per-token log-probabilities of a causal LM's own inputs, for SFT and preference losses.

`targets[b, t]` is the token at position t + 1 that position t predicts, or IGNORE where no loss
is taken (the prompt, padding, the last position). Log-softmax runs in float32 whatever the
compute dtype, so bf16 training still sums log-probabilities in float32.
"""

import torch
import torch.nn.functional as F

IGNORE = -100


def shifted_targets(tokens: torch.Tensor, learn: torch.Tensor) -> torch.Tensor:
    """targets[b, t] = tokens[b, t + 1] where learn[b, t + 1], else IGNORE; shape of tokens."""
    targets = torch.full_like(tokens, IGNORE)
    targets[:, :-1] = torch.where(learn[:, 1:], tokens[:, 1:], IGNORE)
    return targets


def response_mask(attention_mask: torch.Tensor, prompt_lengths: torch.Tensor) -> torch.Tensor:
    """True at the real tokens after each row's prompt: the response tokens (EOS included)."""
    positions = torch.arange(attention_mask.shape[1], device=attention_mask.device)
    return attention_mask & (positions[None, :] >= prompt_lengths[:, None])


def token_logps(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """log p(target) at each position, float32, 0 where targets is IGNORE; shape [b, s]."""
    vocab = logits.shape[-1]
    nll = F.cross_entropy(logits.float().reshape(-1, vocab), targets.reshape(-1),
                          ignore_index=IGNORE, reduction="none")
    return -nll.reshape(targets.shape)
