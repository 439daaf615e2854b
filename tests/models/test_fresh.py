"""Weights no checkpoint gives are drawn module by module (lib/models/fresh.py): a module's
values are a function of the seed and its name alone, with its builder's initialization."""

import math

import pytest
import torch
from torch import nn

from lib.models.fresh import fresh_values, initialize, module_seed
from lib.models.llama import llama3_model
from lib.models.lora import lora

ARCH = dict(vocab_size=64, embed_dim=32, num_heads=4, num_kv_heads=2, intermediate_dim=64,
            max_seq_len=32)


def _model(layers, head="reward", device="cpu", adapters=False):
    with torch.device(device):
        model = llama3_model.__wrapped__(head, num_layers=layers, **ARCH)
        if adapters:
            model = lora.__wrapped__(rank=4, targets=("q_proj", "v_proj"))(model, head=head)
    return model


def test_a_fresh_head_depends_on_the_seed_and_its_name_only():
    names = ["output.weight"]
    small = fresh_values(_model(1, device="meta"), names, seed=3)
    large = fresh_values(_model(4), names, seed=3)
    assert torch.equal(small["output.weight"], large["output.weight"])
    other = fresh_values(_model(4), names, seed=4)
    assert not torch.equal(other["output.weight"], large["output.weight"])
    # The reward head's own initialization, N(0, 1/(d+1)), under the module's seed.
    torch.manual_seed(module_seed(3, "output"))
    want = torch.empty(1, ARCH["embed_dim"]).normal_(std=1 / math.sqrt(ARCH["embed_dim"] + 1))
    assert torch.equal(large["output.weight"], want)


def test_lora_adapters_are_drawn_as_lora_draws_them_and_the_global_rng_is_untouched():
    model = _model(2, head="lm", adapters=True)
    names = [n for n in model.state_dict() if ".lora_" in n]
    assert len(names) == 8
    state = torch.get_rng_state()
    values = fresh_values(model, names, seed=0)
    assert torch.equal(torch.get_rng_state(), state)
    for name in names:
        if ".lora_b." in name:
            assert torch.equal(values[name], torch.zeros(values[name].shape)), name
        else:
            torch.manual_seed(module_seed(0, name.rpartition(".")[0]))
            want = torch.empty(values[name].shape)
            nn.init.kaiming_uniform_(want, a=math.sqrt(5))
            assert torch.equal(values[name], want), name
    assert not torch.equal(values[names[0]], values[names[2]])  # each module its own draw


def test_initialize_overwrites_only_the_named_weights():
    model = _model(1)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    initialize(model, ["output.weight", "norm.scale"], seed=0)
    after = model.state_dict()
    assert torch.equal(after["norm.scale"], torch.ones(ARCH["embed_dim"]))  # RMSNorm: ones
    assert not torch.equal(after["output.weight"], before["output.weight"])
    assert all(torch.equal(after[k], before[k]) for k in before
               if k not in ("output.weight", "norm.scale"))


def test_a_module_with_no_initialization_of_its_own_is_named():
    class Scale(nn.Module):
        def __init__(self):
            super().__init__()
            self.gain = nn.Parameter(torch.ones(3))

    with pytest.raises(ValueError, match="Scale has no initialization of its own"):
        fresh_values(nn.ModuleDict({"scale": Scale()}), ["scale.gain"], seed=0)
