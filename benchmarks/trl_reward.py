"""Reference point: TRL's RewardTrainer at its defaults on the same architecture and data.

    python -m benchmarks.trl_reward --data=pairs.jsonl --steps=40

Only the batch size (16 pairs), the step count, max_length (256, as ours) and the output folder
are set, plus bf16 off on a CPU (TRL's default bf16 needs a GPU); everything else, gradient
checkpointing included, is TRL's default. Prints one JSON line: per-step seconds,
non-pad tokens per step, and whether gradient checkpointing was on.
"""

import json
import tempfile
import time

from absl import app, flags

flags.DEFINE_string("data", None, "pairs.jsonl (prompt/chosen/rejected text)")
flags.DEFINE_integer("steps", 40, "optimizer steps")
FLAGS = flags.FLAGS


def main(argv):
    import datasets
    import torch
    import transformers
    import trl

    from benchmarks.data import DEMO

    tokenizer = transformers.PreTrainedTokenizerFast(
        tokenizer_file=str(DEMO / "tokenizer.json"), bos_token="<|begin_of_text|>",
        eos_token="<|end_of_text|>", pad_token="<|pad|>")
    config = transformers.LlamaConfig(
        vocab_size=512, hidden_size=256, intermediate_size=688, num_hidden_layers=4,
        num_attention_heads=4, num_key_value_heads=4, max_position_embeddings=256,
        num_labels=1, pad_token_id=tokenizer.pad_token_id)
    torch.manual_seed(0)
    model = transformers.LlamaForSequenceClassification(config)
    rows = [json.loads(line) for line in open(FLAGS.data)]
    dataset = datasets.Dataset.from_list(
        [{"chosen": r["prompt"] + " " + r["chosen"], "rejected": r["prompt"] + " " + r["rejected"]}
         for r in rows])
    cpu = {} if torch.cuda.is_available() else {"bf16": False, "use_cpu": True}
    args = trl.RewardConfig(output_dir=tempfile.mkdtemp(), per_device_train_batch_size=16,
                            max_steps=FLAGS.steps, report_to=[], save_strategy="no",
                            logging_steps=10 ** 6, max_length=256, **cpu)
    trainer = trl.RewardTrainer(model=model, args=args, train_dataset=dataset,
                                processing_class=tokenizer)
    collate, tokens = trainer.data_collator, []

    def counting_collator(features):
        batch = collate(features)
        mask = [v for k, v in batch.items() if "attention_mask" in k]
        tokens.append(int(sum(m.sum() for m in mask)))
        return batch

    trainer.data_collator = counting_collator
    step_s = []

    class Timer(transformers.TrainerCallback):
        def on_step_begin(self, *a, **k):
            self.t0 = time.perf_counter()

        def on_step_end(self, *a, **k):
            step_s.append(time.perf_counter() - self.t0)

    trainer.add_callback(Timer())
    trainer.train()
    print(json.dumps({"step_s": step_s, "tokens": tokens[:len(step_s)],
                      "gc": bool(args.gradient_checkpointing)}))


if __name__ == "__main__":
    app.run(main)
