"""Writes a checkpoint's model as a Hugging Face directory (and, with LoRA, a PEFT adapter).

    python -m launchers.export runs/a/checkpoints/best --out=runs/a/hf-best
    python -m launchers.export runs/a/checkpoints/step_200 --out=/models/my-rm

The model is rebuilt from the checkpoint's own operative_config.gin and loaded from the
checkpoint (verified first), then exported as `Trainer.export_hf=True` does at the end of a
run: `*ForSequenceClassification` for a reward model, `*ForCausalLM` for SFT and DPO.
"""

import pathlib
import tempfile

from absl import flags

from launchers import cli

flags.DEFINE_string("out", None, "The HF directory to write (replaced if it exists).")
FLAGS = flags.FLAGS


def export(checkpoint: pathlib.Path, out: pathlib.Path) -> pathlib.Path:
    """Exports `checkpoint` (a step folder, or <run>/checkpoints/best) to `out`."""
    from launchers.train import BUILDS
    from lib import config, distributed
    from lib.checkpointing import CONFIG_FILE, Checkpointer
    from lib.trainer import Trainer

    run_dir = checkpoint.parent.parent
    path = Checkpointer(str(run_dir)).resume_point(
        "best" if checkpoint.name == "best" else str(checkpoint.resolve()))
    config.load([str(path / CONFIG_FILE)], [], builds=BUILDS)
    dist_info = distributed.init()
    try:
        scratch = tempfile.mkdtemp(prefix="gintune-export-")
        trainer = Trainer(scratch, dist_info, Checkpointer(scratch))
        trainer.restore(path)
        trainer.task.export(trainer.model, trainer.tokenizer, out, dist_info.is_main)
    finally:
        distributed.shutdown()
    return path


def main(argv):
    if len(argv) != 2 or not FLAGS.out:
        cli.fail("give one checkpoint folder (or <run>/checkpoints/best) and --out=DIR "
                 "(see --help)")
    from lib.config import ConfigError
    from lib.distributed import StartProblem

    try:
        path = export(pathlib.Path(argv[1]), pathlib.Path(FLAGS.out).resolve())
    except ConfigError as e:  # the checkpoint is found as --resume_from finds one
        cli.fail("; ".join(p.message.split(": ", 1)[-1] if p.message.startswith("--resume_from=")
                           else p.message for p in e.problems))
    except (ValueError, OSError, StartProblem) as e:
        cli.fail(str(e))
    print(f"exported {path} to {pathlib.Path(FLAGS.out).resolve()}")
    return 0


if __name__ == "__main__":
    cli.run(main)
