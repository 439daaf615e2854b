"""Writes a checkpoint's model as a Hugging Face directory (and, with LoRA, a PEFT adapter).

    python -m launchers.export runs/a/checkpoints/best --out=runs/a/hf-best
    python -m launchers.export runs/a/checkpoints/step_200 --out=/models/my-rm

The model is rebuilt from the checkpoint's own operative_config.gin and loaded from the
checkpoint (verified first), then exported as `Trainer.export_hf=True` does at the end of a
run: `*ForSequenceClassification` for a reward model, `*ForCausalLM` for SFT and DPO.

`--out` is replaced, so it must be a new folder or an earlier export (a folder holding only
what an export writes); anything else (a run, a folder of other files, the checkpoint's own
folder) is refused before any work, with one `error:` line and status 2.
"""

import pathlib
import shutil
import tempfile
from typing import Optional

from absl import flags

from launchers import cli

flags.DEFINE_string("out", None, "The HF directory to write: a new folder, or an earlier "
                    "export, which is replaced.")
FLAGS = flags.FLAGS


def _out_problem(out: pathlib.Path, checkpoint: pathlib.Path) -> Optional[str]:
    """Why the export must not replace `out` (and, for LoRA, `<out>_adapter`), else None."""
    from lib.models.export import EXPORT_FILES

    checkpoint = checkpoint.resolve()
    if out == checkpoint or checkpoint in out.parents:
        return f"--out={out} is inside the checkpoint {checkpoint}; give a folder outside it"
    for folder in (out, out.with_name(out.name + "_adapter")):
        if folder.exists() and not folder.is_dir():
            return f"--out: {folder} is a file; give a new folder or an earlier export"
        others = sorted(p.name for p in folder.iterdir()
                        if p.name not in EXPORT_FILES) if folder.is_dir() else []
        if others:
            shown = ", ".join(others[:3]) + (f" and {len(others) - 3} more" if others[3:] else "")
            return (f"--out: {folder} holds what an export does not write ({shown}), and an "
                    "export replaces the whole folder; give a new folder or an earlier export")
    return None


def _run_folder_problem(path: pathlib.Path) -> Optional[str]:
    """If `path` is a run folder rather than one of its checkpoints: which to give instead."""
    from lib.checkpointing import Checkpointer

    if not (path / "checkpoints").is_dir():
        return None
    steps = Checkpointer(str(path)).complete_steps()
    have = ", ".join(f"step_{s}" for s in steps) or "none"
    return (f"{path} is a run folder; give one of its checkpoints: {path / 'checkpoints'}/<one "
            f"of: {have}> or {path / 'checkpoints' / 'best'}")


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
    scratch = tempfile.mkdtemp(prefix="gintune-export-")
    try:
        trainer = Trainer(scratch, dist_info, Checkpointer(scratch))
        trainer.restore(path)
        trainer.task.export(trainer.model, trainer.tokenizer, out, dist_info.is_main)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
        distributed.shutdown()
    return path


def main(argv):
    if len(argv) != 2 or not FLAGS.out:
        cli.fail("give one checkpoint folder (or <run>/checkpoints/best) and --out=DIR "
                 "(see --help)")
    from lib.checkpointing import DAMAGED_ADVICE
    from lib.config import ConfigError
    from lib.distributed import StartProblem

    checkpoint, out = pathlib.Path(argv[1]), pathlib.Path(FLAGS.out).resolve()
    problem = _run_folder_problem(checkpoint) or _out_problem(out, checkpoint)
    if problem:
        cli.fail(problem)
    try:
        path = export(checkpoint, out)
    except ConfigError as e:  # the checkpoint is found as --resume_from finds one
        cli.fail("; ".join((p.message.split(": ", 1)[-1] if p.message.startswith("--resume_from=")
                            else p.message).replace(DAMAGED_ADVICE, "export another checkpoint")
                           for p in e.problems))
    except (ValueError, OSError, StartProblem) as e:
        cli.fail(str(e))
    print(f"exported {path} to {out}")
    return 0


if __name__ == "__main__":
    cli.run(main)
