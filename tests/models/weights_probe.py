"""Builds the Trainer of each of several configs and saves its initial weights, gathered to full
tensors: one launch for all of them, since starting a process costs more than a case.

    python tests/models/weights_probe.py CASES.json
    python -m launchers.torchrun --nproc_per_node=2 tests/models/weights_probe.py CASES.json

CASES.json is a list of {"out": path, "gin_files": [...], "gin_bindings": [...]}. For each case
in order, rank 0 writes to its "out" {"state": full state dict, "init_info": ..., "streamed":
bool, "base_digest": LoRA's digest of the frozen base, or None, "rank_0_full_model": whether
rank 0 built the whole model}.
"""

import json

import torch

from launchers import cli
from launchers.train import BUILDS


def main(argv):
    import gc
    import os
    import tempfile

    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    from lib import config, distributed
    from lib.checkpointing import Checkpointer
    from lib.trainer import Trainer

    with open(argv[1]) as f:
        cases = json.load(f)
    dist_info = distributed.init()
    for case in cases:
        config.load(case["gin_files"], case["gin_bindings"], builds=BUILDS,
                    world_size=int(os.environ.get("WORLD_SIZE", 1)))
        workdir = tempfile.mkdtemp()
        trainer = Trainer(workdir, dist_info, Checkpointer(workdir))
        options = StateDictOptions(full_state_dict=True, cpu_offload=True)
        state = get_model_state_dict(trainer.model, options=options)
        if dist_info.is_main:
            torch.save({"state": state, "init_info": trainer.init_info,
                        "streamed": trainer.streamed, "base_digest": trainer.base_digest,
                        "rank_0_full_model": trainer.rank_0_full_model},
                       case["out"])
        del trainer, state
        gc.collect()
        distributed.barrier()
    distributed.shutdown()


if __name__ == "__main__":
    # Ended as the launchers end (no interpreter teardown), which gloo's worker threads, still
    # freeing a collective's tensors, would otherwise abort after a finished run.
    cli.run(main)
