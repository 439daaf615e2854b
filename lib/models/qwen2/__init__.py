"""Qwen2 / Qwen2.5 reward models built with torchtune's Qwen2 component builder."""

from lib.config.registry import configurable
from lib.models.reward import architecture_check, attach_reward_head


@configurable(check=architecture_check("qwen2_reward_model"), resume_sensitive=("*",))
def qwen2_reward_model(
    vocab_size: int,
    num_layers: int,
    num_heads: int,
    num_kv_heads: int,
    embed_dim: int,
    intermediate_dim: int,
    max_seq_len: int,
    rope_base: float = 1_000_000.0,
    norm_eps: float = 1e-6,
    attn_dropout: float = 0.0,
):
    """A Qwen2 decoder (q/k/v biases) with a scalar reward head, randomly initialized.

    Args:
      vocab_size: rows of the embedding; must cover every id the tokenizer emits.
      num_layers, num_heads, num_kv_heads, embed_dim, intermediate_dim: the architecture.
      max_seq_len: the longest sequence the rotary cache covers (>= the data's max_length).
      rope_base: the RoPE base period.
      norm_eps: RMSNorm epsilon.
      attn_dropout: attention dropout; 0 by default.
    """
    from torchtune.models.qwen2 import qwen2

    arch = dict(vocab_size=vocab_size, num_layers=num_layers, num_heads=num_heads,
                num_kv_heads=num_kv_heads, embed_dim=embed_dim, intermediate_dim=intermediate_dim,
                max_seq_len=max_seq_len, attn_dropout=attn_dropout, norm_eps=norm_eps,
                rope_base=rope_base)
    decoder = qwen2(**arch)
    decoder.hf_architecture = ("qwen2", arch)
    return attach_reward_head(decoder, embed_dim)
