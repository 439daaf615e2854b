"""LoRA (Hu et al., 2021) on any task's model, with torchtune's LoRALinear.

`Trainer.adapter_fn = @lora()` (gin/overlays/lora.gin) replaces the chosen linear layers of
every transformer block with torchtune's `LoRALinear`, which keeps the original weight (frozen)
and adds a low-rank update alpha / rank * B A. B starts at zero, so the adapted model's outputs
at step 0 equal the base model's exactly. Everything else is frozen except a head the task adds
(a reward head); the optimizer sees the trainable parameters only, and checkpoints hold only
them and their optimizer state, plus the base's digest, which a resume checks.
"""

import dataclasses
from typing import Sequence

from torch import nn

from lib.config.registry import configurable

# Target name -> the module path inside a torchtune TransformerSelfAttentionLayer.
TARGETS = {"q_proj": ("attn", "q_proj"), "k_proj": ("attn", "k_proj"),
           "v_proj": ("attn", "v_proj"), "output_proj": ("attn", "output_proj"),
           "w1": ("mlp", "w1"), "w2": ("mlp", "w2"), "w3": ("mlp", "w3")}


@dataclasses.dataclass(frozen=True)
class LoRA:
    rank: int
    alpha: float
    dropout: float
    targets: Sequence[str]

    def __call__(self, model: nn.Module, head: str) -> nn.Module:
        """Adapts `model` in place: LoRA on the targets, base frozen; returns it."""
        from torchtune.modules.peft import LoRALinear
        from torchtune.modules.peft.lora import _lora_a_init_params, _lora_b_init_params

        for p in model.parameters():
            p.requires_grad_(False)
        for layer in model.layers:
            for target in self.targets:
                parent_name, name = TARGETS[target]
                parent = getattr(layer, parent_name)
                base = getattr(parent, name)
                adapted = LoRALinear(base.in_features, base.out_features, rank=self.rank,
                                     alpha=self.alpha, dropout=self.dropout,
                                     use_bias=base.bias is not None)
                adapted.weight = base.weight  # the same frozen tensor, not a copy
                # How lib/models/fresh.py draws them on a loaded base: as LoRALinear does.
                adapted.lora_a.fresh_init = _lora_a_init_params
                adapted.lora_b.fresh_init = _lora_b_init_params
                if base.bias is not None:
                    adapted.bias = base.bias
                setattr(parent, name, adapted)
        if head == "reward":  # a head the task adds is trained with the adapters
            model.output.requires_grad_(True)
        model.lora = self
        return model


def is_adapted(model: nn.Module) -> bool:
    return getattr(model, "lora", None) is not None


def merged_state(state: dict, lora: LoRA) -> dict:
    """A full state dict in the base layout: each W + alpha / rank * B A, adapters dropped."""
    out = {k: v for k, v in state.items() if ".lora_a." not in k and ".lora_b." not in k}
    for key in [k for k in state if k.endswith(".lora_a.weight")]:
        prefix = key[:-len("lora_a.weight")]
        delta = state[prefix + "lora_b.weight"].float() @ state[key].float()
        weight = out[prefix + "weight"]
        out[prefix + "weight"] = (weight.float() + lora.alpha / lora.rank * delta).to(
            weight.dtype)
    return out


# Our target names -> the module names of transformers' Llama and Qwen2 blocks.
HF_MODULES = {"q_proj": "self_attn.q_proj", "k_proj": "self_attn.k_proj",
              "v_proj": "self_attn.v_proj", "output_proj": "self_attn.o_proj",
              "w1": "mlp.gate_proj", "w2": "mlp.down_proj", "w3": "mlp.up_proj"}


def peft_adapter(state: dict, lora: LoRA, family: str, arch: dict):
    """(adapter weights, adapter_config.json) in PEFT's layout for a causal LM.

    torchtune's Llama keeps q and k rows in an interleaved rotary order that its HF conversion
    permutes; an adapter's B matrix has those rows, so it is permuted the same way (as
    torchtune's tune_to_peft_adapter_weights does). Qwen2 needs no permutation.
    """
    head_dim = arch["embed_dim"] // arch["num_heads"]
    weights = {}
    for key, value in state.items():
        if ".lora_a." not in key and ".lora_b." not in key:
            continue
        _, layer, _, target, ab, _ = key.split(".")
        if family == "llama" and ab == "lora_b" and target in ("q_proj", "k_proj"):
            heads = arch["num_heads"] if target == "q_proj" else arch["num_kv_heads"]
            rank = value.shape[-1]
            value = (value.view(heads, head_dim // 2, 2, rank).transpose(1, 2)
                     .reshape(heads * head_dim, rank))
        name = f"base_model.model.model.layers.{layer}.{HF_MODULES[target]}"
        weights[f"{name}.lora_{ab[-1].upper()}.weight"] = value.contiguous()
    config = {"peft_type": "LORA", "task_type": "CAUSAL_LM", "r": lora.rank,
              "lora_alpha": lora.alpha, "lora_dropout": lora.dropout, "bias": "none",
              "fan_in_fan_out": False, "inference_mode": True,
              "target_modules": sorted(HF_MODULES[t].split(".")[1] for t in lora.targets)}
    return weights, config


def _check(view):
    get = lambda arg: view.get("lora", arg)  # noqa: E731
    problems = []
    if get("rank") < 1:
        problems.append(("rank", f"rank={get('rank')} must be >= 1"))
    if not get("alpha") > 0:
        problems.append(("alpha", f"alpha={get('alpha')} must be > 0"))
    if not 0.0 <= get("dropout") < 1.0:
        problems.append(("dropout", f"dropout={get('dropout')} must be in [0, 1)"))
    targets = list(get("targets"))
    unknown = [t for t in targets if t not in TARGETS]
    if unknown or not targets:
        problems.append(("targets", f"targets={targets!r}: each must be one of "
                         f"{', '.join(TARGETS)} (attention projections and MLP), at least one"))
    return problems


@configurable(check=_check, resume_sensitive=("*",))
def lora(rank: int = 8, alpha: float = 16.0, dropout: float = 0.0,
         targets: Sequence[str] = ("q_proj", "v_proj")) -> LoRA:
    """LoRA adapters on every transformer block; the base model is frozen.

    Args:
      rank: the rank r of each update B A (>= 1).
      alpha: the update is scaled by alpha / rank (16 with rank 8, as in torchtune's recipes).
      dropout: dropout on the adapter's input, in [0, 1).
      targets: which linear layers get an adapter: q_proj, k_proj, v_proj, output_proj
        (attention) and w1, w2, w3 (MLP). The LoRA paper adapts q_proj and v_proj.
    """
    return LoRA(rank, alpha, dropout, tuple(targets))


def frozen_digest(model: nn.Module) -> str:
    """The digest of the frozen (base) weights, which a LoRA checkpoint must be resumed onto."""
    from lib.initialization import state_digest

    return state_digest({k: p for k, p in model.named_parameters() if not p.requires_grad})


def trainable_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)

