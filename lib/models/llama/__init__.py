"""Llama 3.x reward models built with torchtune's Llama 3 / 3.2 component builders."""

from typing import Optional

from lib.config.registry import configurable
from lib.models.reward import architecture_check, attach_reward_head


@configurable(check=architecture_check("llama3_reward_model"), resume_sensitive=("*",))
def llama3_reward_model(
    vocab_size: int,
    num_layers: int,
    num_heads: int,
    num_kv_heads: int,
    embed_dim: int,
    intermediate_dim: int,
    max_seq_len: int,
    rope_base: float = 500_000.0,
    rope_scale_factor: Optional[int] = None,
    norm_eps: float = 1e-5,
    attn_dropout: float = 0.0,
):
    """A Llama 3 decoder with a scalar reward head, randomly initialized.

    Args:
      vocab_size: rows of the embedding; must cover every id the tokenizer emits.
      num_layers, num_heads, num_kv_heads, embed_dim, intermediate_dim: the architecture;
        num_heads must divide embed_dim and num_kv_heads must divide num_heads (GQA).
      max_seq_len: the longest sequence the rotary cache covers (>= the data's max_length).
      rope_base: the RoPE base period.
      rope_scale_factor: Llama 3.1/3.2 RoPE frequency scaling (32 for Llama 3.2); None for none.
      norm_eps: RMSNorm epsilon.
      attn_dropout: attention dropout; 0 by default, as reward models are usually trained.
    """
    from torchtune.models.llama3 import llama3
    from torchtune.models.llama3_2 import llama3_2

    common = dict(vocab_size=vocab_size, num_layers=num_layers, num_heads=num_heads,
                  num_kv_heads=num_kv_heads, embed_dim=embed_dim, max_seq_len=max_seq_len,
                  attn_dropout=attn_dropout, rope_base=rope_base,
                  intermediate_dim=intermediate_dim, norm_eps=norm_eps)
    if rope_scale_factor is None:
        decoder = llama3(**common)
    else:
        decoder = llama3_2(**common, scale_factor=rope_scale_factor, tie_word_embeddings=False)
    decoder.hf_architecture = ("llama", {**common, "rope_scale_factor": rope_scale_factor})
    return attach_reward_head(decoder, embed_dim)
