"""Llama 3.x weights between Hugging Face (`LlamaForCausalLM` / `...ForSequenceClassification`)
and torchtune layouts, through torchtune's own key map and rotary permutation."""


def rope_settings(config: dict, default_theta: float):
    """(rope theta, scaling dict or {}) from a config.json: transformers < 5 writes
    `rope_theta` and `rope_scaling`, transformers 5 one `rope_parameters` dict holding both."""
    params = config.get("rope_parameters") or {}
    scaling = config.get("rope_scaling") or (
        params if params.get("rope_type", "default") != "default" else {})
    theta = config.get("rope_theta", params.get("rope_theta", default_theta))
    return float(theta), scaling


def architecture_from_hf(config: dict) -> dict:
    """Keyword arguments of llama3_model for an HF config.json."""
    theta, scaling = rope_settings(config, 500_000.0)
    if scaling and scaling.get("rope_type", scaling.get("type")) != "llama3":
        raise ValueError(f"unsupported rope scaling {scaling}; only Llama 3 scaling is")
    fixed = {"low_freq_factor": 1.0, "high_freq_factor": 4.0,
             "original_max_position_embeddings": 8192}  # torchtune's Llama3ScaledRoPE
    if scaling and any(scaling.get(k, v) != v for k, v in fixed.items()):
        raise ValueError(f"rope scaling {scaling}: torchtune's Llama 3 RoPE fixes {fixed}")
    return dict(
        vocab_size=config["vocab_size"], num_layers=config["num_hidden_layers"],
        num_heads=config["num_attention_heads"],
        num_kv_heads=config.get("num_key_value_heads", config["num_attention_heads"]),
        embed_dim=config["hidden_size"], intermediate_dim=config["intermediate_size"],
        max_seq_len=config["max_position_embeddings"],
        rope_base=theta,
        rope_scale_factor=int(scaling["factor"]) if scaling else None,
        norm_eps=config.get("rms_norm_eps", 1e-5),
        tie_word_embeddings=bool(config.get("tie_word_embeddings", False)))


def hf_config(arch: dict, head: str) -> dict:
    """The config.json of a LlamaForSequenceClassification (head "reward") or
    LlamaForCausalLM (head "lm") with this architecture (the inverse of
    architecture_from_hf); the caller adds the token ids."""
    tied = head == "lm" and arch.get("tie_word_embeddings", False)
    head_fields = ({"architectures": ["LlamaForSequenceClassification"], "num_labels": 1}
                   if head == "reward" else {"architectures": ["LlamaForCausalLM"]})
    scale = arch.get("rope_scale_factor")
    return {
        **head_fields, "model_type": "llama",
        "vocab_size": arch["vocab_size"], "num_hidden_layers": arch["num_layers"],
        "num_attention_heads": arch["num_heads"], "num_key_value_heads": arch["num_kv_heads"],
        "hidden_size": arch["embed_dim"], "intermediate_size": arch["intermediate_dim"],
        "max_position_embeddings": arch["max_seq_len"], "rope_theta": arch["rope_base"],
        "rms_norm_eps": arch["norm_eps"], "hidden_act": "silu", "attention_bias": False,
        "mlp_bias": False, "tie_word_embeddings": tied,
        # torchtune's Llama3ScaledRoPE constants, as in Llama 3.1/3.2 configs
        "rope_scaling": {"rope_type": "llama3", "factor": float(scale), "low_freq_factor": 1.0,
                         "high_freq_factor": 4.0, "original_max_position_embeddings": 8192}
        if scale else None,
    }


def hf_to_tune(state_dict: dict, config: dict) -> dict:
    from torchtune.models.convert_weights import hf_to_tune as convert

    return convert(state_dict, num_heads=config["num_attention_heads"],
                   num_kv_heads=config.get("num_key_value_heads", config["num_attention_heads"]),
                   dim=config["hidden_size"], head_dim=config.get("head_dim"))


def tune_to_hf(state_dict: dict, config: dict) -> dict:
    """The inverse of hf_to_tune. A reward head (`output.weight` of one row) becomes
    `score.weight`; an LM head becomes `lm_head.weight`, absent when tied to the embedding."""
    from torchtune.models.convert_weights import tune_to_hf as convert

    state = dict(state_dict)
    head = state.pop("output.weight", None)
    out = convert(state, num_heads=config["num_attention_heads"],
                  num_kv_heads=config.get("num_key_value_heads", config["num_attention_heads"]),
                  dim=config["hidden_size"], head_dim=config.get("head_dim"))
    if head is not None:
        out["score.weight" if config.get("num_labels") == 1 else "lm_head.weight"] = head
    return out
