"""Sharded checkpoints with torch.distributed.checkpoint (DCP).

A checkpoint is `<workdir>/checkpoints/step_<N>/`: the DCP shards of the model and optimizer,
`trainer_state.json` (step, schedule) and `operative_config.gin`. It is written under a
temporary name and renamed when complete, so a `step_<N>` directory is never half-written.
"""

import json
import pathlib
import shutil

import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

from lib import distributed

CONFIG_FILE = "operative_config.gin"
STATE_FILE = "trainer_state.json"


def step_dir(workdir: pathlib.Path, step: int) -> pathlib.Path:
    return pathlib.Path(workdir) / "checkpoints" / f"step_{step}"


def save(directory: pathlib.Path, model, optimizer, trainer_state: dict,
         operative_config: str) -> pathlib.Path:
    """Saves on every rank (a collective call); returns the completed directory."""
    directory = pathlib.Path(directory)
    tmp = directory.with_name(f".{directory.name}.partial")
    if dist.get_rank() == 0:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    distributed.barrier()
    model_sd, optim_sd = get_state_dict(model, optimizer)
    dcp.save({"model": model_sd, "optim": optim_sd}, checkpoint_id=str(tmp))
    if dist.get_rank() == 0:
        (tmp / STATE_FILE).write_text(json.dumps(trainer_state, indent=2) + "\n")
        (tmp / CONFIG_FILE).write_text(operative_config)
        if directory.exists():
            shutil.rmtree(directory)
        tmp.rename(directory)
    distributed.barrier()
    return directory


def load(directory: pathlib.Path, model, optimizer=None) -> dict:
    """Loads a checkpoint into `model` (and `optimizer`) in place; returns the trainer state."""
    directory = pathlib.Path(directory)
    optimizers = [optimizer] if optimizer is not None else []
    model_sd, optim_sd = get_state_dict(model, optimizers)
    state = {"model": model_sd}
    if optimizer is not None:
        state["optim"] = optim_sd
    dcp.load(state, checkpoint_id=str(directory))
    set_state_dict(model, optimizers, model_state_dict=state["model"],
                   optim_state_dict=state.get("optim", {}))
    return json.loads((directory / STATE_FILE).read_text())
