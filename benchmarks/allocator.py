"""Why padded CPU batches cost more than their extra tokens: glibc's malloc hands much of a
padded step's freed activation memory back to the kernel, and the next step pays a page fault
for every 4 KiB of it again. Each figure is measured twice, in separate processes: with malloc
at its defaults, and with malloc told to keep freed memory (KEEP_FREED_MEMORY, glibc's
documented tunables).

    python -m benchmarks.allocator     # about 8 minutes on 2 CPU cores

- paired, in one process (benchmarks/paired_steps.py): the Trainer packed (a) and padded
  (a_padded) on the same examples (64 to 256 tokens a side, as benchmarks/packing.py): tokens/s,
  the tokens each computes (padding included) and minor page faults per step. With malloc
  keeping memory, a over a_padded in tokens/s should come down to the ratio of computed tokens.
- separately, launcher runs at the benchmark config's defaults (16 pairs, 64 to 256 tokens),
  with fixed 128- and 256-token pairs, and with 32 pairs a step (the throughput benchmark's
  scaling runs drop at 256 tokens and at 32 pairs): tokens/s, model FLOP/s (benchmarks/mfu.py's
  count: attention's share grows with length), peak RSS, and the minor page faults of the whole
  run, start-up included.
"""

import json
import pathlib
import shutil
import sys
import tempfile

from absl import flags

from benchmarks import data
from benchmarks.launches import launcher_run
from benchmarks.reward_throughput import _machine, paired_run
from launchers import cli

FLAGS = flags.FLAGS  # --steps and --warmup: benchmarks/reward_throughput.py's flags

# mmap only above 1 GB, never trim the heap: freed memory stays mapped for the next step.
KEEP_FREED_MEMORY = {"MALLOC_MMAP_THRESHOLD_": str(2 ** 30),
                     "MALLOC_TRIM_THRESHOLD_": str(2 ** 40), "MALLOC_TOP_PAD_": str(2 ** 30)}
ALLOCATORS = {"glibc defaults": {}, "keep freed memory": KEEP_FREED_MEMORY}


def paired(files, steps, warmup, env):
    report = paired_run(files, steps, warmup, runs="a,a_padded", env=env)
    report["a/a_padded tokens_per_s"] = (report["a"]["tokens_per_s"]
                                         / report["a_padded"]["tokens_per_s"])
    report["a_padded/a computed tokens"] = (report["a_padded"]["computed_tokens_per_step"]
                                            / report["a"]["computed_tokens_per_step"])
    return report


def main(argv):
    tmp = pathlib.Path(tempfile.mkdtemp(prefix="gintune-allocator-"))
    files = {"train": data.make(tmp / "train", 1000, 64, 256, seed=0),
             "eval": data.make(tmp / "eval", 32, 64, 256, seed=1)}
    fixed = {n: {"train": data.make(tmp / f"len{n}", 800, n, n, seed=2), "eval": files["eval"]}
             for n in (128, 256)}
    launches = {"defaults": (files, ()), "128-token pairs": (fixed[128], ()),
                "256-token pairs": (fixed[256], ()),
                "32 pairs a step": (files, ("Trainer.global_batch_size=32",
                                            "Trainer.micro_batch_size=32"))}
    report = {"machine": _machine(), "steps": FLAGS.steps, "warmup": FLAGS.warmup,
              "keep_freed_memory": KEEP_FREED_MEMORY, "paired": {}, "launcher": {}}
    for allocator, env in ALLOCATORS.items():
        print(f"{allocator}: paired", file=sys.stderr, flush=True)
        report["paired"][allocator] = paired(files, FLAGS.steps, FLAGS.warmup, env)
    for case, (case_files, bindings) in launches.items():
        row = report["launcher"][case] = {}
        for allocator, env in ALLOCATORS.items():  # interleaved, so a drift hits both alike
            print(f"{allocator}: launcher, {case}", file=sys.stderr, flush=True)
            workdir = tmp / f"{case}-{allocator}".replace(" ", "_")
            res, _ = launcher_run(workdir, case_files, FLAGS.steps, FLAGS.warmup, *bindings,
                                  env=env)
            row[allocator] = {"tokens_per_s": round(res["tokens_per_s"]),
                              "model_gflop_per_s": round(res["tokens_per_s"]
                                                         * res["flops_per_token"] / 1e9, 1),
                              "minor_faults_whole_run": res["minor_faults"],
                              "peak_rss_mb": round(res["peak_rss_mb"])}
        row["tokens_per_s ratio"] = (row["keep freed memory"]["tokens_per_s"]
                                     / row["glibc defaults"]["tokens_per_s"])
    shutil.rmtree(tmp, ignore_errors=True)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    cli.run(main)  # ends as the launchers do: see launchers/cli.exit_process
