"""Builds the Trainer of a config and saves its initial weights, gathered to full tensors.

    python tests/models/weights_probe.py OUT.pt --gin_file=... [--gin_bindings=...]
    python -m launchers.torchrun --nproc_per_node=2 tests/models/weights_probe.py OUT.pt ...

Rank 0 writes {"state": full state dict, "init_info": ..., "streamed": bool, "base_digest":
LoRA's digest of the frozen base, or None, "rank_0_full_model": whether rank 0 built the whole
model}.
"""


import torch

from launchers import cli
from launchers.train import BUILDS, FLAGS  # its --gin_file and --gin_bindings flags


def main(argv):
    import os
    import tempfile

    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    from lib import config, distributed
    from lib.checkpointing import Checkpointer
    from lib.trainer import Trainer

    config.load(FLAGS.gin_file, FLAGS.gin_bindings, builds=BUILDS,
                world_size=int(os.environ.get("WORLD_SIZE", 1)))
    dist_info = distributed.init()
    workdir = tempfile.mkdtemp()
    trainer = Trainer(workdir, dist_info, Checkpointer(workdir))
    state = get_model_state_dict(trainer.model, options=StateDictOptions(full_state_dict=True,
                                                                         cpu_offload=True))
    if dist_info.is_main:
        torch.save({"state": state, "init_info": trainer.init_info,
                    "streamed": trainer.streamed, "base_digest": trainer.base_digest,
                    "rank_0_full_model": trainer.rank_0_full_model},
                   argv[1])
    distributed.barrier()
    distributed.shutdown()


if __name__ == "__main__":
    # Ended as the launchers end (no interpreter teardown), which gloo's worker threads, still
    # freeing a collective's tensors, would otherwise abort after a finished run.
    cli.run(main)
