"""Padding-free batches against padded ones, for the reward model and for SFT, side by side.

    python -m benchmarks.packing                  # about 12 minutes on 2 CPU cores
    python -m benchmarks.packing --tasks=reward   # one task

For each task, on generated data whose token lengths follow the stated spread (printed):
- paired, in one process (benchmarks/paired_steps.py's method): at every step the contestants
  take their step on the same examples in turn, so drifts in machine speed hit all alike:
  (a) the Trainer at its defaults (packed), (a_padded) the Trainer with Trainer.pack=False, and
  (b) the hand-written loop with rows padded to the batch's longest (benchmarks/handwritten.py).
  Tokens/s is non-pad tokens over step time, after the warm-up steps.
- separately, each in its own process: the peak RSS of a launcher run at its defaults and of
  the hand-written padded loop.
Targets (issue "Stop paying for padding"): (a) >= 1.3x the tokens/s of (b), peak memory no
higher than (b)'s.

Reward: sides of 64 to 256 tokens, uniform, chosen and rejected drawn independently.
SFT: prompt + completion of 32 to 512 tokens, uniform.
"""

import json
import pathlib
import shutil
import subprocess
import sys
import tempfile
import time

from absl import app, flags

from benchmarks import data
from benchmarks.launches import launcher_run, steady
from benchmarks.reward_throughput import handwritten_run
from launchers import cli

flags.DEFINE_list("tasks", "reward,sft", "tasks to measure: reward, sft")
FLAGS = flags.FLAGS  # --steps and --warmup: benchmarks/reward_throughput.py's flags

SHAPE = dict(num_layers=4, embed_dim=256, num_heads=4, intermediate_dim=688)
TASKS = {
    "reward": {"gin": "gin/benchmarks/reward.gin", "max_length": 256},
    "sft": {"gin": "gin/benchmarks/sft.gin", "max_length": 512},
}


def make_data(task, tmp):
    if task == "reward":
        return {"train": data.make(tmp / "train", 1000, 64, 256, seed=0),
                "eval": data.make(tmp / "eval", 32, 64, 256, seed=1)}
    return {"train": data.make_sft(tmp / "train", 1000, 32, 512, seed=0),
            "eval": data.make_sft(tmp / "eval", 32, 32, 512, seed=1)}


def paired(task, files, steps):
    """Per-step seconds of (a), (a_padded) and (b) alternating on the same examples, the
    non-pad tokens of each step, and each contestant's packing efficiency."""
    from lib import config, distributed
    from lib.checkpointing import Checkpointer
    from lib.trainer import Trainer

    from benchmarks import handwritten

    config.set_search_roots([config.REPO_ROOT])
    dist_info = distributed.init()
    trainers = {}
    for name, pack in (("a", True), ("a_padded", False)):
        config.load([TASKS[task]["gin"]], [
            f"train_files=['{files['train']}']", f"eval_files=['{files['eval']}']",
            f"Trainer.num_steps={steps}", f"Trainer.pack={pack}"],
            builds=("Trainer", "Checkpointer"))
        workdir = tempfile.mkdtemp(prefix="gintune-packing-")
        trainers[name] = Trainer(workdir, dist_info, Checkpointer(workdir))
    model, opt = handwritten.build(**SHAPE, max_length=TASKS[task]["max_length"],
                                   compile_blocks=False,
                                   head="reward" if task == "reward" else "lm")
    if task == "reward":
        b_step = lambda mbs: [handwritten.step(model, opt, mb) for mb in mbs]  # noqa: E731
    else:
        b_step = lambda mbs: [handwritten.sft_step(model, opt, mb["tokens"],  # noqa: E731
                                                   mb["targets"]) for mb in mbs]
    seconds = {"a": [], "a_padded": [], "b": []}
    tokens, computed = [], {"a": 0, "a_padded": 0}
    loaders = {name: iter(t._step_loader()) for name, t in trainers.items()}
    for _ in range(steps):
        batches = {name: next(loader) for name, loader in loaders.items()}
        # (b) takes the padded Trainer's batches: the same examples, padded.
        for name, take_step, mbs in (("a", trainers["a"].train_step, batches["a"]),
                                     ("a_padded", trainers["a_padded"].train_step,
                                      batches["a_padded"]),
                                     ("b", b_step, batches["a_padded"])):
            t0 = time.perf_counter()
            take_step(mbs)
            seconds[name].append(time.perf_counter() - t0)
        tokens.append(sum(mb["num_tokens"] for mb in batches["a"]))
        for name in computed:
            computed[name] += sum(mb["computed_tokens"] for mb in batches[name])
    distributed.shutdown()
    return seconds, tokens, {name: sum(tokens) / c for name, c in computed.items()}


def lengths(task, files):
    from lib.data.tokenizer import Tokenizer

    tok = Tokenizer(data.DEMO)
    if task == "reward":
        from lib.data.encoding import encode_pairs
        from lib.data.sources import read_pairs

        pairs, _ = encode_pairs(read_pairs(files["train"]), tok, 256, "error")
        return data.length_report([len(p.chosen) for p in pairs],
                                  [len(p.rejected) for p in pairs])
    from lib.data.sft_data import build_sft_data

    examples = build_sft_data(tok, train_files=[files["train"]], eval_files=[files["eval"]],
                              max_length=512, overlength_policy="error").train
    return data.length_report([len(e.tokens) for e in examples])


def measure(task, steps, warmup):
    tmp = pathlib.Path(tempfile.mkdtemp(prefix=f"gintune-packing-{task}-"))
    files = make_data(task, tmp)
    report = {"lengths": lengths(task, files)}
    print(f"{task}: lengths {report['lengths']}", file=sys.stderr)
    # Separate processes first: a child's peak RSS counts its parent's at the fork, so the
    # paired run's Trainers, built in this process, would set a floor under every figure.
    shape = dict(SHAPE, max_length=TASKS[task]["max_length"], task=task)
    report["separate_processes"] = {
        "a_launcher": launcher_run(tmp / "a", files, steps, warmup,
                                   gin_file=TASKS[task]["gin"])[0],
        "b_handwritten": handwritten_run(files, steps, warmup, **shape)}
    seconds, tokens, efficiency = paired(task, files, steps)
    report["paired_in_process"] = {name: steady(s, tokens, warmup)
                                   for name, s in seconds.items()}
    report["packing_efficiency"] = {"a": efficiency["a"], "a_padded and b": efficiency["a_padded"]}
    tps = {k: v["tokens_per_s"] for k, v in report["paired_in_process"].items()}
    sep = report["separate_processes"]
    report["ratios"] = {
        "paired: a/b tokens_per_s (target >= 1.3)": tps["a"] / tps["b"],
        "paired: a/a_padded tokens_per_s": tps["a"] / tps["a_padded"],
        "paired: a_padded/b tokens_per_s": tps["a_padded"] / tps["b"],
        "separate: a/b tokens_per_s": sep["a_launcher"]["tokens_per_s"]
        / sep["b_handwritten"]["tokens_per_s"],
        "separate: a/b peak_rss (target <= 1.0)": sep["a_launcher"]["peak_rss_mb"]
        / sep["b_handwritten"]["peak_rss_mb"],
    }
    shutil.rmtree(tmp, ignore_errors=True)
    return report


def main(argv):
    from benchmarks.reward_throughput import _machine

    report = {"machine": _machine(), "steps": FLAGS.steps, "warmup": FLAGS.warmup}
    for task in FLAGS.tasks:
        if task not in TASKS:
            raise app.UsageError(f"--tasks: {task!r}; valid: {', '.join(TASKS)}")
    if len(FLAGS.tasks) > 1:  # one process per task, for the reason measure() gives
        for task in FLAGS.tasks:
            out = subprocess.run([sys.executable, "-m", "benchmarks.packing", f"--tasks={task}",
                                  f"--steps={FLAGS.steps}", f"--warmup={FLAGS.warmup}"],
                                 stdout=subprocess.PIPE, check=True, text=True).stdout
            report[task] = json.loads(out)[task]
    else:
        report[FLAGS.tasks[0]] = measure(FLAGS.tasks[0], FLAGS.steps, FLAGS.warmup)
    print(json.dumps(report, indent=2))


if __name__ == "__main__":
    cli.run(main)  # ends as the launchers do: see launchers/cli.exit_process
