"""Wrapping a model for training: FSDP2 over the ranks, and the GPU options.

One code path from a laptop CPU (gloo) to many GPUs (nccl): activation checkpointing and
torch.compile are applied per transformer block, then `fully_shard` shards each block and finally
the root (torchtitan's and torchtune's order). A single process in full precision has nothing to
shard, so by default its model is left unwrapped: FSDP2 there only adds parameter copies and
DTensor dispatch (about 2.5% of a step on the benchmark model). Checkpoints are DCP either way,
so a run saved by one process resumes on N and the other way round.
"""

import os

import torch
from absl import logging

from lib.config.registry import configurable

DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}


def _check(view):
    problems = []
    dtype = view.get("fsdp", "param_dtype")
    if dtype not in DTYPES:
        problems.append(("param_dtype", f"param_dtype={dtype!r}; valid: {', '.join(DTYPES)}"))
    if view.get("fsdp", "cpu_offload") and not torch.cuda.is_available():
        problems.append(("cpu_offload", "cpu_offload=True moves parameters from a GPU to the "
                         "CPU; there is no GPU here (it is for GPU runs that do not fit)"))
    return problems


@configurable(caller_args=("model", "dist_info"), check=_check)
def fsdp(model: torch.nn.Module, dist_info, param_dtype: str = "float32",
         activation_checkpointing: bool = False, compile_blocks: bool = False,
         cpu_offload: bool = False, reshard_after_forward: bool = True,
         defer_gradient_sync: bool = False,
         shard_single_process: bool = False) -> torch.nn.Module:
    """Shards `model` with FSDP2 over all ranks, block by block, then the root.

    At world size 1 with param_dtype="float32" and no cpu_offload, the model is not wrapped
    (there is nothing to shard or reduce) unless shard_single_process is set.

    Args:
      model: passed by the Trainer: a torchtune decoder on the CPU, identical on every rank,
        or on the meta device (lib/models/streaming.py), whose shards are allocated here and
        filled by the Trainer.
      dist_info: passed by the Trainer.
      param_dtype: "bfloat16" computes in bf16 with fp32 master weights, fp32 gradient
        reduction and an fp32 loss; "float32" (default) does everything in fp32.
      activation_checkpointing: recompute each block's activations in backward instead of
        storing them (less memory, about a third more compute).
      compile_blocks: torch.compile each transformer block's forward (the first steps pay
        compile time; the sequence length becomes a dynamic dimension after the first change).
      cpu_offload: keep sharded parameters, gradients and optimizer state in CPU memory (GPU
        only), for models that do not fit otherwise. The optimizer step then runs on the CPU,
        with the node's CPUs shared among its ranks (torch.set_num_threads).
      reshard_after_forward: free gathered parameters after each block's forward (less
        memory) instead of keeping them for backward (less communication).
      defer_gradient_sync: with gradient accumulation, reduce-scatter gradients once a step,
        after the last micro-batch, instead of after each: less communication, but until then
        every rank holds the whole model's gradients unsharded in fp32 (4 bytes a parameter).
        Off (default), a rank's gradients never exceed its shard, as in torchtune and
        torchtitan.
      shard_single_process: wrap with FSDP2 at world size 1 as well, e.g. to reproduce
        FSDP-specific behaviour without torchrun (costs about 2.5% of a CPU step).
    """
    on_meta = next(model.parameters()).is_meta  # built for streaming (lib/models/streaming)
    if not on_meta and not cpu_offload:
        # Offloaded, fully_shard moves one block at a time to the device and its shards back:
        # moving the whole model first would need the device memory offloading is for.
        model.to(dist_info.device)
    if cpu_offload:
        torch.set_num_threads(offload_threads())
        if dist_info.is_main:
            logging.info("fsdp.cpu_offload: the optimizer step and gradient clipping run on the "
                         "CPU, %d threads per rank", torch.get_num_threads())
    unwrapped = (dist_info.world_size == 1 and param_dtype == "float32" and not cpu_offload
                 and not shard_single_process)
    if activation_checkpointing:
        from torchtune.modules import TransformerSelfAttentionLayer
        from torchtune.training import set_activation_checkpointing

        set_activation_checkpointing(model, auto_wrap_policy={TransformerSelfAttentionLayer})
    if compile_blocks:
        for layer in model.layers:
            # Compile forward only, leaving fully_shard's hooks outside the graph. Shapes are
            # left to automatic dynamic (sequence length becomes dynamic on the first new
            # length): dynamic=True also made the gathered parameters' shapes symbolic, and the
            # backward graph ran about 35% slower under FSDP here.
            layer.forward = torch.compile(layer.forward)
    # What attention computes in: an explicit attention mask (packed batches) is built in it.
    model.compute_dtype = DTYPES[param_dtype]
    if unwrapped:
        if dist_info.is_main:
            logging.info("one process in float32: the model is not wrapped with FSDP2 "
                         "(fsdp.shard_single_process=True wraps it)")
            for binding, inert in (("reshard_after_forward=False", not reshard_after_forward),
                                   ("defer_gradient_sync=True", defer_gradient_sync)):
                if inert:
                    logging.warning("fsdp.%s has no effect on an unwrapped model (it applies "
                                    "from 2 processes, or with fsdp.shard_single_process=True)",
                                    binding)
        return model
    # Imported here: torch.distributed.fsdp takes about 0.7 s to import, which the config-only
    # commands (--validate_only, listing configurables) should not pay.
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.fsdp import CPUOffloadPolicy, MixedPrecisionPolicy, fully_shard

    mesh = init_device_mesh(dist_info.device.type, (dist_info.world_size,))
    options = dict(mesh=mesh, reshard_after_forward=reshard_after_forward,
                   mp_policy=MixedPrecisionPolicy(param_dtype=DTYPES[param_dtype],
                                                  reduce_dtype=torch.float32))
    if cpu_offload:
        options["offload_policy"] = CPUOffloadPolicy()
    for layer in model.layers:
        fully_shard(layer, **options)
    head = getattr(model, "output", None)
    if isinstance(head, torch.nn.Linear) and head.out_features == 1 and param_dtype != "float32":
        # A scalar head (a reward model's) computes in fp32, on the final norm's output cast
        # up: bf16 keeps 8 significant bits (steps of 1/16 at a reward of 8), which would turn
        # close pairs into ties; it is one row of weights.
        fully_shard(head, **dict(options, mp_policy=MixedPrecisionPolicy(
            param_dtype=torch.float32, reduce_dtype=torch.float32)))
    model = fully_shard(model, **options)
    model.defer_gradient_sync = defer_gradient_sync  # read by the Trainer's step
    if on_meta:  # allocate this rank's shards only; the caller fills them
        model.to_empty(device=dist_info.device)
        with torch.device(dist_info.device):
            for module in model.modules():
                if hasattr(module, "rope_init"):  # RoPE caches: buffers outside the state dict
                    module.rope_init()
    return model


def offload_threads() -> int:
    """CPU threads per rank for offloaded parameters' work: this node's CPUs shared among its
    ranks. torchrun sets OMP_NUM_THREADS=1 when it starts several processes per node, which
    would leave each rank's optimizer step on one core (torchtune resets it likewise)."""
    ranks = int(os.environ.get("LOCAL_WORLD_SIZE", "1"))
    return max(1, len(os.sched_getaffinity(0)) // ranks)


def is_sharded(model: torch.nn.Module) -> bool:
    """Whether `model` was wrapped by `fsdp` (its parameters are DTensors)."""
    from torch.distributed.fsdp import FSDPModule

    return isinstance(model, FSDPModule)
