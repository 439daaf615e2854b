"""The copies a task keeps beside its model (lib/models/copies.py), in one process: a frozen copy
of the initial model, and an unsharded copy in the precision the model computes in, which
Sampler.sync fills."""

import torch

from lib.distributed import DistInfo
from lib.models.copies import ModelCopies
from lib.models.llama import llama3_model
from lib.parallel import fsdp
from lib.rollout import Sampler

ARCH = dict(vocab_size=64, num_layers=2, embed_dim=32, num_heads=4, num_kv_heads=2,
            intermediate_dim=64, max_seq_len=32)
CPU = DistInfo(rank=0, world_size=1, local_rank=0, device=torch.device("cpu"))


def _template():
    with torch.device("meta"):
        return llama3_model.__wrapped__("lm", **ARCH)


def test_a_frozen_copy_of_an_unwrapped_model_holds_its_weights_and_is_frozen():
    torch.manual_seed(0)
    model = llama3_model.__wrapped__("lm", **ARCH)
    copies = ModelCopies(model, _template, lambda m: fsdp.__wrapped__(m, CPU), CPU.device)
    frozen = copies.frozen()
    assert frozen is not model and not frozen.training
    assert not any(p.requires_grad for p in frozen.parameters())
    mine = frozen.state_dict()
    for name, tensor in model.state_dict().items():
        assert torch.equal(mine[name], tensor), name
    tokens = torch.randint(0, ARCH["vocab_size"], (2, 8))
    with torch.no_grad():
        torch.testing.assert_close(frozen(tokens), model.eval()(tokens), rtol=0, atol=0)


def test_an_unsharded_copy_takes_the_compute_dtype_and_sync_fills_it():
    torch.manual_seed(0)
    model = llama3_model.__wrapped__("lm", **ARCH)
    copies = ModelCopies(model, _template, None, CPU.device)
    copy = copies.unsharded(torch.bfloat16)
    assert {p.dtype for p in copy.parameters()} == {torch.bfloat16}
    assert not any(p.requires_grad for p in copy.parameters())
    caches = [b for n, b in copy.named_buffers() if n.endswith("cache")]
    assert caches and all(b.dtype == torch.float32 for b in caches)  # as FSDP2 keeps buffers
    sampler = Sampler(copy, CPU.device)
    sampler.sync(model)
    assert sampler.model is copy
    mine = copy.state_dict()
    for name, tensor in model.state_dict().items():
        assert torch.equal(mine[name], tensor.to(torch.bfloat16)), name
