"""The GPU preset of the throughput benchmark: what a first run on a GPU must show, in order.

    python -m benchmarks.reward_throughput --preset=gpu [--budget_s=540] [--out=checks.json]

Each check is one or more real launches of `python -m launchers.train` on the GPU preset
(gin/benchmarks/reward_gpu.gin: a Llama 3.2 1B-shaped reward model, bf16, compiled blocks):

  bf16_compiled         the preset as shipped: tokens/s, MFU, peak GPU memory, time to step 1
  save_resume           a 4-layer model of the preset's width, sent SIGTERM during step 8 (a
                        checkpoint saved on the GPU at the next step boundary, exit 75),
                        relaunched to step 12, against a straight run to 12: each later step's
                        loss and grad norm, and the save's time
  bf16_eager            the preset with fsdp.compile_blocks=False
  fp32_eager            fsdp.param_dtype='float32' (TF32 matmuls), not compiled
  fp32_compiled         fsdp.param_dtype='float32', compiled
  bf16_compiled_packed  the preset with Trainer.pack=True (padding-free rows)

They run in that order, the most needed first. A check that fails is recorded with its exit
status and the end of its stderr, and the next one runs. With --budget_s, a check starts only
if the time left is more than the longest check so far took; the rest are recorded as skipped.
The report (JSON) is printed at the end and, with --out, rewritten after every check, so a
run cut short keeps what it measured. With no wandb installed, runs log with
RunLogger.use_wandb=False.

--rehearse runs the same sequence on the CPU with the CPU preset's model (gin/benchmarks/
reward.gin) and a few steps, to check the sequence itself; its figures say nothing of a GPU.
"""

import importlib.metadata
import importlib.util
import json
import os
import pathlib
import shutil
import sys
import tempfile
import time

from benchmarks import data, mfu
from benchmarks.launches import launcher_cmd, launcher_run, run_measured

GPU_GIN = "gin/benchmarks/reward_gpu.gin"
CPU_GIN = "gin/benchmarks/reward.gin"
BF16, FP32 = "fsdp.param_dtype='bfloat16'", "fsdp.param_dtype='float32'"
THROUGHPUT = {  # name: bindings over the preset
    "bf16_compiled": (BF16, "fsdp.compile_blocks=True"),
    "bf16_eager": (BF16, "fsdp.compile_blocks=False"),
    "fp32_eager": (FP32, "fsdp.compile_blocks=False"),
    "fp32_compiled": (FP32, "fsdp.compile_blocks=True"),
    "bf16_compiled_packed": (BF16, "fsdp.compile_blocks=True", "Trainer.pack=True"),
}
ORDER = ("bf16_compiled", "save_resume", "bf16_eager", "fp32_eager", "fp32_compiled",
         "bf16_compiled_packed")
SAVE_RESUME = {"steps": 12, "preempt_at": 8, "num_layers": 4}


class Checks:
    def __init__(self, tmp, steps, warmup, budget_s, out, rehearse):
        self.tmp, self.steps, self.warmup = tmp, steps, warmup
        self.budget_s, self.out, self.rehearse = budget_s, out, rehearse
        self.gin_file = CPU_GIN if rehearse else GPU_GIN
        self.t0 = time.perf_counter()
        self.longest = 0.0
        self.extra = [] if importlib.util.find_spec("wandb") else ["RunLogger.use_wandb=False"]
        self.report = {"machine": machine(), "rehearsal_on_cpu": rehearse, "gin_file":
                       self.gin_file, "steps": steps, "warmup": warmup, "checks": {}}

    def files(self):
        lengths = (64, 256) if self.rehearse else (256, 1024)
        return {"train": data.make(self.tmp / "train", 600, *lengths, seed=0),
                "eval": data.make(self.tmp / "eval", 32, *lengths, seed=1)}

    def run(self, name, fn):
        elapsed = time.perf_counter() - self.t0
        if self.budget_s is not None and self.budget_s - elapsed <= self.longest:
            left = max(0.0, self.budget_s - elapsed)
            self.report["checks"][name] = {
                "skipped": f"{left:.0f} s left of the {self.budget_s:.0f} s budget; the longest "
                           f"check so far took {self.longest:.0f} s"}
        else:
            start = time.perf_counter()
            try:
                result = fn()
            except LaunchFailed as e:
                result = {"failed": e.args[0]}
            result["check_wall_s"] = round(time.perf_counter() - start, 1)
            self.longest = max(self.longest, result["check_wall_s"])
            self.report["checks"][name] = result
        self.save()

    def save(self):
        if self.out:
            tmp = pathlib.Path(f"{self.out}.partial")
            tmp.write_text(json.dumps(self.report, indent=2))
            os.replace(tmp, self.out)

    def throughput(self, name, files):
        workdir = self.tmp / name
        try:
            result, records = launcher_run(workdir, files, self.steps, self.warmup,
                                           *THROUGHPUT[name], "Trainer.checkpoint_every=0",
                                           *self.extra, gin_file=self.gin_file)
        except RuntimeError as e:
            raise LaunchFailed(str(e)[-4000:]) from None
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
        # the run's one checkpoint, after its last step: how long it held training up
        result["final_save_blocked_s"] = [r["checkpoint/blocked_s"] for r in records
                                          if "checkpoint/blocked_s" in r]
        return result

    def save_resume(self, files):
        """Straight to step 12, and SIGTERM at 8 then a relaunch to 12: per-step figures."""
        bindings = [BF16, "fsdp.compile_blocks=False",
                    f"llama3_model.num_layers={SAVE_RESUME['num_layers']}",
                    f"Trainer.num_steps={SAVE_RESUME['steps']}", "Trainer.log_every=1",
                    "Trainer.checkpoint_every=0", *self.extra]
        straight = self._launch(self.tmp / "straight", files, bindings)
        preempted = self.tmp / "preempted"
        first = self._launch(preempted, files, bindings, expect=75,
                             env={"GINTUNE_SIGNAL_AT": f"step_end:{SAVE_RESUME['preempt_at']}"})
        # the signal lands at the end of step 8's work; the save is at the next step boundary
        (checkpoint,) = (preempted / "checkpoints").glob("step_*")
        saved = int(checkpoint.name.split("_")[1])
        size_gb = sum(f.stat().st_size for f in checkpoint.rglob("*") if f.is_file()) / 2 ** 30
        resumed = self._launch(preempted, files, bindings)
        by_step = lambda records: {r["step"]: r for r in records if "train/loss" in r}  # noqa
        a, b = by_step(straight["records"]), by_step(resumed["records"])
        after = sorted(s for s in a if s > saved)
        diffs = {key: max(abs(a[s][key] - b[s][key]) for s in after)
                 for key in ("train/loss", "train/grad_norm")}
        blocked = [r["checkpoint/blocked_s"] for r in first["records"]
                   if "checkpoint/blocked_s" in r]
        summary = json.loads((preempted / "summary.json").read_text())
        shutil.rmtree(self.tmp / "straight", ignore_errors=True)
        shutil.rmtree(preempted, ignore_errors=True)
        return {"layers": SAVE_RESUME["num_layers"], "signal_at_end_of": SAVE_RESUME["preempt_at"],
                "preempted_exit": first["returncode"], "checkpoint_step": saved,
                "checkpoint_gb": round(size_gb, 3), "save_blocked_s": blocked,
                "resumed_from": summary.get("resume/from_step"), "compared_steps": after,
                "bit_identical_after_resume": all(v == 0.0 for v in diffs.values()),
                "max_abs_diff_after_resume": diffs,
                "losses": {"straight": [a[s]["train/loss"] for s in after],
                           "resumed": [b[s]["train/loss"] for s in after]},
                "peak_gpu_gb": summary.get("memory/peak_gpu_gb")}

    def _launch(self, workdir, files, bindings, expect=0, env=None):
        cmd = launcher_cmd(workdir, files, *bindings, gin_file=self.gin_file)
        out, err, rc, _, wall, _ = run_measured(cmd, env={"WANDB_MODE": "offline", **(env or {})})
        if rc != expect:
            raise LaunchFailed(f"exit {rc}, expected {expect}: {' '.join(cmd[1:])}\n"
                               f"{err[-4000:]}")
        records = [json.loads(line)
                   for line in (workdir / "metrics.jsonl").read_text().splitlines()]
        return {"records": records, "returncode": rc, "wall_s": wall}


class LaunchFailed(Exception):
    pass


def machine():
    import platform

    import torch

    found = {}
    for name in ("gin-config", "torchtune", "torchao", "wandb"):
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            found[name] = None
    cuda = torch.cuda.is_available()
    return {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
            "python": platform.python_version(), "torch": torch.__version__,
            "cuda_runtime": torch.version.cuda, "gpu": torch.cuda.get_device_name() if cuda
            else None, "nccl": ".".join(map(str, torch.cuda.nccl.version())) if cuda else None,
            "gpu_memory_gb": round(torch.cuda.get_device_properties(0).total_memory / 2 ** 30, 1)
            if cuda else None, "packages": found}


def main(steps, warmup, budget_s=None, out=None, rehearse=False, peak_tflops=None):
    import torch

    if rehearse:  # the launches it makes, too, must stay off any GPU there is
        os.environ["CUDA_VISIBLE_DEVICES"] = ""
    elif not torch.cuda.is_available():
        print("error: --preset=gpu needs a CUDA GPU and none is visible; run without --preset "
              "for the CPU figures, or add --rehearse to try the sequence on the CPU",
              file=sys.stderr)
        return 1
    tmp = pathlib.Path(tempfile.mkdtemp(prefix="gintune-gpu-checks-"))
    checks = Checks(tmp, steps, warmup, budget_s, out, rehearse)
    try:
        files = checks.files()
        for name in ORDER:
            if name == "save_resume":
                checks.run(name, lambda: checks.save_resume(files))
            else:
                checks.run(name, lambda name=name: checks.throughput(name, files))
        device = torch.device("cpu" if rehearse else "cuda")
        dtype = torch.float32 if rehearse else torch.bfloat16
        name = "cpu" if rehearse else torch.cuda.get_device_name()
        peaks = {"datasheet_bf16_tflops": None if rehearse
                 else peak_tflops or mfu.datasheet_tflops(name),
                 f"measured_{str(dtype)[6:]}_matmul_tflops": mfu.measured_matmul_tflops(
                     device, dtype, size=1024 if rehearse else 8192)}
        checks.report["peaks"] = peaks
        checks.report["mfu"] = {
            f"{run} vs {peak}": result["flops_per_token"] * result["tokens_per_s"]
            / (tflops * 1e12)
            for run, result in checks.report["checks"].items() if "tokens_per_s" in result
            for peak, tflops in peaks.items() if tflops}
        got = checks.report["checks"]
        ratio = lambda a, b: (got[a]["tokens_per_s"] / got[b]["tokens_per_s"]  # noqa: E731
                              if "tokens_per_s" in got[a] and "tokens_per_s" in got[b] else None)
        checks.report["ratios"] = {
            "bf16 compiled / bf16 eager tokens_per_s": ratio("bf16_compiled", "bf16_eager"),
            "bf16 eager / fp32 eager tokens_per_s": ratio("bf16_eager", "fp32_eager"),
            "fp32 compiled / fp32 eager tokens_per_s": ratio("fp32_compiled", "fp32_eager"),
            "bf16 compiled packed / padded tokens_per_s":
                ratio("bf16_compiled_packed", "bf16_compiled")}
        checks.report["wall_s"] = round(time.perf_counter() - checks.t0, 1)
        checks.save()
        print(json.dumps(checks.report, indent=2))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)  # a 1B run leaves its final checkpoint (~11 GiB)
    failed = [n for n, r in checks.report["checks"].items() if "failed" in r]
    return 1 if failed else 0
