"""Qwen2 / Qwen2.5 weights between Hugging Face and torchtune layouts (torchtune's key map)."""


def architecture_from_hf(config: dict) -> dict:
    """Keyword arguments of qwen2_model for an HF config.json."""
    from lib.models.llama.convert import rope_settings

    theta, scaling = rope_settings(config, 1_000_000.0)
    if scaling:
        raise ValueError(f"unsupported rope scaling {scaling} for Qwen2")
    return dict(
        vocab_size=config["vocab_size"], num_layers=config["num_hidden_layers"],
        num_heads=config["num_attention_heads"],
        num_kv_heads=config.get("num_key_value_heads", config["num_attention_heads"]),
        embed_dim=config["hidden_size"], intermediate_dim=config["intermediate_size"],
        max_seq_len=config["max_position_embeddings"],
        rope_base=theta,
        norm_eps=config.get("rms_norm_eps", 1e-6),
        tie_word_embeddings=bool(config.get("tie_word_embeddings", False)))


def hf_config(arch: dict, head: str) -> dict:
    """The config.json of a Qwen2ForSequenceClassification (head "reward") or
    Qwen2ForCausalLM (head "lm") with this architecture (the inverse of
    architecture_from_hf); the caller adds the token ids."""
    tied = head == "lm" and arch.get("tie_word_embeddings", False)
    head_fields = ({"architectures": ["Qwen2ForSequenceClassification"], "num_labels": 1}
                   if head == "reward" else {"architectures": ["Qwen2ForCausalLM"]})
    return {
        **head_fields, "model_type": "qwen2",
        "vocab_size": arch["vocab_size"], "num_hidden_layers": arch["num_layers"],
        "num_attention_heads": arch["num_heads"], "num_key_value_heads": arch["num_kv_heads"],
        "hidden_size": arch["embed_dim"], "intermediate_size": arch["intermediate_dim"],
        "max_position_embeddings": arch["max_seq_len"], "rope_theta": arch["rope_base"],
        "rms_norm_eps": arch["norm_eps"], "hidden_act": "silu", "use_sliding_window": False,
        "tie_word_embeddings": tied,
    }


def hf_to_tune(state_dict: dict, config: dict) -> dict:
    from torchtune.models.qwen2._convert_weights import qwen2_hf_to_tune

    return qwen2_hf_to_tune(
        state_dict, num_heads=config["num_attention_heads"],
        num_kv_heads=config.get("num_key_value_heads", config["num_attention_heads"]),
        dim=config["hidden_size"], head_dim=config.get("head_dim"))


def tune_to_hf(state_dict: dict, config: dict) -> dict:
    """The inverse of hf_to_tune. A reward head (`output.weight` of one row) becomes
    `score.weight`; an LM head becomes `lm_head.weight`, absent when tied to the embedding."""
    from torchtune.models.qwen2._convert_weights import qwen2_tune_to_hf

    state = dict(state_dict)
    head = state.pop("output.weight", None)
    out = qwen2_tune_to_hf(
        state, num_heads=config["num_attention_heads"],
        num_kv_heads=config.get("num_key_value_heads", config["num_attention_heads"]),
        dim=config["hidden_size"], head_dim=config.get("head_dim"))
    if head is not None:
        out["score.weight" if config.get("num_labels") == 1 else "lm_head.weight"] = head
    return out
