"""LoRA: the base model's outputs at step 0, only adapters trained, the base untouched, small
checkpoints that refuse another base, and a merged export transformers reads alike."""

import json

import pytest
import torch

from lib.models.llama import llama3_model
from lib.models.lora import TARGETS, lora, merged_state
from lib.optim import build_adamw
from tests.conftest import REPO, run_launcher

ARCH = dict(vocab_size=64, num_layers=2, num_heads=4, num_kv_heads=2, embed_dim=32,
            intermediate_dim=64, max_seq_len=32)
TOKENS = torch.randint(0, 64, (3, 12), generator=torch.Generator().manual_seed(0))


def _pair(head, targets=tuple(TARGETS)):
    torch.manual_seed(0)
    base = llama3_model.__wrapped__(head, **ARCH).eval()
    torch.manual_seed(0)
    adapted = lora.__wrapped__(rank=4, alpha=8.0, targets=targets)(
        llama3_model.__wrapped__(head, **ARCH), head).eval()
    return base, adapted


@pytest.mark.parametrize("head", ["lm", "reward"])
@torch.no_grad()
def test_the_adapted_model_starts_exactly_as_its_base(head):
    base, adapted = _pair(head)
    assert torch.equal(adapted(TOKENS), base(TOKENS))


@pytest.mark.parametrize("head", ["lm", "reward"])
def test_only_the_adapters_and_a_new_head_are_trainable_and_optimized(head):
    _, adapted = _pair(head, targets=("q_proj", "v_proj"))
    trainable = {n for n, p in adapted.named_parameters() if p.requires_grad}
    expected = {f"layers.{i}.attn.{t}.{ab}.weight" for i in range(2) for t in ("q_proj", "v_proj")
                for ab in ("lora_a", "lora_b")}
    assert trainable == expected | ({"output.weight"} if head == "reward" else set())
    optimizer = build_adamw.__wrapped__(adapted, lr=1e-3)
    optimized = {id(p) for g in optimizer.param_groups for p in g["params"]}
    assert optimized == {id(p) for p in adapted.parameters() if p.requires_grad}


@torch.no_grad()
def test_merged_weights_give_the_adapted_outputs():
    _, adapted = _pair("lm")
    for name, p in adapted.named_parameters():
        if "lora_b" in name:
            p.normal_(std=0.1)  # a trained adapter
    plain = llama3_model.__wrapped__("lm", **ARCH).eval()
    plain.load_state_dict(merged_state(adapted.state_dict(), adapted.lora))
    torch.testing.assert_close(plain(TOKENS), adapted(TOKENS), atol=1e-5, rtol=1e-5)


def test_rank_alpha_and_targets_are_checked_before_anything_is_built(search_roots):
    from launchers.train import BUILDS
    from lib import config

    with pytest.raises(config.ConfigError) as e:
        config.load(["gin/sft.gin", "gin/overlays/lora.gin"],
                    ["lora.rank = 0", "lora.targets = ['q_proj', 'qkv']"], builds=BUILDS)
    text = str(e.value)
    assert "lora: rank=0 must be >= 1" in text
    assert "targets=['q_proj', 'qkv']: each must be one of q_proj, k_proj, v_proj" in text


LORA_SMOKE = ["--gin_file=gin/sft.gin", "--gin_file=gin/overlays/lora.gin",
              "--gin_file=gin/debug/smoke.gin", "--gin_bindings=RunLogger.use_wandb=False",
              "--gin_bindings=lr=1e-2"]


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("lora") / "w"
    proc = run_launcher([*LORA_SMOKE, "--gin_bindings=Trainer.export_hf=True",
                         f"--workdir={workdir}"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    return workdir


def _trainer_from(workdir, tmp_path):
    from launchers.train import BUILDS
    from lib import config, distributed
    from lib.checkpointing import Checkpointer
    from lib.trainer import Trainer

    config.set_search_roots([REPO])
    config.load([str(workdir / "operative_config.gin")], [], builds=BUILDS)
    out = tmp_path / "reload"
    return Trainer(str(out), distributed.init(), Checkpointer(str(out)))


@pytest.mark.slow
def test_training_changes_the_adapters_and_leaves_the_base_bit_identical(lora_run, tmp_path):
    trainer = _trainer_from(lora_run, tmp_path)
    frozen = {n: p.detach().clone() for n, p in trainer.model.named_parameters()
              if not p.requires_grad}
    before = {n: p.detach().clone() for n, p in trainer.model.named_parameters()
              if p.requires_grad}
    trainer.restore(lora_run / "checkpoints" / "step_4")
    after = dict(trainer.model.named_parameters())
    assert all(torch.equal(after[n], t) for n, t in frozen.items())
    assert all(not torch.equal(after[n], t) for n, t in before.items() if "lora_b" in n)


@pytest.mark.slow
def test_a_checkpoint_holds_the_adapters_and_their_optimizer_state_only(lora_run):
    from torch.distributed.checkpoint import FileSystemReader

    keys = FileSystemReader(str(lora_run / "checkpoints" / "step_4")).read_metadata() \
        .state_dict_metadata
    model_keys = {k for k in keys if k.startswith("model.")}
    assert model_keys and all(".lora_a." in k or ".lora_b." in k for k in model_keys)
    summary = json.loads((lora_run / "summary.json").read_text())
    # rank 8 on q (128 -> 128), k and v (128 -> 64), output (128 -> 128), in 2 blocks
    per_block = 8 * (128 + 128) + 2 * 8 * (128 + 64) + 8 * (128 + 128)
    assert summary["model/trainable_parameters"] == 2 * per_block == 14336
    state = json.loads((lora_run / "checkpoints/step_4/trainer_state.json").read_text())
    assert len(state["base_digest"]) == 64


@pytest.mark.slow
def test_resuming_onto_another_base_is_refused(lora_run, tmp_path):
    import shutil

    workdir = tmp_path / "w"
    shutil.copytree(lora_run, workdir)
    shutil.rmtree(workdir / "checkpoints" / "step_4")
    proc = run_launcher([*LORA_SMOKE, "--gin_bindings=Trainer.seed=1", "--allow_config_change",
                         f"--workdir={workdir}"])
    assert proc.returncode == 2
    assert "holds adapters trained on another base model" in proc.stderr


@pytest.mark.slow
@torch.no_grad()
def test_the_merged_export_gives_the_adapted_models_logits(lora_run, tmp_path):
    transformers = pytest.importorskip("transformers")
    trainer = _trainer_from(lora_run, tmp_path)
    trainer.restore(lora_run / "checkpoints" / "step_4")
    tokens = torch.randint(0, 500, (2, 20), generator=torch.Generator().manual_seed(1))
    ours = trainer.model.eval()(tokens)
    hf = transformers.AutoModelForCausalLM.from_pretrained(str(lora_run / "hf")).eval()
    assert not any("lora" in k for k in hf.state_dict())
    torch.testing.assert_close(hf(input_ids=tokens).logits, ours, atol=1e-5, rtol=1e-5)


@pytest.mark.slow
def test_a_reward_model_trains_with_lora_and_its_new_head(tmp_path):
    workdir = tmp_path / "w"
    proc = run_launcher(["--gin_file=gin/reward.gin", "--gin_file=gin/overlays/lora.gin",
                         "--gin_file=gin/debug/smoke.gin",
                         "--gin_bindings=RunLogger.use_wandb=False", f"--workdir={workdir}"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    summary = json.loads((workdir / "summary.json").read_text())
    assert summary["model/trainable_parameters"] == 14336 + 128  # adapters + the reward head
