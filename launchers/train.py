"""Trains a model from .gin files.

    python -m launchers.train --gin_file=gin/reward.gin --gin_bindings='lr=1e-4'
    torchrun --nproc_per_node=N -m launchers.train --gin_file=...
    python -m launchers.train --gin_file=... --validate_only

Files apply in order, then bindings in order. The whole config is checked before anything is
built or written; every problem is reported and the exit status is 2. Everything of the run
goes to --workdir (default runs/<name of the first --gin_file>-<YYYYmmdd-HHMMSS>, under the
working directory).
"""

import datetime
import os
import pathlib
import sys

from absl import app, flags, logging

flags.DEFINE_multi_string("gin_file", [], "A .gin file; repeat to apply several in order.")
flags.DEFINE_multi_string("gin_bindings", [], "A binding such as 'lr=1e-4'; repeatable, applied "
                          "after the files in order.")
flags.DEFINE_multi_string("gin_search_path", [], "Where relative --gin_file, include and data "
                          "paths resolve, in order (default: the repository root).")
flags.DEFINE_string("workdir", None, "Where the run's files go (default: "
                    "runs/<config name>-<timestamp>).")
flags.DEFINE_bool("validate_only", False, "Check the config, print it with the provenance of "
                  "every value, and exit 0 (valid) or 2 (problems) without training. The batch "
                  "split is checked for WORLD_SIZE ranks (default 1).")
FLAGS = flags.FLAGS

EXIT_CONFIG_ERROR = 2
# What this launcher builds itself; a binding of anything they never reach does nothing.
BUILDS = ("Trainer", "RunLogger")


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    from lib import config

    config.set_search_roots(FLAGS.gin_search_path or [config.REPO_ROOT])
    if not FLAGS.gin_file:
        _fail("give at least one --gin_file, e.g. --gin_file=gin/reward.gin")
    try:
        cfg = config.load(FLAGS.gin_file, FLAGS.gin_bindings, builds=BUILDS,
                          world_size=int(os.environ.get("WORLD_SIZE", 1)))
    except config.ConfigError as e:
        _fail(str(e))
    for warning in cfg.warnings:
        logging.warning("%s", warning)
    if FLAGS.validate_only:
        print(cfg.effective_text(), end="")
        print(f"config OK: {len(cfg.table.params)} bindings, {len(cfg.table.macros)} macros, "
              f"{len(cfg.files)} files", file=sys.stderr)
        return 0
    _train(cfg, config)


def _train(cfg, config):
    from lib import distributed, reporting
    from lib.trainer import Trainer

    dist_info = distributed.init()
    try:
        try:
            distributed.check_same_config(cfg.effective_text())
            workdir = pathlib.Path(distributed.broadcast_object(_workdir()))
            # Builds tokenizer, data, model, optimizer; writes nothing, so a bad value or a
            # malformed data row leaves no workdir behind.
            trainer = Trainer(str(workdir), dist_info)
        except (ValueError, OSError) as e:
            _fail(str(e))
        if dist_info.is_main:
            workdir.mkdir(parents=True, exist_ok=True)
            _log_to_file(workdir / "train.log")
            logging.info("workdir: %s", workdir)
        distributed.barrier()
        logger = reporting.RunLogger(str(workdir), enabled=dist_info.is_main)
        saved = cfg.saved_text()  # after every component is built
        if dist_info.is_main:
            (workdir / "operative_config.gin").write_text(saved)
        logger.start(workdir.name, saved, config.flat_config(saved))
        try:
            trainer.train(logger, saved)
        finally:
            logger.finish()
    finally:
        distributed.shutdown()


def _workdir() -> str:
    if FLAGS.workdir:
        return str(pathlib.Path(FLAGS.workdir).resolve())
    name = pathlib.Path(FLAGS.gin_file[0]).stem
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    return str(pathlib.Path("runs", f"{name}-{stamp}").resolve())


def _log_to_file(path: pathlib.Path) -> None:
    import logging as pylogging

    handler = pylogging.FileHandler(path)
    handler.setFormatter(pylogging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    pylogging.getLogger().addHandler(handler)


def _fail(message: str):
    if os.environ.get("RANK", "0") == "0":  # the same message on every rank: print it once
        print(f"error: {message}", file=sys.stderr)
    sys.exit(EXIT_CONFIG_ERROR)


if __name__ == "__main__":
    app.run(main)
