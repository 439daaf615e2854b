"""Runs the first training step of a config and saves its loss and full gradients.

    python tests/tasks/step_probe.py OUT.pt --gin_file=... [--gin_bindings=...]
    torchrun --nproc_per_node=2 tests/tasks/step_probe.py OUT.pt ...

The real Trainer is built from the config through the real checks; the gradients are read
when the optimizer is about to step (after accumulation, the reduce over ranks and clipping),
gathered to full tensors, and rank 0 writes them with the step's metrics.
"""


import torch

from launchers import cli
from launchers.train import BUILDS, FLAGS  # its --gin_file and --gin_bindings flags


def main(argv):
    import os
    import tempfile

    from lib import config, distributed
    from lib.checkpointing import Checkpointer
    from lib.trainer import Trainer

    out = argv[1]
    config.load(FLAGS.gin_file, FLAGS.gin_bindings, builds=BUILDS,
                world_size=int(os.environ.get("WORLD_SIZE", 1)))
    dist_info = distributed.init()
    workdir = tempfile.mkdtemp()
    trainer = Trainer(workdir, dist_info, Checkpointer(workdir))
    grads = {}
    step = trainer.optimizer.step

    def capture(*args, **kwargs):
        for name, p in trainer.model.named_parameters():
            g = p.grad.full_tensor() if hasattr(p.grad, "full_tensor") else p.grad
            grads[name] = g.detach().cpu().clone()
        return step(*args, **kwargs)

    trainer.optimizer.step = capture
    sums, _, _ = trainer.train_step(trainer.task.step_batches()[0])
    reduced = distributed.all_reduce_sum(sums[:len(trainer.task.sum_names)].cpu())
    metrics = trainer.task.metrics(reduced, "train")
    if dist_info.is_main:
        torch.save({"metrics": metrics, "grads": grads}, out)
    distributed.barrier()  # leave together: a rank that tears gloo down early can abort
    distributed.shutdown()


if __name__ == "__main__":
    # Ended as the launchers end (no interpreter teardown), which gloo's worker threads, still
    # freeing a collective's tensors, would otherwise abort after a finished run.
    cli.run(main)
