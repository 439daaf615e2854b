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

    if FLAGS.wandb_project:
        records = runs.from_wandb_api(FLAGS.wandb_project)
    elif FLAGS.wandb_offline:
        try:
            records = [runs.from_wandb_offline(p)
                       for p in runs.find_wandb_offline(argv[1:] or ["runs"])]
        except (FileNotFoundError, ValueError) as e:
            cli.fail(str(e))
    else:
        try:
            records = [runs.from_run_dir(p) for p in runs.find_runs(argv[1:] or ["runs"])]
        except FileNotFoundError as e:
            cli.fail(str(e))
    where = [_condition(w) for w in FLAGS.where]
    header, rows = runs.table(records, FLAGS.metrics, where, FLAGS.sort)
    print(runs.format_table(header, rows))
    if FLAGS.csv:
        with open(FLAGS.csv, "w", newline="") as f:
            f.write(runs.to_csv(header, rows))
    return 0


def _condition(text: str):
    key, _, value = text.partition("=")
    try:
        return key.strip(), ast.literal_eval(value.strip())
    except (ValueError, SyntaxError):
        return key.strip(), value.strip()


if __name__ == "__main__":
    cli.run(main)
