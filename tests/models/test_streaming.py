"""Several ranks build the model on the meta device and receive their shards of the initial
weights from rank 0 (lib/models/streaming.py): the weights and init facts equal one process's."""

import json
import math
import subprocess
import sys

import pytest
import torch

from lib.models.fresh import module_seed
from lib.models.streaming import Digest, layer_groups
from tests.conftest import DEMO, REPO


def test_layer_groups_keep_name_order_and_one_layer_together():
    names = ["tok_embeddings.weight", "layers.10.mlp.w1.weight", "layers.2.attn.q_proj.weight",
             "layers.2.mlp.w1.weight", "norm.scale", "output.weight"]
    groups = layer_groups(names)
    assert groups == [["layers.10.mlp.w1.weight"],
                      ["layers.2.attn.q_proj.weight", "layers.2.mlp.w1.weight"],
                      ["norm.scale"], ["output.weight"], ["tok_embeddings.weight"]]
    assert [n for g in groups for n in g] == sorted(names)


def test_the_streamed_digest_is_state_digest():
    from lib.initialization import state_digest

    tensors = {"b": torch.arange(3.0), "a": torch.ones(2, 2, dtype=torch.bfloat16)}
    digest = Digest()
    for name in sorted(tensors):
        digest.update(name, tensors[name])
    assert digest.hexdigest() == state_digest(tensors)
    with pytest.raises(ValueError, match="out of name order"):
        digest.update("a", tensors["a"])


CASES = ["hf_checkpoint", "qwen2_hf_checkpoint_tied", "hf_base_with_a_fresh_reward_head",
         "init_from_with_a_fresh_head", "lora_from_init_from", "random"]


def _probe(cases, nproc):
    """{case: what weights_probe.py saved}, every case built in one launch of `nproc` ranks."""
    launcher = ([sys.executable, "-m", "launchers.torchrun", "--standalone",
                 f"--nproc_per_node={nproc}"] if nproc > 1 else [sys.executable])
    spec = next(iter(cases.values()))["out"].parent / f"cases-{nproc}.json"
    spec.write_text(json.dumps([{**case, "out": str(case["out"])} for case in cases.values()]))
    proc = subprocess.run([*launcher, str(REPO / "tests/models/weights_probe.py"), str(spec)],
                          cwd=REPO, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return {name: torch.load(case["out"], weights_only=False) for name, case in cases.items()}


@pytest.fixture(scope="module")
def probed(tmp_path_factory, sft_run):
    """{world size: {case: its probe}}: each case's initial weights on 1 rank and on 2."""
    args = {name: _case(name, tmp_path_factory.mktemp(name), sft_run) for name in CASES}
    out = {}
    for nproc in (1, 2):
        out[nproc] = _probe({name: {
            "out": tmp_path_factory.getbasetemp() / f"{name}-{nproc}.pt",
            "gin_files": [a.split("=", 1)[1] for a in args[name] if a.startswith("--gin_file=")],
            "gin_bindings": [a.split("=", 1)[1] for a in args[name]
                             if a.startswith("--gin_bindings=")]} for name in CASES}, nproc)
    return out


def _case(name, tmp_path, sft_run):
    if name in ("hf_checkpoint", "qwen2_hf_checkpoint_tied"):
        from tests.models.test_hf_roundtrip import _make

        qwen2 = name.startswith("qwen2")
        _make("qwen2-causal-tied" if qwen2 else "llama-base", tmp_path / "hf")
        experiment = "qwen2_5_0_5b" if qwen2 else "llama3_2_1b"
        return [f"--gin_file=gin/experiments/{experiment}_sft.gin",
                f"--gin_bindings=hf_checkpoint_dir='{tmp_path / 'hf'}'",
                f"--gin_bindings=train_files=['{DEMO / 'train.jsonl'}']",
                f"--gin_bindings=eval_files=['{DEMO / 'eval.jsonl'}']",
                "--gin_bindings=build_sft_data.columns={'completion': 'chosen'}",
                "--gin_bindings=build_sft_data.max_length=128",
                "--gin_bindings=fsdp.param_dtype='float32'"]
    if name == "hf_base_with_a_fresh_reward_head":
        from tests.models.test_hf_roundtrip import _make

        _make("llama-base", tmp_path / "hf")
        return ["--gin_file=gin/experiments/llama3_2_1b_reward.gin",
                f"--gin_bindings=hf_checkpoint_dir='{tmp_path / 'hf'}'",
                f"--gin_bindings=train_files=['{DEMO / 'train.jsonl'}']",
                f"--gin_bindings=eval_files=['{DEMO / 'eval.jsonl'}']",
                "--gin_bindings=build_preference_data.max_length=128",
                "--gin_bindings=fsdp.param_dtype='float32'"]
    if name == "init_from_with_a_fresh_head":  # the reward head is drawn fresh
        return ["--gin_file=gin/reward.gin", f"--gin_bindings=Trainer.init_from='{sft_run}'"]
    if name == "lora_from_init_from":  # base from the checkpoint, adapters drawn fresh
        return ["--gin_file=gin/sft.gin", "--gin_file=gin/overlays/lora.gin",
                f"--gin_bindings=Trainer.init_from='{sft_run}'"]
    return ["--gin_file=gin/sft.gin"]  # from scratch: every weight from the builder


@pytest.mark.slow
@pytest.mark.distributed
@pytest.mark.parametrize("name", CASES)
def test_two_ranks_stream_the_weights_one_process_loads(name, probed):
    one, two = probed[1][name], probed[2][name]
    assert not one["streamed"] and two["streamed"]
    # Only a model from scratch is built whole on rank 0; with a checkpoint, what it lacks is
    # drawn a module at a time.
    assert two["rank_0_full_model"] == (name == "random")
    assert one["state"].keys() == two["state"].keys()
    for key, tensor in one["state"].items():
        assert torch.equal(two["state"][key], tensor), key
    assert two["init_info"] == one["init_info"]
    assert two["base_digest"] == one["base_digest"]
    if name == "lora_from_init_from":
        assert one["base_digest"] and one["init_info"]["model/trainable_parameters"] > 0
    if name == "init_from_with_a_fresh_head":
        assert one["init_info"]["init/kept_fresh"] == ["output.weight"]
    if "fresh" in name:  # the reward head's own draw, seeded by Trainer.seed and its name
        head = one["state"]["output.weight"]
        torch.manual_seed(module_seed(0, "output"))
        want = torch.empty(head.shape).normal_(std=1 / math.sqrt(head.shape[1] + 1))
        assert torch.equal(head, want)
    if name == "lora_from_init_from":
        assert all(not t.any() for k, t in one["state"].items() if ".lora_b." in k)


def test_hf_weights_read_lazily_equal_the_eager_load_and_a_mismatch_is_named(tmp_path):
    from lib.models.hf import hf_model
    from tests.models.test_hf_roundtrip import _make

    _make("llama-base", tmp_path)
    eager = hf_model.__wrapped__("lm", str(tmp_path), "llama").state_dict()
    with torch.device("meta"):
        lazy = hf_model.__wrapped__("lm", str(tmp_path), "llama")
    source = lazy.weight_source
    assert source.names == set(eager)
    got = source.read(sorted(eager))
    for name, tensor in eager.items():
        assert torch.equal(got[name].to(tensor.dtype), tensor), name
    with pytest.raises(ValueError, match=rf"{tmp_path}: its weights do not match the model"):
        type(source)(tmp_path, source.config, "lm", source.convert,
                     {**eager, "extra.weight": torch.empty(1)})
