"""The ceiling: a minimal hand-written PyTorch loop over the same torchtune model, loss,
optimizer and batches as the launcher, with no library around it; rows padded to the batch's
longest.

    python -m benchmarks.handwritten_loop --data=pairs.jsonl --steps=40 [--compile]
    python -m benchmarks.handwritten_loop --task=sft --data=sft.jsonl --max_length=512

Prints one JSON line: per-step seconds and non-pad tokens.
"""

import json
import time

from absl import app, flags

from benchmarks.handwritten import build, step

flags.DEFINE_enum("task", "reward", ["reward", "sft"], "reward: Bradley-Terry on pairs; "
                  "sft: cross-entropy on prompt-completion examples")
flags.DEFINE_string("data", None, "pairs.jsonl (reward) or prompt-completion jsonl (sft)")
flags.DEFINE_integer("steps", 40, "optimizer steps")
flags.DEFINE_integer("batch_size", 16, "pairs per step")
flags.DEFINE_integer("max_length", 256, "tokens per side")
flags.DEFINE_integer("num_layers", 4, "")
flags.DEFINE_integer("embed_dim", 256, "")
flags.DEFINE_integer("num_heads", 4, "")
flags.DEFINE_integer("intermediate_dim", 688, "")
flags.DEFINE_bool("compile", False, "torch.compile each block")
FLAGS = flags.FLAGS


def sft_main():
    from lib.data.batching import StepSchedule
    from lib.data.sft_data import build_sft_data
    from lib.data.tokenizer import Tokenizer

    from benchmarks.data import DEMO
    from benchmarks.handwritten import build, pad_examples, sft_step

    tokenizer = Tokenizer(DEMO)
    examples = build_sft_data(tokenizer, train_files=[FLAGS.data], eval_files=[FLAGS.data],
                              max_length=FLAGS.max_length).train
    schedule = StepSchedule(len(examples), FLAGS.batch_size, 0, 1, FLAGS.batch_size, seed=0)
    model, opt = build(FLAGS.num_layers, FLAGS.embed_dim, FLAGS.num_heads,
                       FLAGS.intermediate_dim, FLAGS.max_length, FLAGS.compile, head="lm")
    times, tokens = [], []
    for i in range(FLAGS.steps):
        t0 = time.perf_counter()
        batch = [examples[j] for j in schedule.micro_batches(i)[0]]
        sft_step(model, opt, *pad_examples(batch, tokenizer.pad_id))
        times.append(time.perf_counter() - t0)
        tokens.append(sum(len(e.tokens) for e in batch))
    print(json.dumps({"step_s": times, "tokens": tokens}))


def main(argv):
    if FLAGS.task == "sft":
        return sft_main()
    from lib.data.batching import StepSchedule, collate
    from lib.data.encoding import encode_pairs
    from lib.data.sources import read_pairs
    from lib.data.tokenizer import Tokenizer

    from benchmarks.data import DEMO

    tokenizer = Tokenizer(DEMO)
    pairs, _ = encode_pairs(read_pairs(FLAGS.data), tokenizer, FLAGS.max_length, "truncate")
    schedule = StepSchedule(len(pairs), FLAGS.batch_size, 0, 1, FLAGS.batch_size, seed=0)
    model, opt = build(FLAGS.num_layers, FLAGS.embed_dim, FLAGS.num_heads,
                       FLAGS.intermediate_dim, FLAGS.max_length, FLAGS.compile)
    times, tokens = [], []
    for i in range(FLAGS.steps):
        t0 = time.perf_counter()
        batch = collate([pairs[j] for j in schedule.micro_batches(i)[0]], tokenizer.pad_id)
        step(model, opt, batch)
        times.append(time.perf_counter() - t0)
        tokens.append(batch["num_tokens"])
    print(json.dumps({"step_s": times, "tokens": tokens}))


if __name__ == "__main__":
    app.run(main)
