"""AdamW parameter groups and the learning-rate schedules."""

import math

import pytest
import torch

from lib.models.llama import llama3_model
from lib.optim import build_adamw
from lib.schedules import build_lr_schedule


def _model():
    return llama3_model.__wrapped__("reward", vocab_size=32, num_layers=1, num_heads=2,
                                           num_kv_heads=1, embed_dim=16, intermediate_dim=32,
                                           max_seq_len=16)


def test_weight_decay_skips_norms_and_biases_and_covers_every_parameter():
    model = _model()
    opt = build_adamw.__wrapped__(model, lr=1e-3, weight_decay=0.1)
    decay, no_decay = opt.param_groups
    names = {id(p): n for n, p in model.named_parameters()}
    assert all(("norm" in names[id(p)]) for p in no_decay["params"])
    assert all(p.ndim == 2 for p in decay["params"])
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert len(decay["params"]) + len(no_decay["params"]) == len(list(model.parameters()))


def test_decay_is_decoupled_from_the_gradient():
    """With a zero gradient, AdamW still shrinks a matrix by lr * weight_decay per step."""
    w = torch.nn.Linear(4, 4, bias=False)
    before = w.weight.detach().clone()
    opt = build_adamw.__wrapped__(w, lr=0.1, weight_decay=0.5)
    w.weight.grad = torch.zeros_like(w.weight)
    opt.step()
    assert torch.allclose(w.weight, before * (1 - 0.1 * 0.5))


def _lrs(decay, num_steps=10, warmup=2, min_ratio=0.0):
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = build_lr_schedule.__wrapped__(opt, num_steps, warmup_steps=warmup, decay=decay,
                                          min_lr_ratio=min_ratio)
    out = []
    for _ in range(num_steps):
        out.append(sched.get_last_lr()[0])
        opt.step()
        sched.step()
    return out


def test_warmup_then_cosine():
    lrs = _lrs("cosine")
    assert lrs[:3] == pytest.approx([1 / 3, 2 / 3, 1.0])
    assert lrs[6] == pytest.approx(0.5 * (1 + math.cos(math.pi * 4 / 8)))
    assert all(a >= b for a, b in zip(lrs[2:], lrs[3:]))


def test_warmup_then_linear_to_min_ratio():
    lrs = _lrs("linear", min_ratio=0.1)
    assert lrs[2] == pytest.approx(1.0)
    assert lrs[6] == pytest.approx(0.1 + 0.9 * (1 - 4 / 8))


@pytest.mark.parametrize("kwargs, message", [
    (dict(warmup_steps=10), r"warmup_steps=10 must be in \[0, num_steps=10\)"),
    (dict(decay="step"), "valid: cosine, linear, constant"),
    (dict(min_lr_ratio=2.0), r"min_lr_ratio=2.0 must be in \[0, 1\]"),
])
def test_bad_schedules_are_refused(kwargs, message):
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    with pytest.raises(ValueError, match=message):
        build_lr_schedule.__wrapped__(opt, 10, **kwargs)
