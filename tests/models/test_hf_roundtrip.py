"""transformers-made checkpoint -> our training -> our export -> transformers scores match ours.

Tiny Llama 3.2-style (scaled RoPE) and Qwen2.5-style (tied embeddings, q/k/v biases)
checkpoints are created by transformers itself, base and *ForSequenceClassification.
"""

import json
import shutil

import pytest
import torch
from torch.distributed.checkpoint.format_utils import dcp_to_torch_save

from lib.models.hf import FAMILIES, hf_model
from lib.models.reward import compute_rewards
from tests.conftest import DEMO, demo_batch, run_launcher

transformers = pytest.importorskip("transformers")
pytestmark = pytest.mark.slow

COMMON = dict(vocab_size=512, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
              num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=256,
              pad_token_id=2, bos_token_id=0, eos_token_id=1, num_labels=1)
CHECKPOINTS = {
    "llama-base": ("llama", transformers.LlamaConfig, transformers.LlamaForCausalLM, dict(
        rope_theta=500000.0, rope_scaling={"rope_type": "llama3", "factor": 32.0,
                                           "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                                           "original_max_position_embeddings": 8192})),
    "qwen2-classifier": ("qwen2", transformers.Qwen2Config,
                         transformers.Qwen2ForSequenceClassification,
                         dict(rope_theta=1000000.0, tie_word_embeddings=True)),
    "qwen2-causal-tied": ("qwen2", transformers.Qwen2Config, transformers.Qwen2ForCausalLM,
                          dict(rope_theta=1000000.0, tie_word_embeddings=True)),
}
EXPERIMENTS = {"llama": "llama3_2_1b", "qwen2": "qwen2_5_0_5b"}


def _make(name, directory):
    family, config_cls, model_cls, extra = CHECKPOINTS[name]
    torch.manual_seed(0)
    model = model_cls(config_cls(**COMMON, **extra))
    model.save_pretrained(directory, safe_serialization=True)
    for f in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(DEMO / f, directory / f)
    return family, model


@torch.no_grad()
def test_a_classifier_checkpoint_loads_with_the_same_scores(tmp_path):
    family, theirs_model = _make("qwen2-classifier", tmp_path)
    tokens, mask = demo_batch(tmp_path)
    ours = compute_rewards(hf_model.__wrapped__("reward", str(tmp_path), family).eval(), tokens,
                           mask, right_padded=True)
    theirs = theirs_model.eval()(input_ids=tokens, attention_mask=mask.long()).logits[:, 0]
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name", ["llama-base", "qwen2-classifier"])
@torch.no_grad()
def test_train_from_transformers_checkpoint_and_export_back(tmp_path, name):
    source = tmp_path / "source"
    family, _ = _make(name, source)
    experiment = EXPERIMENTS[family]
    workdir = tmp_path / "run"
    proc = run_launcher([
        f"--gin_file=gin/experiments/{experiment}_reward.gin", "--gin_file=gin/debug/smoke.gin",
        f"--gin_bindings=hf_checkpoint_dir='{source}'",
        f"--gin_bindings=train_files=['{DEMO / 'train.jsonl'}']",
        f"--gin_bindings=eval_files=['{DEMO / 'eval.jsonl'}']",
        # The tiny checkpoints have 256 positions; the experiment's 1,024 would be refused.
        "--gin_bindings=build_preference_data.max_length=128",
        "--gin_bindings=lr=1e-3", "--gin_bindings=Trainer.export_hf=True",
        "--gin_bindings=RunLogger.use_wandb=False", f"--workdir={workdir}"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    export = workdir / "hf"
    config = json.loads((export / "config.json").read_text())
    assert config["model_type"] == family and config["num_labels"] == 1

    dcp_to_torch_save(str(workdir / "checkpoints" / "step_4"), str(tmp_path / "c.pt"))
    build, convert = FAMILIES[family]
    trained = build.__wrapped__("reward", **convert.architecture_from_hf(
        json.loads((source / "config.json").read_text())))
    trained.load_state_dict(torch.load(tmp_path / "c.pt", weights_only=False)["model"])
    tokens, mask = demo_batch(export)
    ours = compute_rewards(trained.eval(), tokens, mask, right_padded=True)
    hf = transformers.AutoModelForSequenceClassification.from_pretrained(str(export)).eval()
    theirs = hf(input_ids=tokens, attention_mask=mask.long()).logits[:, 0]
    torch.testing.assert_close(theirs, ours, atol=1e-5, rtol=1e-5)
    before = hf_model.__wrapped__("reward", str(source), family).eval()
    assert not torch.allclose(compute_rewards(before, tokens, mask, right_padded=True), ours)


def _sft_run(family, source, workdir, lr, overlay=None):
    """A 4-step SFT run of the family's experiment config on `source`, exported to HF."""
    proc = run_launcher([
        f"--gin_file=gin/experiments/{EXPERIMENTS[family]}_sft.gin",
        *([overlay] if overlay else []), "--gin_file=gin/debug/smoke.gin",
        f"--gin_bindings=hf_checkpoint_dir='{source}'",
        f"--gin_bindings=train_files=['{DEMO / 'train.jsonl'}']",
        f"--gin_bindings=eval_files=['{DEMO / 'eval.jsonl'}']",
        "--gin_bindings=build_sft_data.columns={'completion': 'chosen'}",
        "--gin_bindings=build_sft_data.max_length=128", f"--gin_bindings=lr={lr}",
        "--gin_bindings=fsdp.param_dtype='float32'", "--gin_bindings=Trainer.export_hf=True",
        "--gin_bindings=RunLogger.use_wandb=False", f"--workdir={workdir}"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    return workdir


@pytest.mark.parametrize("name", ["llama-base", "qwen2-causal-tied"])
@torch.no_grad()
def test_sft_from_transformers_checkpoint_exports_a_causal_lm_with_the_same_logits(tmp_path,
                                                                                   name):
    """Untied (Llama 3.2 style) and tied (Qwen2.5 style) LM heads, both ways."""
    source = tmp_path / "source"
    family, original = _make(name, source)
    tokens, _ = demo_batch(source)
    loaded = hf_model.__wrapped__("lm", str(source), family).eval()
    # transformers 5 writes RoPE settings as rope_parameters (scaling included); reading only
    # the older rope_scaling key dropped Llama 3.2's scaling and cost 8e-5 here.
    torch.testing.assert_close(loaded(tokens), original.eval()(input_ids=tokens).logits,
                               atol=1e-5, rtol=1e-5)
    workdir = _sft_run(family, source, tmp_path / "run", lr=1e-3)
    export = workdir / "hf"
    config = json.loads((export / "config.json").read_text())
    assert config["architectures"][0].endswith("ForCausalLM") and "num_labels" not in config
    assert config["tie_word_embeddings"] == (name == "qwen2-causal-tied")
    dcp_to_torch_save(str(workdir / "checkpoints" / "step_4"), str(tmp_path / "c.pt"))
    build, convert = FAMILIES[family]
    trained = build.__wrapped__("lm", **convert.architecture_from_hf(
        json.loads((source / "config.json").read_text())))
    trained.load_state_dict(torch.load(tmp_path / "c.pt", weights_only=False)["model"])
    ours = trained.eval()(tokens)
    hf = transformers.AutoModelForCausalLM.from_pretrained(str(export)).eval()
    torch.testing.assert_close(hf(input_ids=tokens).logits, ours, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(loaded(tokens), ours)


@pytest.mark.parametrize("name", ["llama-base", "qwen2-causal-tied"])
@torch.no_grad()
def test_a_lora_run_exports_a_peft_adapter_that_peft_loads_onto_the_base(tmp_path, name,
                                                                       monkeypatch):
    peft = pytest.importorskip("peft")
    # peft 0.21 refuses torchao < 0.16 (ours is 0.13, pinned for torchtune 0.6.1) when it
    # checks for torchao-quantized layers; these weights are plain tensors, so that check does
    # not apply (in an environment without torchao, nothing needs this).
    monkeypatch.setattr("peft.tuners.lora.torchao.is_torchao_available", lambda: False)
    source = tmp_path / "source"
    family, _ = _make(name, source)
    workdir = _sft_run(family, source, tmp_path / "run", lr=2e-3,
                       overlay="--gin_file=gin/overlays/lora.gin")
    adapter = workdir / "hf_adapter"
    config = json.loads((adapter / "adapter_config.json").read_text())
    assert config["base_model_name_or_path"] == str(source) and config["r"] == 8
    tokens, _ = demo_batch(source)
    base = transformers.AutoModelForCausalLM.from_pretrained(str(source)).eval()
    before = base(input_ids=tokens).logits
    adapted = peft.PeftModel.from_pretrained(base, str(adapter)).eval()
    merged = transformers.AutoModelForCausalLM.from_pretrained(str(workdir / "hf")).eval()
    want = merged(input_ids=tokens).logits
    torch.testing.assert_close(adapted(input_ids=tokens).logits, want, atol=1e-5, rtol=1e-5)
    assert not torch.allclose(before, want, atol=1e-4)


def _edit_config(directory, **changes):
    path = directory / "config.json"
    path.write_text(json.dumps({**json.loads(path.read_text()), **changes}))


BAD_DIRECTORIES = {
    "config_not_json": (lambda d: (d / "config.json").write_text('{"model_type": "llama",'),
                        "config.json is not valid JSON"),
    "config_a_list": (lambda d: (d / "config.json").write_text("[1, 2]"),
                      "config.json holds a JSON list, not an object"),
    "no_hidden_size": (lambda d: (d / "config.json").write_text(json.dumps({
        k: v for k, v in json.loads((d / "config.json").read_text()).items()
        if k != "hidden_size"})), "config.json: no 'hidden_size', which the architecture "
                                  "needs"),
    "gelu": (lambda d: _edit_config(d, hidden_act="gelu"),
             "config.json: hidden_act='gelu'; the llama models built here use 'silu' only"),
    "attention_bias": (lambda d: _edit_config(d, attention_bias=True),
                       "config.json: attention_bias=true; the Llama models built here have no "
                       "biases there"),
    "truncated_weights": (lambda d: (d / "model.safetensors").write_bytes(
        (d / "model.safetensors").read_bytes()[:10_000]),
        "model.safetensors is not a readable safetensors file"),
    "weights_of_another_shape": (lambda d: _edit_config(d, intermediate_size=256),
                                 "its weights do not match the model built from its config.json"),
    "no_model_safetensors": (lambda d: (d / "model.safetensors").rename(d / "x.safetensors"),
                             "no model.safetensors nor model.safetensors.index.json, as "
                             "save_pretrained writes them (x.safetensors would not be read"),
    "index_names_a_missing_shard": (lambda d: (d / "model.safetensors.index.json").write_text(
        json.dumps({"weight_map": {"lm_head.weight": "model-00002-of-00002.safetensors"}})),
        "model.safetensors.index.json lists model-00002-of-00002.safetensors, which"),
}


@pytest.mark.parametrize("case", sorted(BAD_DIRECTORIES))
def test_a_bad_hf_directory_is_named_on_both_load_paths(tmp_path, case):
    """Eager (one process) and streamed (built on the meta device) loads refuse alike, with a
    message naming the file; config.json problems are found at config-check time too."""
    from lib.config import ConfigError
    from lib.models.hf import directory_problems

    directory = tmp_path / "hf"
    _make("llama-base", directory)
    spoil, expected = BAD_DIRECTORIES[case]
    spoil(directory)
    for meta in (False, True):
        with pytest.raises((ValueError, FileNotFoundError, ConfigError)) as info:
            with torch.device("meta" if meta else "cpu"):
                hf_model.__wrapped__("lm", str(directory), "llama")
        assert expected in str(info.value), (meta, str(info.value))

    class View:
        @staticmethod
        def get(name, arg):
            return {"checkpoint_dir": str(directory), "model_type": "llama"}[arg]

    problems = directory_problems(View, "hf_model")
    assert bool(problems) == (case in CONFIG_CASES), problems


CONFIG_CASES = ("config_not_json", "config_a_list", "gelu", "attention_bias")


def test_a_stale_safetensors_file_beside_the_weights_is_never_read(tmp_path):
    """transformers reads model.safetensors (or the index's shards) only; so do both loads."""
    directory = tmp_path / "hf"
    _, theirs = _make("llama-base", directory)
    other = tmp_path / "other"
    torch.manual_seed(1)
    transformers.LlamaForCausalLM(theirs.config).save_pretrained(other)
    shutil.copy(other / "model.safetensors", directory / "old-model.safetensors")
    eager = hf_model.__wrapped__("lm", str(directory), "llama").state_dict()
    want = theirs.state_dict()["model.embed_tokens.weight"]
    assert torch.equal(eager["tok_embeddings.weight"], want)
    with torch.device("meta"):
        lazy = hf_model.__wrapped__("lm", str(directory), "llama").weight_source
    assert torch.equal(lazy.read(["tok_embeddings.weight"])["tok_embeddings.weight"], want)


def test_a_reward_model_refuses_a_classifier_of_several_labels(tmp_path):
    torch.manual_seed(0)
    directory = tmp_path / "hf"
    transformers.LlamaForSequenceClassification(transformers.LlamaConfig(
        **{**COMMON, "num_labels": 2})).save_pretrained(directory)
    for meta in (False, True):
        with pytest.raises(ValueError, match="score.weight has 2 labels; a reward model starts "
                           r"from a one-label classifier \(num_labels=1\) or a base model"):
            with torch.device("meta" if meta else "cpu"):
                hf_model.__wrapped__("reward", str(directory), "llama")


def _nan_weight(directory):
    from safetensors.torch import load_file, save_file

    state = load_file(str(directory / "model.safetensors"))
    state["model.norm.weight"][0] = float("nan")
    save_file(state, str(directory / "model.safetensors"), metadata={"format": "pt"})


def test_nan_in_the_weights_is_refused_when_loaded_by_one_process(tmp_path):
    _make("llama-base", tmp_path)
    _nan_weight(tmp_path)
    with pytest.raises(ValueError, match=f"^{tmp_path}: the weight norm.scale holds NaN or "
                       "infinite values; the checkpoint is damaged"):
        hf_model.__wrapped__("lm", str(tmp_path), "llama")


@pytest.mark.slow
@pytest.mark.distributed
def test_nan_in_the_weights_stops_every_rank_that_streams_them(tmp_path):
    source = tmp_path / "hf"
    _make("llama-base", source)
    _nan_weight(source)
    proc = run_launcher([
        "--gin_file=gin/experiments/llama3_2_1b_sft.gin", "--gin_file=gin/debug/smoke.gin",
        f"--gin_bindings=hf_checkpoint_dir='{source}'",
        f"--gin_bindings=train_files=['{DEMO / 'train.jsonl'}']",
        f"--gin_bindings=eval_files=['{DEMO / 'eval.jsonl'}']",
        "--gin_bindings=build_sft_data.columns={'completion': 'chosen'}",
        "--gin_bindings=build_sft_data.max_length=128", "--gin_bindings=fsdp.param_dtype='float32'",
        f"--workdir={tmp_path / 'w'}"], torchrun_nproc=2, timeout=300)
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert [line for line in proc.stderr.splitlines() if line.startswith("error:")] == [
        f"error: {source}: the weight norm.scale holds NaN or infinite values; the checkpoint "
        "is damaged (training from it would stop at its first step)",
        "error: rank 0 exited with status 2 (a config or data problem; its log above says "
        "why); torchrun stopped the others"]
    assert not (tmp_path / "w").exists()
