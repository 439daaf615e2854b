"""What sits on top of a decoder: the vocabulary projection, or a scalar reward head.

A model builder is shared by every task; the task says which head it trains (`Task.model_head`)
and the Trainer passes it to the builder, so one model file (gin/models/*.gin) serves them all.
"""

from torch import nn

from lib.models.reward import attach_reward_head

HEADS = ("lm", "reward")


def attach_head(decoder: nn.Module, head: str, embed_dim: int) -> nn.Module:
    """"lm" keeps the decoder's vocabulary projection; "reward" replaces it (lib/models/reward)."""
    if head == "lm":
        return decoder
    if head == "reward":
        return attach_reward_head(decoder, embed_dim)
    raise ValueError(f"head={head!r}; valid: {', '.join(HEADS)}")
