"""The ceiling: a minimal hand-written PyTorch loop over the same torchtune model, loss,
optimizer and batches as the launcher, with no library around it.

    python -m benchmarks.handwritten_loop --data=pairs.jsonl --steps=40 [--compile]

Prints one JSON line: per-step seconds and non-pad tokens.
"""

import json
import time

import torch
import torch.nn.functional as F
from absl import app, flags

flags.DEFINE_string("data", None, "pairs.jsonl")
flags.DEFINE_integer("steps", 40, "optimizer steps")
flags.DEFINE_integer("batch_size", 16, "pairs per step")
flags.DEFINE_integer("max_length", 256, "tokens per side")
flags.DEFINE_integer("num_layers", 4, "")
flags.DEFINE_integer("embed_dim", 256, "")
flags.DEFINE_integer("num_heads", 4, "")
flags.DEFINE_integer("intermediate_dim", 688, "")
flags.DEFINE_bool("compile", False, "torch.compile each block")
FLAGS = flags.FLAGS


def main(argv):
    from torchtune.models.llama3 import llama3

    from lib.data.batching import PairSchedule, collate
    from lib.data.encoding import encode_pairs
    from lib.data.sources import read_pairs
    from lib.data.tokenizer import Tokenizer

    from benchmarks.data import DEMO

    tokenizer = Tokenizer(DEMO)
    pairs, _ = encode_pairs(read_pairs(FLAGS.data), tokenizer, FLAGS.max_length, "truncate")
    schedule = PairSchedule(len(pairs), FLAGS.batch_size, 0, 1, FLAGS.batch_size, seed=0)
    torch.manual_seed(0)
    model = llama3(vocab_size=512, num_layers=FLAGS.num_layers, num_heads=FLAGS.num_heads,
                   num_kv_heads=FLAGS.num_heads, embed_dim=FLAGS.embed_dim,
                   max_seq_len=FLAGS.max_length, intermediate_dim=FLAGS.intermediate_dim)
    model.output = torch.nn.Linear(FLAGS.embed_dim, 1, bias=False)
    if FLAGS.compile:
        for layer in model.layers:
            layer.forward = torch.compile(layer.forward)  # as lib/parallel.py does
    params = [p for p in model.parameters()]
    opt = torch.optim.AdamW([{"params": [p for p in params if p.ndim >= 2], "weight_decay": 0.01},
                             {"params": [p for p in params if p.ndim < 2], "weight_decay": 0.0}],
                            lr=1e-4)
    times, tokens = [], []
    for step in range(FLAGS.steps):
        t0 = time.perf_counter()
        batch = collate([pairs[i] for i in schedule.micro_batches(step)[0]], tokenizer.pad_id)
        mask = batch["attention_mask"]
        out = model(batch["tokens"])
        last = (torch.arange(mask.shape[1]) * mask).argmax(-1)
        rewards = out[torch.arange(out.shape[0]), last, 0]
        n = rewards.shape[0] // 2
        loss = -F.logsigmoid(rewards[:n] - rewards[n:]).mean()
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        opt.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - t0)
        tokens.append(batch["num_tokens"])
    print(json.dumps({"step_s": times, "tokens": tokens}))


if __name__ == "__main__":
    app.run(main)
