"""Trains a model from .gin files.

    python -m launchers.train --gin_file=gin/reward.gin --gin_bindings='lr=1e-4'
    python -m launchers.torchrun --nproc_per_node=N -m launchers.train --gin_file=...
    python -m launchers.train --gin_file=... --validate_only

Files apply in order, then bindings in order. The whole config is checked before anything is
built or written; every problem is reported and the exit status is 2. Everything of the run
goes to --workdir (default runs/<name of the first --gin_file>-<YYYYmmdd-HHMMSS>, under the
working directory); launching again with the same --workdir resumes from its newest complete
checkpoint. Exit status: see lib/run.py (0 done, 1 a bug, 2 config or data, 3 non-finite loss,
74 checkpoint write failure, 75 stopped by a signal).
"""

import os
import sys

from absl import app, flags, logging

from launchers import cli

flags.DEFINE_multi_string("gin_file", [], "A .gin file; repeat to apply several in order.")
flags.DEFINE_multi_string("gin_bindings", [], "A binding such as 'lr=1e-4'; repeatable, applied "
                          "after the files in order.")
flags.DEFINE_multi_string("gin_search_path", [], "Where relative --gin_file, include and data "
                          "paths resolve, in order, before the directories of $GINTUNE_GIN_PATH "
                          "and, always last, the repository root.")
flags.DEFINE_string("workdir", None, "Where the run's files go (default: "
                    "runs/<config name>-<timestamp>).")
flags.DEFINE_bool("validate_only", False, "Check the config, print it with the provenance of "
                  "every value, and exit 0 (valid) or 2 (problems) without training. The batch "
                  "split is checked for WORLD_SIZE ranks (default 1).")
flags.DEFINE_string("resume_from", "", "A checkpoint step number or path to resume from; by "
                    "default the newest complete checkpoint in --workdir, if any.")
flags.DEFINE_bool("allow_config_change", False, "Resume even though the config changes the "
                  "model, tokenizer, data or its order since the checkpoint.")
FLAGS = flags.FLAGS

# What this launcher builds itself; a binding of anything they never reach does nothing.
BUILDS = ("Trainer", "RunLogger", "Checkpointer")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    from lib import config
    from third_party.torchao_logging import silence_no_triton_warning

    silence_no_triton_warning()
    problems = config.search_path_problems(FLAGS.gin_search_path)
    if problems:
        _fail("; ".join(problems))
    config.set_search_roots(config.search_path(FLAGS.gin_search_path))
    if not FLAGS.gin_file:
        _fail("give at least one --gin_file, e.g. --gin_file=gin/reward.gin")
    world_size = os.environ.get("WORLD_SIZE", "1")
    if not (world_size.isdigit() and int(world_size) >= 1):
        _fail(f"WORLD_SIZE={world_size!r} is not a number of ranks (a whole number >= 1; set by "
              "torchrun, or by hand for --validate_only)")
    try:
        cfg = config.load(FLAGS.gin_file, FLAGS.gin_bindings, builds=BUILDS,
                          world_size=int(world_size))
    except config.ConfigError as e:
        _fail(str(e))
    for warning in cfg.warnings:
        logging.warning("%s", warning)
    if FLAGS.validate_only:
        print(cfg.effective_text(), end="")
        print(f"config OK: {len(cfg.table.params)} bindings, {len(cfg.table.macros)} macros, "
              f"{len(cfg.files)} files", file=sys.stderr)
        return 0
    from lib import run

    try:
        status = run.run(cfg, FLAGS.workdir, FLAGS.gin_file[0], FLAGS.resume_from,
                         FLAGS.allow_config_change, sys.argv)
    except run.RunError as e:
        _fail(str(e), e.status, every_node=e.every_node)
    sys.exit(status)


_fail = cli.fail


if __name__ == "__main__":
    cli.run(main)
