"""A table of runs: the config values that differ between them, and their final/best metrics.

    python -m launchers.runs runs/                        # every run folder under runs/
    python -m launchers.runs runs/a runs/b --where lr=0.0001 --sort=-eval/accuracy
    python -m launchers.runs runs/ --csv=table.csv
    python -m launchers.runs --wandb_offline runs/*/wandb/offline-run-*
    python -m launchers.runs --wandb_project=ENTITY/PROJECT   # online, through the W&B API

It reads only the run folders (operative_config.gin, metrics.jsonl), so it works offline.
"""

import ast

from absl import flags

from launchers import cli

flags.DEFINE_multi_string("where", [], "Keep runs whose config has KEY=VALUE (a gin name such "
                          "as lr or Trainer.seed; VALUE as in a .gin file). Repeatable (and).")
flags.DEFINE_string("sort", None, "Sort by a metric or config column; a leading '-' sorts "
                    "descending (e.g. -eval/accuracy).")
flags.DEFINE_list("metrics", ["eval/accuracy", "eval/loss", "train/loss"], "Metrics to show, "
                  "final and best (max for accuracy/margin, min otherwise).")
flags.DEFINE_string("csv", None, "Also write the table to this CSV file.")
flags.DEFINE_bool("wandb_offline", False, "The arguments are offline W&B run folders.")
flags.DEFINE_string("wandb_project", None, "Read the runs of ENTITY/PROJECT from W&B online.")
FLAGS = flags.FLAGS


def main(argv):
    from lib import runs

    paths = argv[1:] or ["runs"]
    try:
        if FLAGS.wandb_project:
            records = _from_wandb_api(runs, FLAGS.wandb_project)
        elif FLAGS.wandb_offline:
            records = [runs.from_wandb_offline(p) for p in runs.find_wandb_offline(paths)]
        else:
            records = [runs.from_run_dir(p) for p in runs.find_runs(paths)]
        if not records:
            cli.fail(f"no runs in {', '.join(paths)}: a run folder holds operative_config.gin "
                     "and metrics.jsonl")
        where = [_condition(w) for w in FLAGS.where]
        if FLAGS["metrics"].present:
            unknown = [m for m in FLAGS.metrics
                       if not any(m in r.final or m in r.best for r in records)]
            if unknown:
                cli.fail(f"--metrics: no run records {', '.join(unknown)}")
        header, rows = runs.table(records, FLAGS.metrics, where, FLAGS.sort)
    except (OSError, ValueError) as e:
        cli.fail(str(e))
    if FLAGS.csv:
        try:
            with open(FLAGS.csv, "w", newline="") as f:
                f.write(runs.to_csv(header, rows))
        except OSError as e:
            cli.fail(f"--csv={FLAGS.csv}: {e.strerror}")
    print(runs.format_table(header, rows))
    return 0


def _from_wandb_api(runs, project: str):
    try:
        return runs.from_wandb_api(project)
    except Exception as e:  # wandb's UsageError (no API key), CommError (no network), ...
        cli.fail(f"--wandb_project={project}: {type(e).__name__}: {e}")


def _condition(text: str):
    key, eq, value = text.partition("=")
    if not eq or not key.strip():
        cli.fail(f"--where={text}: give KEY=VALUE, such as --where=lr=0.0001")
    try:
        return key.strip(), ast.literal_eval(value.strip())
    except (ValueError, SyntaxError):
        return key.strip(), value.strip()


if __name__ == "__main__":
    cli.run(main)
