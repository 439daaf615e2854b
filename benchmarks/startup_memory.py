"""Start-up host memory per rank: one process against two ranks that stream their shards.

    python -m benchmarks.startup_memory                # about 2.5 minutes on 2 CPU cores
    python -m benchmarks.startup_memory --task=reward  # a fresh reward head on the base
    python -m benchmarks.startup_memory --task=dpo     # DPO with a frozen reference copy

Writes a Llama 3-shaped Hugging Face checkpoint (fp32 safetensors, made with transformers,
random weights) into a temporary folder and starts a run of the shipped Llama 3.2 1B
experiment config of --task on it (SFT: every weight from the checkpoint; reward: the
checkpoint's base and a freshly initialized reward head; DPO: the policy and a frozen reference
copy, `dpo_task.reference='frozen_copy'`), with one process and with two ranks under
launchers.torchrun (gloo), one training step each. Each rank's resident memory before the
model was built and its peak at the start of training come from the run's summary.json
(`startup/rss_before_model_gb_by_rank`, `startup/peak_rss_gb_by_rank`). The figure compared is
what building the model cost a rank: its peak less its memory before. Target (issue "The first
cluster run must work"): each of the 2 ranks about half the one-process figure.
"""

import json
import pathlib
import subprocess
import sys
import tempfile

from absl import app, flags

flags.DEFINE_integer("hidden", 1024, "hidden size of the generated checkpoint")
flags.DEFINE_integer("layers", 6, "layers of the generated checkpoint")
flags.DEFINE_enum("task", "sft", ["sft", "reward", "dpo"], "the experiment config to start")
FLAGS = flags.FLAGS

REPO = pathlib.Path(__file__).resolve().parent.parent
DEMO = REPO / "assets" / "demo"


def make_checkpoint(directory: pathlib.Path) -> int:
    import shutil

    import torch
    import transformers

    torch.manual_seed(0)
    config = transformers.LlamaConfig(
        vocab_size=512, hidden_size=FLAGS.hidden, intermediate_size=4 * FLAGS.hidden,
        num_hidden_layers=FLAGS.layers, num_attention_heads=16, num_key_value_heads=4,
        max_position_embeddings=2048, rope_theta=500000.0, tie_word_embeddings=False,
        bos_token_id=0, eos_token_id=1, pad_token_id=2)
    model = transformers.LlamaForCausalLM(config)
    model.save_pretrained(directory, safe_serialization=True)
    for name in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(DEMO / name, directory / name)
    return sum(p.numel() for p in model.parameters())


def run(nproc: int, checkpoint: pathlib.Path, tmp: pathlib.Path) -> dict:
    four = tmp / "four.jsonl"
    four.write_text("".join((DEMO / "eval.jsonl").read_text().splitlines(True)[:4]))
    workdir = tmp / f"run-{nproc}"
    launcher = ([sys.executable, "-m", "launchers.torchrun", "--standalone",
                 f"--nproc_per_node={nproc}", "-m", "launchers.train"] if nproc > 1 else
                [sys.executable, "-m", "launchers.train"])
    data = (["--gin_bindings=build_sft_data.columns={'completion': 'chosen'}",
             "--gin_bindings=build_sft_data.max_length=64"] if FLAGS.task == "sft" else
            ["--gin_bindings=build_preference_data.max_length=64"])
    if FLAGS.task == "dpo":
        data.append("--gin_bindings=dpo_task.reference='frozen_copy'")
    args = [f"--gin_file=gin/experiments/llama3_2_1b_{FLAGS.task}.gin",
            f"--gin_bindings=hf_checkpoint_dir='{checkpoint}'",
            f"--gin_bindings=train_files=['{DEMO / 'train.jsonl'}']",
            f"--gin_bindings=eval_files=['{four}']", *data,
            "--gin_bindings=fsdp.param_dtype='float32'",
            "--gin_bindings=Trainer.num_steps=1", "--gin_bindings=Trainer.global_batch_size=2",
            "--gin_bindings=Trainer.micro_batch_size=1",
            "--gin_bindings=build_lr_schedule.warmup_steps=0",
            "--gin_bindings=RunLogger.use_wandb=False", f"--workdir={workdir}"]
    proc = subprocess.run([*launcher, *args], cwd=REPO, capture_output=True, text=True)
    if proc.returncode != 0:
        sys.exit(f"error: the {nproc}-rank run failed:\n{proc.stderr[-3000:]}")
    return json.loads((workdir / "summary.json").read_text())


def main(_):
    with tempfile.TemporaryDirectory(prefix="gintune-startup-") as tmp:
        tmp = pathlib.Path(tmp)
        params = make_checkpoint(tmp / "hf")
        size = sum(f.stat().st_size for f in (tmp / "hf").glob("*.safetensors")) / 2 ** 30
        print(f"checkpoint: {params / 1e6:.1f}M parameters, {size:.3f} GB of safetensors")
        results = {}
        for nproc in (1, 2):
            s = run(nproc, tmp / "hf", tmp)
            before = s["startup/rss_before_model_gb_by_rank"]
            peak = s["startup/peak_rss_gb_by_rank"]
            results[nproc] = [p - b for p, b in zip(peak, before)]
            for rank, (b, p) in enumerate(zip(before, peak)):
                print(f"{nproc} rank(s), rank {rank}: before the model {b:.3f} GB, peak "
                      f"{p:.3f} GB, building cost {p - b:.3f} GB "
                      f"(streamed: {s['startup/streamed_weights']}, rank 0 built the full model: "
                      f"{s['startup/rank_0_built_full_model']})")
        one = results[1][0]
        for rank, cost in enumerate(results[2]):
            print(f"rank {rank} of 2 / one process: {cost / one:.2f}")
        print(json.dumps({"task": FLAGS.task, "checkpoint_gb": round(size, 3),
                          "one_process_gb": round(one, 3),
                          "two_ranks_gb": [round(c, 3) for c in results[2]],
                          "ratios": [round(c / one, 3) for c in results[2]]}))


if __name__ == "__main__":
    app.run(main)
