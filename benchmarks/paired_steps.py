"""The launcher's training step and the hand-written one, in one process, step by step: each
contestant takes its step on the same batch in turn, so a change in machine speed (several
percent from run to run on a shared 2-core machine) hits all of them alike.

    python -m benchmarks.paired_steps --data=pairs.jsonl --eval_data=eval.jsonl \
        --runs=a,a_compiled,b,b_compiled

a: the Trainer built from gin/benchmarks/reward.gin through the library's config checks, its
   `train_step` on its own batches, packed as at its defaults (a_compiled: with
   fsdp.compile_blocks=True); a_padded, a_padded_compiled: the same with Trainer.pack=False, so
   on exactly the batches (b) takes; b: benchmarks/handwritten.py's model, optimizer and step
   (b_compiled: each block compiled the same way), on the same examples padded to the batch's
   longest. (a_padded)/(b) is the Trainer's own cost; (a)/(b) adds what packing saves (see
   benchmarks/packing.py). Prints one JSON line: per-step seconds, computed tokens (padding
   included) and minor page faults of each contestant, and the non-pad tokens of each step,
   the same examples for all. What this leaves out of (a), next to a launcher run, is
   start-up, W&B and the reports every 10 steps.
"""

import json
import resource
import tempfile
import time

from absl import app, flags

from launchers import cli

flags.DEFINE_string("data", None, "training pairs.jsonl")
flags.DEFINE_string("eval_data", None, "eval pairs.jsonl")
flags.DEFINE_integer("steps", 30, "optimizer steps of each contestant")
CONTESTANTS = ("a", "a_compiled", "a_padded", "a_padded_compiled", "b", "b_compiled")
flags.DEFINE_list("runs", "a,b", "contestants: " + ", ".join(CONTESTANTS))
flags.register_validator("runs", lambda runs: set(runs) <= set(CONTESTANTS),
                         "contestants are " + ", ".join(CONTESTANTS))
FLAGS = flags.FLAGS


def main(argv):
    from lib import config, distributed
    from lib.checkpointing import Checkpointer
    from lib.data.batching import collate
    from lib.trainer import Trainer

    from benchmarks import handwritten

    config.set_search_roots([config.REPO_ROOT])
    dist_info = distributed.init()
    runs = list(dict.fromkeys(FLAGS.runs))
    if not any(name.startswith("a") for name in runs):
        raise app.UsageError("--runs needs a Trainer (a, a_compiled, a_padded or "
                             "a_padded_compiled): it provides the examples")
    steppers, loaders = {}, {}
    for name in runs:
        compiled = name.endswith("_compiled")
        if name.startswith("a"):
            config.load(["gin/benchmarks/reward.gin"], [
                f"train_files=['{FLAGS.data}']", f"eval_files=['{FLAGS.eval_data}']",
                f"Trainer.num_steps={FLAGS.steps}", f"fsdp.compile_blocks={compiled}",
                f"Trainer.pack={not name.startswith('a_padded')}"],
                builds=("Trainer", "Checkpointer"))
            workdir = tempfile.mkdtemp(prefix="gintune-paired-")
            trainer = Trainer(workdir, dist_info, Checkpointer(workdir))
            steppers[name], loaders[name] = trainer.train_step, iter(trainer._step_loader())
            task = trainer.task  # every Trainer's loader yields the same examples each step
        else:
            model, opt = handwritten.build(4, 256, 4, 688, 256, compiled)
            steppers[name] = (lambda m, o: lambda mbs: [handwritten.step(m, o, b)
                                                         for b in mbs])(model, opt)
    seconds, computed, faults = ({name: [] for name in steppers} for _ in range(3))
    tokens = []
    for step in range(FLAGS.steps):
        batches = {name: next(loader) for name, loader in loaders.items()}
        padded = [collate([task.data.train[j] for j in indices], task.tokenizer.pad_id)
                  for indices in task.schedule.micro_batches(step)]
        for name, take_step in steppers.items():
            micro_batches = batches.get(name, padded)
            faults0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
            t0 = time.perf_counter()
            take_step(micro_batches)
            seconds[name].append(time.perf_counter() - t0)
            faults[name].append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - faults0)
            computed[name].append(sum(b["computed_tokens"] for b in micro_batches))
        tokens.append(sum(b["num_tokens"] for b in padded))
    distributed.shutdown()
    print(json.dumps({"step_s": seconds, "tokens": tokens, "computed_tokens": computed,
                      "minor_faults": faults}))


if __name__ == "__main__":
    cli.run(main)  # ends as the launchers do: see launchers/cli.exit_process
