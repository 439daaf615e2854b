"""Reward-model training throughput, three ways side by side in one run, with ratios.

    python -m benchmarks.reward_throughput              # about 20 minutes on 2 CPU cores
    python -m benchmarks.reward_throughput --preset=gpu # a CUDA GPU: benchmarks/gpu_checks.py

(a) our launcher (`python -m launchers.train`, gin/benchmarks/reward.gin), eager and with
    fsdp.compile_blocks=True;
(b) a minimal hand-written loop over the same torchtune model, loss, optimizer and batches
    (benchmarks/handwritten.py): the practical ceiling;
(c) TRL's RewardTrainer on the same architecture through transformers, at TRL's defaults, when
    trl is installed (benchmarks/trl_reward.py).
Measured two ways. Paired, in one process (benchmarks/paired_steps.py): the Trainer's step and
the hand-written step alternate on the same examples, which cancels the machine's drift; this
decides the (a)/(b) speed ratios. The Trainer's step runs both packed, as at its defaults, and
padded (Trainer.pack=False) on exactly (b)'s batches: padded against (b) is the Trainer's own
cost, which the targets bound; packed against (b) adds what packing saves. Separately, each in
its own process, repeated and interleaved: steady-state tokens/s (non-pad tokens of chosen +
rejected, after the warm-up steps), median step time, peak RSS, and for (a) the time from
process start to the first optimizer step. Then: MFU, the wall time of the config-only commands,
throughput against sequence length and batch size, and checkpoint save time (sync and async)
against the disk's sequential write speed.

The GPU preset (gin/benchmarks/reward_gpu.gin) runs (a) only: benchmarks/gpu_checks.py says
what, in which order (a preflight of the GPU's process group and a matmul, then bf16 and fp32,
compiled and eager, packed, a preemption and resume), with MFU against the GPU's datasheet bf16
peak and against a bf16 matmul measured on it.
"""

import json
import os
import pathlib
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

from absl import app, flags

from benchmarks import data, mfu
from benchmarks.launches import PY, launcher_run, run_measured, steady

flags.DEFINE_enum("preset", "cpu", ["cpu", "gpu"], "cpu: 4 layers, width 256, 64 to 256 "
                  "tokens; gpu: Llama 3.2 1B-shaped, 256 to 1,024 tokens, bf16, compiled")
flags.DEFINE_integer("steps", 30, "optimizer steps per measured run (a multiple of 10)")
flags.DEFINE_integer("warmup", 10, "steps left out of the steady state (a multiple of 10)")
flags.DEFINE_integer("repeats", 3, "separate-process runs of (a) and (b), eager and "
                     "compiled, interleaved; medians are reported")
flags.DEFINE_bool("scaling", True, "also measure sequence-length and batch-size scaling")
flags.DEFINE_bool("checkpoints", True, "also measure checkpoint save time")
flags.DEFINE_float("peak_tflops", None, "the GPU preset's peak for MFU, where the device's "
                   "name is not in benchmarks/mfu.py's datasheet table")
flags.DEFINE_float("budget_s", None, "--preset=gpu: start a check only while more time is "
                   "left than a check of its kind is expected to take, and kill a launch 60 s "
                   "after the budget ends (benchmarks/gpu_checks.py)")
flags.DEFINE_string("out", None, "--preset=gpu: also write the report here, before and after "
                    "every check")
flags.DEFINE_bool("rehearse", False, "--preset=gpu: run the GPU sequence on the CPU with the CPU "
                  "preset's model, to check the sequence (its figures say nothing of a GPU)")
FLAGS = flags.FLAGS


def handwritten_run(files, steps, warmup, compile_blocks=False, **shape):
    cmd = [PY, "-m", "benchmarks.handwritten_loop", f"--data={files['train']}",
           f"--steps={steps}", *(f"--{k}={v}" for k, v in shape.items())]
    if compile_blocks:
        cmd.append("--compile")
    out, err, rc, peak, wall, _ = run_measured(cmd)
    if rc != 0:
        raise RuntimeError(f"hand-written loop failed:\n{err[-3000:]}")
    res = json.loads(out.strip().splitlines()[-1])
    result = steady(res["step_s"], res["tokens"], warmup)
    result.update(peak_rss_mb=peak, wall_s=wall)
    return result


def paired_run(files, steps, warmup, runs="a,a_compiled,a_padded,a_padded_compiled,b,b_compiled",
               env=None):
    """benchmarks/paired_steps.py in its own process, by default (a) packed and padded and (b),
    each eager and compiled: each contestant's steady figures, computed tokens (padding
    included) and minor page faults per step."""
    out, err, rc, *_ = run_measured([
        PY, "-m", "benchmarks.paired_steps", f"--data={files['train']}",
        f"--eval_data={files['eval']}", f"--steps={steps}", f"--runs={runs}"], env=env)
    if rc != 0:
        raise RuntimeError(f"paired steps failed:\n{err[-3000:]}")
    res = json.loads(out.strip().splitlines()[-1])
    report = {}
    for name, seconds in res["step_s"].items():
        report[name] = steady(seconds, res["tokens"], warmup)
        for key in ("computed_tokens", "minor_faults"):
            report[name][f"{key}_per_step"] = statistics.mean(res[key][name][warmup:])
    return report


def trl_run(files, steps, warmup):
    try:
        import trl  # noqa: F401
    except ImportError:
        return None
    out, err, rc, peak, wall, _ = run_measured(
        [PY, "-m", "benchmarks.trl_reward", f"--data={files['train']}", f"--steps={steps}"])
    if rc != 0:
        return {"error": err[-2000:]}
    res = json.loads(out.strip().splitlines()[-1])
    result = steady(res["step_s"], res["tokens"], warmup)
    result.update(peak_rss_mb=peak, wall_s=wall, gradient_checkpointing=res["gc"])
    return result


def config_only_times():
    out = {}
    for name, cmd in {
        "validate_only": [PY, "-m", "launchers.train", "--gin_file=gin/reward.gin",
                          "--validate_only"],
        "configurables": [PY, "-m", "launchers.configurables"],
    }.items():
        walls = [run_measured(cmd)[4] for _ in range(3)]
        out[name] = statistics.median(walls)
    probe = ("import time,sys; t=time.perf_counter(); import torchtune; "
             "print(time.perf_counter()-t)")
    out["import_torchtune_alone"] = float(subprocess.run([PY, "-c", probe], capture_output=True,
                                                         text=True).stdout.strip())
    return out


def disk_write_mb_s(directory, size_mb=256):
    path = pathlib.Path(directory) / "ddtest"
    block = os.urandom(1 << 20)
    t0 = time.perf_counter()
    with open(path, "wb") as f:
        for _ in range(size_mb):
            f.write(block)
        f.flush()
        os.fsync(f.fileno())
    speed = size_mb / (time.perf_counter() - t0)
    path.unlink()
    return speed


def checkpoint_times(tmp, files):
    result = {"disk_write_mb_s": disk_write_mb_s(tmp)}
    for mode in ("sync", "async"):
        workdir = tmp / f"ckpt_{mode}"
        _, records = launcher_run(workdir, files, 20, 10, "Trainer.checkpoint_every=4",
                                  "Checkpointer.keep_last=0",
                                  f"Checkpointer.async_save={mode == 'async'}")
        blocked = [r["checkpoint/blocked_s"] for r in records if "checkpoint/blocked_s" in r]
        size_mb = sum(f.stat().st_size for f in (workdir / "checkpoints" / "step_20").rglob("*")
                      if f.is_file()) / 2 ** 20
        result[mode] = {"blocked_s_median": statistics.median(blocked[1:] or blocked),
                        "checkpoint_mb": size_mb}
    return result


def main(argv):
    steps, warmup = FLAGS.steps, FLAGS.warmup
    if FLAGS.preset == "gpu":
        return gpu_main(steps, warmup)
    tmp = pathlib.Path(tempfile.mkdtemp(prefix="gintune-bench-"))
    files = {"train": data.make(tmp / "train", 2000, seed=0),
             "eval": data.make(tmp / "eval", 64, seed=1)}
    report = {"machine": _machine(), "steps": steps, "warmup": warmup}
    print(f"data in {tmp}; {steps} steps, first {warmup} left out", file=sys.stderr)

    paired = report["paired_in_process"] = paired_run(files, steps, warmup)
    runs = {"b_handwritten": [], "a_launcher": [], "b_handwritten_compiled": [],
            "a_launcher_compiled": []}
    for i in range(FLAGS.repeats):  # interleaved, so drifts in machine speed hit all alike
        runs["b_handwritten"].append(handwritten_run(files, steps, warmup))
        runs["a_launcher"].append(launcher_run(tmp / f"a{i}", files, steps, warmup)[0])
        runs["b_handwritten_compiled"].append(
            handwritten_run(files, steps, warmup, compile_blocks=True))
        runs["a_launcher_compiled"].append(launcher_run(
            tmp / f"ac{i}", files, steps, warmup, "fsdp.compile_blocks=True")[0])
    report.update({name: _median(results) for name, results in runs.items()})
    report["c_trl"] = trl_run(files, steps, warmup)
    a, b = report["a_launcher"], report["b_handwritten"]
    tps = lambda name: paired[name]["tokens_per_s"]  # noqa: E731
    report["ratios"] = {
        "paired: a padded / b tokens_per_s (target >= 0.97)": tps("a_padded") / tps("b"),
        "paired: a padded compiled / b eager tokens_per_s (target >= 1.10)":
            tps("a_padded_compiled") / tps("b"),
        "paired: b compiled / b eager tokens_per_s": tps("b_compiled") / tps("b"),
        "paired: a packed / b tokens_per_s": tps("a") / tps("b"),
        "paired: a packed compiled / b eager tokens_per_s": tps("a_compiled") / tps("b"),
        "separate: a/b tokens_per_s": a["tokens_per_s"] / b["tokens_per_s"],
        "separate: a/b peak_rss (target <= 1.1)": a["peak_rss_mb"] / b["peak_rss_mb"],
        "separate: a compiled / b eager tokens_per_s":
            report["a_launcher_compiled"]["tokens_per_s"] / b["tokens_per_s"],
        "separate: b compiled / b eager tokens_per_s":
            report["b_handwritten_compiled"]["tokens_per_s"] / b["tokens_per_s"],
    }
    c = report["c_trl"]
    if c and "tokens_per_s" in c:
        report["ratios"]["separate: a/c tokens_per_s (target > 1)"] = (
            a["tokens_per_s"] / c["tokens_per_s"])
    import torch

    peak = mfu.measured_matmul_tflops(torch.device("cpu"), torch.float32)
    report["mfu"] = {"measured_fp32_matmul_tflops": peak, **{
        f"{name} vs measured matmul": a["flops_per_token"] * report[name]["tokens_per_s"]
        / (peak * 1e12) for name in ("a_launcher", "b_handwritten", "a_launcher_compiled")}}
    report["config_only_wall_s"] = config_only_times()
    if FLAGS.scaling:
        report["scaling"] = scaling(tmp, files, steps, warmup)
    if FLAGS.checkpoints:
        report["checkpoint"] = checkpoint_times(tmp, files)
    print(json.dumps(report, indent=2))
    shutil.rmtree(tmp, ignore_errors=True)  # data, run folders and their checkpoints


def gpu_main(steps, warmup):
    from benchmarks import gpu_checks

    return gpu_checks.main(steps, warmup, FLAGS.budget_s, FLAGS.out, FLAGS.rehearse,
                           FLAGS.peak_tflops)


def _median(runs):
    out = {k: statistics.median(r[k] for r in runs) for k in runs[0]}
    out["repeats"] = {k: [round(r[k], 1) for r in runs] for k in ("tokens_per_s", "peak_rss_mb")}
    return out


def scaling(tmp, files, steps, warmup):
    out = {"seq_len": {}, "batch_size": {}}
    for length in (64, 128, 256):
        fixed = {"train": data.make(tmp / f"len{length}", 800, length, length, seed=2),
                 "eval": files["eval"]}
        res, _ = launcher_run(tmp / f"seq{length}", fixed, 20, 10)
        out["seq_len"][length] = round(res["tokens_per_s"])
    for batch in (8, 16, 32):
        res, _ = launcher_run(tmp / f"bs{batch}", files, 20, 10,
                              f"Trainer.global_batch_size={batch}",
                              f"Trainer.micro_batch_size={batch}")
        out["batch_size"][batch] = round(res["tokens_per_s"])
    return out


def _machine():
    import platform

    import torch

    return {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
            "threads": torch.get_num_threads(), "torch": torch.__version__,
            "cuda": torch.cuda.get_device_name() if torch.cuda.is_available() else None}


if __name__ == "__main__":
    app.run(main)
