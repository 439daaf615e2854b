"""Llama 3.x decoders (LM or reward head) built with torchtune's Llama 3 / 3.2 builders."""

from typing import Optional

from lib.config.registry import configurable
from lib.models.heads import attach_head
from lib.models.reward import architecture_check


def _check(view):
    problems = architecture_check("llama3_model")(view)
    if view.get("llama3_model", "tie_word_embeddings") and view.get(
            "llama3_model", "rope_scale_factor") is None:
        problems.append(("tie_word_embeddings", "tie_word_embeddings=True needs the Llama 3.2 "
                         "layout: set rope_scale_factor (32 for Llama 3.2)"))
    return problems


@configurable(caller_args=("head",), check=_check, resume_sensitive=("*",))
def llama3_model(
    head: str,
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
    tie_word_embeddings: bool = False,
):
    """A Llama 3 decoder, randomly initialized, with the head its task trains.

    Args:
      head: passed by the Trainer from its task: "lm" (vocabulary projection) or "reward".
      vocab_size: rows of the embedding; must cover every id the tokenizer emits.
      num_layers, num_heads, num_kv_heads, embed_dim, intermediate_dim: the architecture;
        num_heads must divide embed_dim and num_kv_heads must divide num_heads (GQA).
      max_seq_len: the longest sequence the rotary cache covers (>= the data's max_length).
      rope_base: the RoPE base period.
      rope_scale_factor: Llama 3.1/3.2 RoPE frequency scaling (32 for Llama 3.2); None for none.
      norm_eps: RMSNorm epsilon.
      attn_dropout: attention dropout; 0 by default, as reward models are usually trained.
      tie_word_embeddings: share the LM head with the embedding (Llama 3.2 1B and 3B do);
        Llama 3.2 layout only (rope_scale_factor set). A reward head is never tied.
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
        decoder = llama3_2(**common, scale_factor=rope_scale_factor,
                           tie_word_embeddings=tie_word_embeddings and head == "lm")
    decoder.hf_architecture = ("llama", {**common, "rope_scale_factor": rope_scale_factor,
                                         "tie_word_embeddings": tie_word_embeddings})
    return attach_head(decoder, head, embed_dim)
