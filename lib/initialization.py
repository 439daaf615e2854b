"""Starting a run from an earlier run's weights (`Trainer.init_from`), and weight digests.

`init_from` names a run folder (its newest complete checkpoint is used) or one checkpoint
folder. Only the model's weights are read, before sharding, into the freshly built model; the
optimizer, schedule and step start fresh. A weight whose name or shape the source lacks (a
reward head on an SFT model) is initialized fresh (lib/models/fresh.py) and listed. The source
and a SHA-256 digest of what was loaded are returned for summary.json, so a run says exactly
which weights it started from.
"""

import pathlib
from typing import Dict

import torch
from absl import logging

from lib.config import ConfigError, resolve_path


def state_digest(tensors: Dict[str, torch.Tensor]) -> str:
    """SHA-256 over names, dtypes, shapes and bytes, in name order."""
    from lib.models.streaming import Digest

    digest = Digest()
    for name in sorted(tensors):
        digest.update(name, tensors[name])
    return digest.hexdigest()


def find_checkpoint(init_from: str) -> pathlib.Path:
    """The checkpoint folder `init_from` names; ConfigError saying what would be valid."""
    from lib.checkpointing import Checkpointer

    path = resolve_path(init_from, "init_from checkpoint")
    if (path / "checkpoints").is_dir():
        newest = Checkpointer(str(path)).resume_point("")
        if newest is None:
            raise ConfigError(f"init_from={init_from!r}: {path}/checkpoints holds no complete "
                              "checkpoint")
        return newest
    try:
        return Checkpointer(str(path.parent.parent)).resume_point(str(path))
    except ConfigError:
        raise ConfigError(f"init_from={init_from!r}: {path} is neither a run folder (with "
                          "checkpoints/) nor a complete checkpoint folder (step_<N>/ with "
                          "COMPLETE.json)") from None


def init_problems(init_from: str):
    """[(parameter, message)] for the Trainer's config check."""
    if not init_from:
        return []
    try:
        find_checkpoint(init_from)
    except ConfigError as e:
        return [("init_from", e.problems[0].message)]
    return []


def load_initial(model: torch.nn.Module, init_from: str) -> dict:
    """Loads the weights `init_from` names into `model` (unsharded); returns the facts for
    summary.json: init/source, init/digest (of the loaded tensors), init/kept_fresh."""
    import torch.distributed.checkpoint as dcp

    path = find_checkpoint(init_from)
    saved = dcp.FileSystemReader(str(path)).read_metadata().state_dict_metadata
    own = model.state_dict()
    wanted, fresh = {}, []
    for name, tensor in own.items():
        meta = saved.get(f"model.{name}")
        if meta is not None and tuple(getattr(meta, "size", ())) == tuple(tensor.shape):
            wanted[name] = tensor
        else:
            fresh.append(name)
    if not wanted:
        raise ValueError(f"init_from={init_from!r}: {path} holds none of this model's weights; "
                         "is it a checkpoint of the same architecture?")
    state = {"model": wanted}
    dcp.load(state, checkpoint_id=str(path))
    model.load_state_dict(state["model"], strict=False)
    if fresh:
        logging.info("init_from %s: %s not in the checkpoint, initialized fresh", path,
                     ", ".join(fresh))
    return {"init/source": str(path), "init/digest": state_digest(state["model"]),
            "init/kept_fresh": fresh}
