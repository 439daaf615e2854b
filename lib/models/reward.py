"""A scalar reward head on a torchtune decoder, and reading the reward at the right token.

The head replaces the decoder's vocabulary projection (`decoder.output`) with a Linear(d, 1),
the layout torchtune's reward conversion maps to and from HF's `score.weight`.
"""

import math

import torch
from torch import nn


def architecture_problems(num_heads, num_kv_heads, embed_dim, attn_dropout, max_seq_len):
    """[(parameter, message)] for a decoder shape torchtune cannot build."""
    problems = []
    if embed_dim % num_heads:
        problems.append(("num_heads", f"num_heads={num_heads} must divide "
                         f"embed_dim={embed_dim}"))
    if num_heads % num_kv_heads:
        problems.append(("num_kv_heads", f"num_kv_heads={num_kv_heads} must divide "
                         f"num_heads={num_heads} (grouped-query attention)"))
    if not 0.0 <= attn_dropout < 1.0:
        problems.append(("attn_dropout", f"attn_dropout={attn_dropout} must be in [0, 1)"))
    if max_seq_len < 1:
        problems.append(("max_seq_len", f"max_seq_len={max_seq_len} must be >= 1"))
    return problems


def architecture_check(name):
    """A config check for a from-scratch builder named `name`."""
    def check(view):
        return architecture_problems(*(view.get(name, a) for a in (
            "num_heads", "num_kv_heads", "embed_dim", "attn_dropout", "max_seq_len")))
    return check


def init_reward_head(head: nn.Linear) -> None:
    """N(0, 1/(d+1)), d the head's input size."""
    nn.init.normal_(head.weight, std=1.0 / math.sqrt(head.in_features + 1))


def attach_reward_head(decoder: nn.Module, embed_dim: int) -> nn.Module:
    """Replaces the LM head with a bias-free scalar head, N(0, 1/(d+1)) initialized (also when
    made fresh on a loaded base: lib/models/fresh.py)."""
    head = nn.Linear(embed_dim, 1, bias=False)
    init_reward_head(head)
    head.fresh_init = init_reward_head
    decoder.output = head
    return decoder


def compute_rewards(model: nn.Module, tokens: torch.Tensor, attention_mask: torch.Tensor,
                    right_padded: bool) -> torch.Tensor:
    """Returns one reward per row, read at the last token whose attention mask is 1.

    Right-padded rows need only the causal mask (padding comes after every real token). Other
    layouts (left padding) get an explicit mask hiding pad keys and positions that count real
    tokens only, so a row's reward depends on neither its padding side nor its neighbours.
    Reading where the pad token id first appears instead can land on the wrong token, which
    silently caps accuracy near 60% (seen in other libraries).
    """
    mask = input_pos = None
    if not right_padded:
        seq = tokens.shape[1]
        causal = torch.ones(seq, seq, dtype=torch.bool, device=tokens.device).tril()
        eye = torch.eye(seq, dtype=torch.bool, device=tokens.device)
        # Pad rows attend to themselves only, which keeps softmax finite; nothing reads them.
        mask = (causal & attention_mask[:, None, :]) | eye
        input_pos = (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
    out = model(tokens, mask=mask, input_pos=input_pos)  # [b, s, 1]
    positions = torch.arange(tokens.shape[1], device=tokens.device)
    last = (positions * attention_mask).argmax(-1)
    return out[torch.arange(tokens.shape[0], device=tokens.device), last, 0]
