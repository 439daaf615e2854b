"""Qwen2 / Qwen2.5 decoders (LM or reward head) built with torchtune's Qwen2 builder."""

from lib.config.registry import configurable
from lib.models.heads import attach_head
from lib.models.reward import architecture_check


@configurable(caller_args=("head",), check=architecture_check("qwen2_model"),
              resume_sensitive=("*",))
def qwen2_model(
    head: str,
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
    tie_word_embeddings: bool = False,
):
    """A Qwen2 decoder (q/k/v biases), randomly initialized, with the head its task trains.

    Args:
      head: passed by the Trainer from its task: "lm" (vocabulary projection) or "reward".
      vocab_size: rows of the embedding; must cover every id the tokenizer emits.
      num_layers, num_heads, num_kv_heads, embed_dim, intermediate_dim: the architecture.
      max_seq_len: the longest sequence the rotary cache covers (>= the data's max_length).
      rope_base: the RoPE base period.
      norm_eps: RMSNorm epsilon.
      attn_dropout: attention dropout; 0 by default.
      tie_word_embeddings: share the LM head with the embedding (Qwen2.5 0.5B to 3B do); a
        reward head is never tied.
    """
    from torchtune.models.qwen2 import qwen2

    arch = dict(vocab_size=vocab_size, num_layers=num_layers, num_heads=num_heads,
                num_kv_heads=num_kv_heads, embed_dim=embed_dim, intermediate_dim=intermediate_dim,
                max_seq_len=max_seq_len, attn_dropout=attn_dropout, norm_eps=norm_eps,
                rope_base=rope_base)
    decoder = qwen2(**arch, tie_word_embeddings=tie_word_embeddings and head == "lm")
    decoder.hf_architecture = ("qwen2", {**arch, "tie_word_embeddings": tie_word_embeddings})
    return attach_head(decoder, head, embed_dim)
