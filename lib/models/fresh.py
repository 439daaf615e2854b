"""The weights no checkpoint gives, when the rest of the model comes from one.

A reward head on an HF base model or on an SFT run, LoRA adapters on any loaded base, a weight
whose name or shape `init_from`'s checkpoint lacks: each module that owns such a weight is
initialized on its own, on the CPU, under a generator seeded by the run's seed and the module's
name, with the initialization its builder gives it (the module's `fresh_init`, set by whoever
added it: the reward head's N(0, 1/(d+1)), LoRA's Kaiming A and zero B; otherwise its own
`reset_parameters()`, or ones for an RMSNorm). A module's values therefore depend on neither the
rest of the model nor the order it was built in: rank 0 makes them one module at a time while the
ranks stream their shards (lib/models/streaming.py), equal to what one process makes, and no rank
builds the whole model to draw a head.

A model with no checkpoint at all (trained from scratch) keeps its builder's initialization,
drawn in the builder's order.
"""

import copy
import hashlib
from typing import Callable, Dict, Iterable

import torch
from torch import nn


def module_seed(seed: int, module: str) -> int:
    """The seed of one module's initialization: a function of the run's seed and its name."""
    digest = hashlib.sha256(f"{seed}/{module}".encode()).digest()
    return int.from_bytes(digest[:8], "little") & (2 ** 63 - 1)


def _initializer(module: nn.Module) -> Callable[[nn.Module], None]:
    init = getattr(module, "fresh_init", None)
    if init is not None:
        return init
    from torchtune.modules import RMSNorm

    if isinstance(module, RMSNorm):
        return lambda m: nn.init.ones_(m.scale)
    if hasattr(module, "reset_parameters"):
        return type(module).reset_parameters
    raise ValueError(f"{type(module).__name__} has no initialization of its own (no "
                     "fresh_init or reset_parameters), so its weights cannot be made fresh")


def owners(names: Iterable[str]) -> Dict[str, list]:
    """{owning module's name: [weight names]}, in name order."""
    out = {}
    for name in sorted(names):
        out.setdefault(name.rpartition(".")[0], []).append(name)
    return out


def fresh_values(model: nn.Module, names: Iterable[str], seed: int) -> Dict[str, torch.Tensor]:
    """{name: its fresh CPU tensor} for `names` of `model`, which may be a template of the model
    on the meta device (it costs nothing). The global random state is left as it was."""
    out = {}
    for owner, wanted in owners(names).items():
        module = copy.deepcopy(model.get_submodule(owner))
        init = _initializer(module)
        if any(t.is_meta for t in module.parameters()):
            module.to_empty(device="cpu")
        with torch.random.fork_rng(devices=[]), torch.no_grad():
            torch.manual_seed(module_seed(seed, owner))
            init(module)
        state = module.state_dict(prefix=f"{owner}." if owner else "")
        out.update({name: state[name] for name in wanted})
    return out


def initialize(model: nn.Module, names: Iterable[str], seed: int) -> None:
    """Gives the named weights of an unsharded model their fresh values, in place."""
    names = list(names)
    if not names:
        return
    values = fresh_values(model, names, seed)
    state = model.state_dict()
    with torch.no_grad():
        for name, value in values.items():
            state[name].copy_(value)
