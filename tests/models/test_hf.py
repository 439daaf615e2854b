"""Loading reward models from local HF-format directories (config.json + safetensors)."""

import json

import pytest
import torch
from safetensors.torch import save_file

from lib.models.hf import hf_model
from lib.models.llama import convert as llama_convert
from lib.models.llama import llama3_model
from lib.models.qwen2 import convert as qwen2_convert
from lib.models.qwen2 import qwen2_model
from lib.models.reward import compute_rewards

HF_CONFIG = {"vocab_size": 64, "num_hidden_layers": 2, "num_attention_heads": 4,
             "num_key_value_heads": 2, "hidden_size": 32, "intermediate_size": 64,
             "max_position_embeddings": 64, "rms_norm_eps": 1e-5, "num_labels": 1}
FAMILIES = {
    "llama": (llama3_model, llama_convert, {"rope_theta": 500000.0}),
    "qwen2": (qwen2_model, qwen2_convert, {"rope_theta": 1000000.0,
                                                 "tie_word_embeddings": True}),
}


def _write_hf_dir(tmp_path, model_type, with_score=True):
    build, convert, extra = FAMILIES[model_type]
    config = {**HF_CONFIG, **extra, "model_type": model_type}
    torch.manual_seed(1)
    model = build.__wrapped__("reward", **convert.architecture_from_hf(config)).eval()
    hf_state = convert.tune_to_hf(model.state_dict(), config)
    if not with_score:
        hf_state.pop("score.weight")
    save_file({k: v.contiguous() for k, v in hf_state.items()},
              str(tmp_path / "model.safetensors"))
    (tmp_path / "config.json").write_text(json.dumps(config))
    return model


TOKENS = torch.tensor([[1, 5, 9, 13, 2], [1, 7, 2, 0, 0]])
MASK = TOKENS != 0


@pytest.mark.parametrize("model_type", sorted(FAMILIES))
@torch.no_grad()
def test_sequence_classification_checkpoint_scores_like_the_original(tmp_path, model_type):
    original = _write_hf_dir(tmp_path, model_type)
    loaded = hf_model.__wrapped__("reward", str(tmp_path), model_type).eval()
    want = compute_rewards(original, TOKENS, MASK, right_padded=True)
    got = compute_rewards(loaded, TOKENS, MASK, right_padded=True)
    torch.testing.assert_close(got, want)


@pytest.mark.parametrize("model_type", sorted(FAMILIES))
def test_base_checkpoint_gets_a_fresh_head_and_the_same_body(tmp_path, model_type):
    original = _write_hf_dir(tmp_path, model_type, with_score=False)
    loaded = hf_model.__wrapped__("reward", str(tmp_path), model_type)
    torch.testing.assert_close(loaded.tok_embeddings.weight, original.tok_embeddings.weight)
    torch.testing.assert_close(loaded.layers[1].attn.q_proj.weight,
                               original.layers[1].attn.q_proj.weight)
    assert loaded.output.weight.shape == (1, 32)


def test_a_missing_key_fails_loudly(tmp_path):
    _write_hf_dir(tmp_path, "llama")
    from safetensors.torch import load_file

    state = load_file(str(tmp_path / "model.safetensors"))
    state.pop("model.layers.1.mlp.up_proj.weight")
    save_file(state, str(tmp_path / "model.safetensors"))
    with pytest.raises(ValueError, match=f"^{tmp_path}: its weights do not match the model built "
                       "from its config.json .*Missing key.*layers.1.mlp.w3.weight"):
        hf_model.__wrapped__("reward", str(tmp_path), "llama")


def test_a_directory_of_another_family_is_refused(tmp_path):
    _write_hf_dir(tmp_path, "qwen2")
    with pytest.raises(ValueError, match="has model_type 'qwen2', but the config expects 'llama'"):
        hf_model.__wrapped__("reward", str(tmp_path), "llama")
