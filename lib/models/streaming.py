"""Building a sharded model without a full copy on any rank but the one that needs it.

With more than one rank (the model sharded by FSDP2), every rank builds the model on the meta
device (no memory), shards it, allocates only its shards, and then receives the initial weights
one layer at a time from rank 0, which alone reads them: from the safetensors files of an HF
directory (`hf_model`), from the checkpoint `Trainer.init_from` names, and, for what neither
holds (a fresh reward head, LoRA adapters), drawn one module at a time (lib/models/fresh.py).
Every rank therefore holds its shards plus one layer's full tensors. The one exception is a
model with no checkpoint at all (trained from scratch): its builder's initialization is drawn
on rank 0's CPU in the builder's order, as a single process draws it, so rank 0 then holds the
full model. The weights equal the single-process path's bit for bit (tested), and so does
`init/digest`.

A task that needs a digest of the initial weights (DPO's cached reference) gets it from rank 0,
computed as the weights pass (`Task.on_weights_streamed`); so does LoRA's digest of the frozen
base. LoRA adapters are added on the meta device too. Copies a task keeps (a frozen reference,
GRPO's generation copy) are made afterwards from a meta template (lib/models/copies.py).
"""

import collections
import hashlib
from typing import Callable, Dict, Iterable, List, Optional, Set

import torch
from absl import logging


class Digest:
    """SHA-256 over names, dtypes, shapes and bytes, fed in name order (see state_digest)."""

    def __init__(self):
        self._h = hashlib.sha256()
        self._last = None

    def update(self, name: str, tensor: torch.Tensor) -> None:
        if self._last is not None and name <= self._last:
            raise ValueError(f"digest fed out of name order: {name!r} after {self._last!r}")
        self._last = name
        t = tensor.detach().cpu().contiguous()
        self._h.update(f"{name}:{t.dtype}:{tuple(t.shape)};".encode())
        self._h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())

    def hexdigest(self) -> str:
        return self._h.hexdigest()


def layer_groups(names: Iterable[str]) -> List[List[str]]:
    """Names in sorted order, grouped by transformer layer ("layers.<i>." prefix); other names
    alone. Rank 0 materializes one group at a time."""
    groups = collections.OrderedDict()
    for name in sorted(names):
        parts = name.split(".")
        key = ".".join(parts[:2]) if parts[0] == "layers" and len(parts) > 2 else name
        groups.setdefault(key, []).append(name)
    return list(groups.values())


class CheckpointSource:
    """Tensors of a DCP checkpoint's model, read a group at a time on one process."""

    def __init__(self, path, shapes: Dict[str, tuple]):
        import torch.distributed.checkpoint as dcp

        self.path = path
        saved = dcp.FileSystemReader(str(path)).read_metadata().state_dict_metadata
        self.names = {name for name, shape in shapes.items()
                      if tuple(getattr(saved.get(f"model.{name}"), "size", ())) == shape}

    def read(self, names: List[str], like: Dict[str, torch.Tensor]) -> Dict[str, torch.Tensor]:
        import torch.distributed.checkpoint as dcp

        state = {"model": {n: torch.empty(like[n].shape, dtype=like[n].dtype) for n in names}}
        dcp.load(state, checkpoint_id=str(self.path), no_dist=True)
        return state["model"]


class FreshSource:
    """Weights no checkpoint gives, drawn module by module (lib/models/fresh.py) from a template
    of the model on the meta device, built on first use."""

    def __init__(self, template: Callable, seed: int):
        self._template, self._seed, self._model = template, seed, None

    def read(self, names: List[str], like) -> Dict[str, torch.Tensor]:
        from lib.models.fresh import fresh_values

        if self._model is None:
            self._model = self._template()
        return fresh_values(self._model, names, self._seed)


class BuilderSource:
    """A model from scratch: the builder's own initialization, built on rank 0's CPU on first
    use, with the seed a single process uses."""

    def __init__(self, build: Callable, seed: int):
        self._build, self._seed, self._state = build, seed, None

    @property
    def built(self) -> bool:
        return self._state is not None

    def read(self, names: List[str], like) -> Dict[str, torch.Tensor]:
        if self._state is None:
            rng = torch.get_rng_state()
            torch.manual_seed(self._seed)
            with torch.device("cpu"):
                self._state = self._build().state_dict()
            torch.set_rng_state(rng)
        return {n: self._state[n] for n in names}


def nonfinite_message(name: str, source) -> str:
    return (f"{source}: the weight {name} holds NaN or infinite values; the checkpoint is "
            "damaged (training from it would stop at its first step)")


def load_streamed(model, dist_info, build: Callable, seed: int, init_from: str = "",
                  digests: Dict[str, Optional[Set[str]]] = None,
                  base_names: Optional[Set[str]] = None,
                  template: Optional[Callable] = None):
    """Fills a sharded model (allocated, values undefined) with its initial weights, a layer at a
    time from rank 0. Returns (the init_from facts for summary.json, as load_initial's;
    {key: lib.initialization.state_digest of the initial weights named by digests[key], all of
    them for None}, whether rank 0 built the full model from scratch), the same on every rank.
    `base_names`: the weights init_from may give (the model's before adapters were added); None:
    all. `template()`: the model (adapters included) on the meta device, for what no checkpoint
    gives."""
    import torch.distributed as dist
    from torch.distributed.tensor import DTensor, distribute_tensor

    state = model.state_dict()  # this rank's shards (DTensors), written in place
    like = {n: torch.empty(t.shape, dtype=t.dtype, device="meta") for n, t in state.items()}
    shapes = {n: tuple(t.shape) for n, t in state.items()}
    main = dist_info.is_main
    init = None
    if init_from and main:
        from lib.initialization import find_checkpoint

        init = CheckpointSource(find_checkpoint(init_from), {
            n: shape for n, shape in shapes.items() if base_names is None or n in base_names})
        if not init.names:
            raise ValueError(f"init_from={init_from!r}: {init.path} holds none of this model's "
                             "weights; is it a checkpoint of the same architecture?")
    files = getattr(model, "weight_source", None)
    # With a checkpoint, what it lacks is drawn module by module; with none, by the builder.
    builder = (BuilderSource(build, seed) if init is None and files is None else
               FreshSource(template, seed))
    digest, fresh = Digest(), []
    wanted = {key: (names, Digest()) for key, names in (digests or {}).items()}
    for group in layer_groups(state):
        full = {}
        if main:
            by_source = {}
            for name in group:
                src = (init if init is not None and name in init.names else
                       files if files is not None and name in files.names else builder)
                by_source.setdefault(id(src), (src, []))[1].append(name)
            for src, names in by_source.values():
                full.update(src.read(names, like))
            for name in group:  # init/digest: what init_from gave, in name order
                if init is not None and name in init.names:
                    digest.update(name, full[name])
                elif init is not None and (base_names is None or name in base_names):
                    fresh.append(name)
        for name in group:
            target = state[name]
            if main:
                value = full.pop(name).to(dtype=target.dtype)
                for names, d in wanted.values():
                    if names is None or name in names:
                        d.update(name, value)
            buf = (value.to(dist_info.device) if main else
                   torch.empty(shapes[name], dtype=target.dtype, device=dist_info.device))
            dist.broadcast(buf, src=0)
            # Every rank holds the same full tensor here, so all refuse alike, none waits.
            source = getattr(model, "hf_source", None) or init_from
            if source and buf.is_floating_point() and not bool(torch.isfinite(buf).all()):
                raise ValueError(nonfinite_message(name, source))
            if isinstance(target, DTensor):
                target.copy_(distribute_tensor(buf, target.device_mesh, target.placements,
                                               src_data_rank=None))
            else:
                target.copy_(buf)
    from lib.distributed import broadcast_object

    facts = None
    if main and init_from:
        facts = {"init/source": str(init.path), "init/digest": digest.hexdigest(),
                 "init/kept_fresh": fresh}
        if fresh:
            logging.info("init_from %s: %s not in the checkpoint, initialized fresh",
                         init.path, ", ".join(fresh))
    done = {key: d.hexdigest() for key, (_, d) in wanted.items()} if main else None
    full_model = isinstance(builder, BuilderSource) and builder.built
    return broadcast_object((facts or {}, done, full_model))
