"""The GPU preset of the throughput benchmark: what a first run on a GPU must show, in order.

    python -m benchmarks.reward_throughput --preset=gpu [--budget_s=420] [--out=checks.json]

First a preflight, in a child process given PREFLIGHT_TIMEOUT_S: the torch, CUDA and NCCL
versions; a 1-rank 'cpu:gloo,cuda:nccl' process group (the launcher's) with an all_reduce on
each backend; the TFLOP/s of a bf16 8192^3 matmul (the measured peak for MFU); and importing
torchtune, which loads torchao's compiled extension. If it fails or hangs, the report names the
stage and the run stops there, so the rest of the machine's time can go to the fix.

Then the checks, each one or more real launches of `python -m launchers.train` on the GPU
preset (gin/benchmarks/reward_gpu.gin: a Llama 3.2 1B-shaped reward model, bf16, compiled
blocks), on 600 training pairs and 8 eval pairs (one eval forward):

  bf16_compiled         the preset as shipped: tokens/s, MFU, peak GPU memory, time to step 1,
                        and the time its final checkpoint (~11 GiB, on disk) held training up
  bf16_eager            the preset with fsdp.compile_blocks=False
  save_resume           a 4-layer model of the preset's width, sent SIGTERM during step 8 (a
                        checkpoint saved on the GPU at the next step boundary, exit 75),
                        relaunched to step 12, against a straight run to 12: each later step's
                        loss and grad norm and their largest difference, the same difference
                        between the straight run and the first launch over the steps before
                        the save (the noise floor: CUDA kernels need not be deterministic run
                        to run), and the save's time
  fp32_eager            fsdp.param_dtype='float32' (TF32 matmuls), not compiled
  fp32_compiled         fsdp.param_dtype='float32', compiled
  bf16_compiled_packed  the preset with Trainer.pack=True (padding-free rows)

They run in that order, the most needed first. A check that fails (a launch's exit status and
the end of its stderr, or any exception's type, message and the end of its traceback) is
recorded and the next one runs. With --budget_s, a check starts only if more time is left than
a check of its kind (KIND) is expected to take: the longest of that kind so far, or a prior
(PRIOR_S) for the first of a kind; the rest are recorded as skipped. Each launch is then given
the budget's remainder plus GRACE_S, past which its process group is killed and the check
recorded as timed out. The launcher saves a checkpoint after the last step whatever
Trainer.checkpoint_every says; the throughput checks after the first write theirs to /dev/shm
where memory has room, which spares the disk write, not the checksums.

The report (JSON) is written at the start, after the preflight, and before and after every
check (a check still marked "running" was cut off during it), with each throughput check's MFU
as it finishes, and printed at the end; with --out it is rewritten each time. One line per
check goes to stderr as it starts and as it ends. With no wandb installed, runs log with
RunLogger.use_wandb=False.

--rehearse runs the same sequence on the CPU with the CPU preset's model (gin/benchmarks/
reward.gin) and a few steps, to check the sequence itself; its preflight sets up the gloo group
alone and times a float32 matmul, and its figures say nothing of a GPU.
"""

import importlib.metadata
import importlib.util
import json
import os
import pathlib
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import traceback

from benchmarks import data, mfu
from benchmarks.launches import PY, launcher_cmd, launcher_run, run_measured

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
ORDER = ("bf16_compiled", "bf16_eager", "save_resume", "fp32_eager", "fp32_compiled",
         "bf16_compiled_packed")
SAVE_RESUME = {"steps": 12, "preempt_at": 8, "num_layers": 4}
EVAL_PAIRS = 8  # one eval forward (Trainer.eval_batch_size is 16): the eval is not measured
# The budget rule's kinds: the compiled checks pay cold compiles, the eager ones do not.
KIND = {"bf16_compiled": "compiled", "bf16_eager": "eager", "save_resume": "save_resume",
        "fp32_eager": "eager", "fp32_compiled": "compiled", "bf16_compiled_packed": "compiled"}
# Seconds expected of the first check of a kind, before one has been timed: guesses, for the
# 1B preset on an H200 (start-up, compiles, 30 steps, an eval, an ~11 GiB final checkpoint;
# save_resume: three launches of a 4-layer model) and for the rehearsal on 2 CPU cores.
PRIOR_S = {"gpu": {"compiled": 180.0, "eager": 90.0, "save_resume": 90.0},
           "cpu": {"compiled": 60.0, "eager": 25.0, "save_resume": 45.0}}
GRACE_S = 60.0  # a launch may run this long past the budget before it is killed
PREFLIGHT_TIMEOUT_S = 90.0
MEMORY_SCRATCH_GB = {"gpu": 24.0, "cpu": 1.0}  # room /dev/shm needs for a run's checkpoint


class LaunchFailed(Exception):
    pass


class Checks:
    def __init__(self, tmp, steps, warmup, budget_s, out, rehearse, scratch=None):
        self.tmp, self.steps, self.warmup = tmp, steps, warmup
        self.budget_s, self.out, self.rehearse = budget_s, out, rehearse
        self.scratch = scratch  # a folder in memory for the runs whose checkpoint is not timed
        self.mode = "cpu" if rehearse else "gpu"
        self.gin_file = CPU_GIN if rehearse else GPU_GIN
        self.t0 = time.perf_counter()
        self.walls = {}  # kind: seconds each check of that kind took (failed quickly: not)
        self.extra = [] if importlib.util.find_spec("wandb") else ["RunLogger.use_wandb=False"]
        self.report = {"machine": machine(), "rehearsal_on_cpu": rehearse, "gin_file":
                       self.gin_file, "steps": steps, "warmup": warmup, "eval_pairs": EVAL_PAIRS,
                       "budget_s": budget_s, "memory_scratch": str(scratch) if scratch else None,
                       "preflight": None, "peaks": {}, "mfu": {}, "checks": {}}

    def files(self):
        lengths = (64, 256) if self.rehearse else (256, 1024)
        return {"train": data.make(self.tmp / "train", 600, *lengths, seed=0),
                "eval": data.make(self.tmp / "eval", EVAL_PAIRS, *lengths, seed=1)}

    def elapsed(self):
        return time.perf_counter() - self.t0

    def left(self):
        return None if self.budget_s is None else max(0.0, self.budget_s - self.elapsed())

    def timeout_s(self):
        """A launch's time limit: the budget's remainder plus GRACE_S (None: no budget)."""
        return None if self.budget_s is None else self.left() + GRACE_S

    def estimate(self, name):
        """(seconds, basis) expected of this check: the longest of its kind so far, or a
        prior for the first of a kind."""
        kind = KIND[name]
        if self.walls.get(kind):
            return max(self.walls[kind]), f"the longest {kind} check so far"
        return PRIOR_S[self.mode][kind], f"the prior for a first {kind} check"

    def run(self, name, fn):
        estimate, basis = self.estimate(name)
        left = self.left()
        if left is not None and left <= estimate:
            self.report["checks"][name] = {
                "skipped": f"{left:.0f} s left of the {self.budget_s:.0f} s budget; expected "
                           f"{estimate:.0f} s ({basis})"}
            progress(self, f"{name}: skipped, {left:.0f} s left, expected {estimate:.0f} s")
            self.save()
            return
        start = self.elapsed()
        self.report["checks"][name] = {"running": f"since {start:.0f} s into the run"}
        self.save()
        progress(self, f"{name}: start (expected {estimate:.0f} s, "
                 f"{'no budget' if left is None else f'{left:.0f} s left'})")
        try:
            result = fn()
        except LaunchFailed as e:
            result = {"failed": e.args[0]}
        except subprocess.TimeoutExpired as e:
            result = {"failed": f"timed out: killed after {e.timeout:.0f} s (the budget's "
                                f"remainder plus {GRACE_S:.0f} s)", "timed_out": True,
                      "stderr_tail": _text(e.stderr)[-2000:]}
        except Exception as e:  # a bug here or an unexpected result: record it, go on
            result = {"failed": f"{type(e).__name__}: {str(e)[-2000:]}",
                      "exception": {"type": type(e).__name__, "message": str(e)[-2000:],
                                    "traceback": "".join(
                                        traceback.format_exception(e)[-6:])[-3000:]}}
        except BaseException as e:  # SIGTERM (see main) or Ctrl-C: keep what is known
            sigterm = isinstance(e, SystemExit) and e.code == 128 + signal.SIGTERM
            self.report["checks"][name] = {
                "failed": f"interrupted ({'SIGTERM' if sigterm else type(e).__name__}) after "
                          f"{self.elapsed() - start:.0f} s"}
            self.save()
            raise
        result["check_wall_s"] = round(self.elapsed() - start, 1)
        result["expected_s"] = round(estimate, 1)
        if "failed" not in result or result.get("timed_out"):
            self.walls.setdefault(KIND[name], []).append(result["check_wall_s"])
        if "tokens_per_s" in result:
            result["mfu"] = {f"vs {peak}": value for peak, value in self.mfu(result).items()}
        self.report["checks"][name] = result
        self.save()
        progress(self, f"{name}: {'FAILED' if 'failed' in result else 'done'} in "
                 f"{result['check_wall_s']:.0f} s; {key_figure(result)}")

    def mfu(self, result):
        """{peak name: MFU} of a throughput result against each peak known."""
        return {peak: result["flops_per_token"] * result["tokens_per_s"] / (tflops * 1e12)
                for peak, tflops in self.report["peaks"].items() if tflops}

    def save(self):
        """Brings the derived figures (MFU, ratios) up to date; rewrites --out."""
        got = self.report["checks"]
        self.report["mfu"] = {f"{run} vs {peak}": value for run, result in got.items()
                              if "tokens_per_s" in result
                              for peak, value in self.mfu(result).items()}
        ratio = lambda a, b: (got[a]["tokens_per_s"] / got[b]["tokens_per_s"]  # noqa: E731
                              if "tokens_per_s" in got.get(a, {})
                              and "tokens_per_s" in got.get(b, {}) else None)
        self.report["ratios"] = {
            "bf16 compiled / bf16 eager tokens_per_s": ratio("bf16_compiled", "bf16_eager"),
            "bf16 eager / fp32 eager tokens_per_s": ratio("bf16_eager", "fp32_eager"),
            "fp32 compiled / fp32 eager tokens_per_s": ratio("fp32_compiled", "fp32_eager"),
            "bf16 compiled packed / padded tokens_per_s":
                ratio("bf16_compiled_packed", "bf16_compiled")}
        self.report["wall_s"] = round(self.elapsed(), 1)
        if self.out:
            tmp = pathlib.Path(f"{self.out}.partial")
            tmp.write_text(json.dumps(self.report, indent=2))
            os.replace(tmp, self.out)

    def preflight(self, peak_tflops=None):
        """The preflight (module docstring) in a child process; True if every stage passed.
        Its matmul's TFLOP/s and the datasheet's go to the report's peaks."""
        cmd = [PY, "-c", "from benchmarks.gpu_checks import preflight_child; preflight_child()"]
        progress(self, f"preflight: start (limit {PREFLIGHT_TIMEOUT_S:.0f} s)")
        start = self.elapsed()
        try:  # NCCL says why it failed only when asked to
            out, err, rc, *_ = run_measured(cmd, env={"NCCL_DEBUG": os.environ.get(
                "NCCL_DEBUG", "WARN")}, timeout_s=PREFLIGHT_TIMEOUT_S)
            timed_out = False
        except subprocess.TimeoutExpired as e:
            out, err, rc, timed_out = _text(e.output), _text(e.stderr), None, True
        stages = {}
        for line in out.splitlines():
            if line.startswith(PREFLIGHT_MARK):
                record = json.loads(line[len(PREFLIGHT_MARK):])
                stages[record.pop("stage")] = record
        report = {"stages": stages, "seconds": round(self.elapsed() - start, 1)}
        missing = [s for s in PREFLIGHT_STAGES if s not in stages]
        if missing:
            why = "timed out" if timed_out else f"exited {rc}"
            report["failed"] = (f"{why} at stage {missing[0]!r} ({PREFLIGHT_STAGES[missing[0]]})"
                                f"{_fix(missing[0], stages, rc)}")
            report["stderr_tail"] = err[-3000:]
        matmul = stages.get("matmul", {})
        gpu = stages.get("torch", {}).get("gpu")
        self.report["peaks"] = {
            "datasheet_bf16_tflops": (peak_tflops or mfu.datasheet_tflops(gpu)) if gpu else None,
            **({matmul["name"]: matmul["tflops"]} if matmul else {})}
        self.report["preflight"] = report
        self.save()
        versions = stages.get("torch", {})
        progress(self, f"preflight: {'FAILED' if missing else 'done'} in {report['seconds']:.0f} "
                 f"s; torch {versions.get('torch')}, CUDA {versions.get('cuda_runtime')}, NCCL "
                 f"{versions.get('nccl')}, matmul {matmul.get('tflops', float('nan')):.1f} "
                 f"TFLOP/s{'; ' + report['failed'] if missing else ''}")
        return not missing

    def throughput(self, name, files):
        # The first check's final save is the one measured on disk; the others', where
        # /dev/shm has room, go to memory (the launcher saves after the last step regardless).
        in_memory = self.scratch is not None and name != "bf16_compiled"
        workdir = (self.scratch if in_memory else self.tmp) / name
        try:
            result, records = launcher_run(workdir, files, self.steps, self.warmup,
                                           *THROUGHPUT[name], "Trainer.checkpoint_every=0",
                                           *self.extra, gin_file=self.gin_file,
                                           timeout_s=self.timeout_s())
        except RuntimeError as e:
            raise LaunchFailed(str(e)[-4000:]) from None
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
        # the run's one checkpoint, after its last step: how long it held training up
        result["final_save_blocked_s"] = [r["checkpoint/blocked_s"] for r in records
                                          if "checkpoint/blocked_s" in r]
        result["final_save_to"] = "memory (/dev/shm)" if in_memory else "disk"
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
        before = by_step(first["records"])
        after = sorted(s for s in a if s > saved)
        # Two launches of one config over the same steps, no resume between: how far apart
        # CUDA's run-to-run nondeterminism alone puts them (0.0 on a CPU).
        floor_steps = sorted(s for s in a if s <= saved and s in before)
        diffs = _max_abs_diffs(a, b, after)
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
                "noise_floor_steps": floor_steps,
                "noise_floor_max_abs_diff": _max_abs_diffs(a, before, floor_steps),
                "losses": {"straight": [a[s]["train/loss"] for s in after],
                           "resumed": [b[s]["train/loss"] for s in after]},
                "peak_gpu_gb": summary.get("memory/peak_gpu_gb")}

    def _launch(self, workdir, files, bindings, expect=0, env=None):
        cmd = launcher_cmd(workdir, files, *bindings, gin_file=self.gin_file)
        out, err, rc, _, wall, _ = run_measured(cmd, env={"WANDB_MODE": "offline", **(env or {})},
                                                timeout_s=self.timeout_s())
        if rc != expect:
            raise LaunchFailed(f"exit {rc}, expected {expect}: {' '.join(cmd[1:])}\n"
                               f"{err[-4000:]}")
        records = [json.loads(line)
                   for line in (workdir / "metrics.jsonl").read_text().splitlines()]
        return {"records": records, "returncode": rc, "wall_s": wall}


def _max_abs_diffs(a, b, steps):
    return {key: max((abs(a[s][key] - b[s][key]) for s in steps), default=None)
            for key in ("train/loss", "train/grad_norm")}


def _text(output):
    """TimeoutExpired's output: text, bytes or None."""
    if isinstance(output, bytes):
        return output.decode(errors="replace")
    return output or ""


def key_figure(result):
    """The figure a progress line shows for a check's result."""
    if "failed" in result:
        return result["failed"].strip().splitlines()[-1][:200] if result["failed"].strip() else ""
    if "tokens_per_s" in result:
        mfu_text = ", ".join(f"{v:.1%} {k[3:].split('_')[0]}" for k, v in result["mfu"].items())
        memory = f", peak GPU {result['peak_gpu_gb']} GB" if "peak_gpu_gb" in result else ""
        return (f"{result['tokens_per_s']:,.0f} tokens/s, MFU {mfu_text or 'n/a'}, first step "
                f"{result['first_step_s']:.0f} s{memory}")
    if "bit_identical_after_resume" in result:
        loss = lambda d: "n/a" if d["train/loss"] is None else f"{d['train/loss']:.2e}"  # noqa
        return (f"bit-identical after resume: {result['bit_identical_after_resume']}, max "
                f"|loss diff| after resume {loss(result['max_abs_diff_after_resume'])}, noise "
                f"floor {loss(result['noise_floor_max_abs_diff'])}")
    return ""


def progress(checks, message):
    print(f"gpu_checks {checks.elapsed():6.0f} s | {message}", file=sys.stderr, flush=True)


PREFLIGHT_MARK = "preflight stage: "  # starts the child's lines that report a stage
# The preflight child's stages, in order, and what each one proves.
PREFLIGHT_STAGES = {
    "torch": "importing torch; its versions",
    "process_group": "a 1-rank 'cpu:gloo,cuda:nccl' group (gloo alone without CUDA) and an "
                     "all_reduce on each backend",
    "matmul": "timing a dense matmul (bf16 on a GPU)",
    "torchtune": "importing torchtune, which imports torchao and loads its compiled extension"}


def preflight_child():
    """The preflight's child process: one JSON line per stage passed, printed as it passes, so
    a crash or a hang still shows how far it got."""
    import datetime

    import torch
    import torch.distributed as dist

    def passed(stage, **facts):
        print(PREFLIGHT_MARK + json.dumps({"stage": stage, **facts}), flush=True)

    cuda = torch.cuda.is_available()
    torchao = importlib.util.find_spec("torchao")
    passed("torch", torch=torch.__version__, cuda_runtime=torch.version.cuda, cuda=cuda,
           gpu=torch.cuda.get_device_name() if cuda else None,
           capability=list(torch.cuda.get_device_capability()) if cuda else None,
           nccl=".".join(map(str, torch.cuda.nccl.version())) if cuda else None,
           torchao_dir=str(pathlib.Path(torchao.origin).parent) if torchao else None)
    start = time.perf_counter()
    if cuda:
        torch.cuda.set_device(0)
    backend = "cpu:gloo,cuda:nccl" if cuda else "gloo"
    dist.init_process_group(backend=backend, store=dist.HashStore(), rank=0, world_size=1,
                            timeout=datetime.timedelta(seconds=60))
    sums = {"gloo_cpu": torch.ones(4)}
    if cuda:
        sums["nccl_cuda"] = torch.ones(4, device="cuda")
    for tensor in sums.values():
        dist.all_reduce(tensor)
    sums = {k: t.sum().item() for k, t in sums.items()}  # .item() waits for the GPU's
    dist.destroy_process_group()
    passed("process_group", backend=backend, all_reduce_sums=sums,
           seconds=round(time.perf_counter() - start, 2))
    dtype = torch.bfloat16 if cuda else torch.float32
    tflops = mfu.measured_matmul_tflops(torch.device("cuda" if cuda else "cpu"), dtype,
                                        size=8192 if cuda else 1024)
    passed("matmul", name=f"measured_{str(dtype)[6:]}_matmul_tflops", tflops=tflops)
    import torchtune  # as the launcher's model code does: it imports torchao

    ao = sys.modules.get("torchao")
    passed("torchtune", torchtune=getattr(torchtune, "__version__", None),
           torchao=getattr(ao, "__version__", None),
           torchao_skipped_extension=getattr(ao, "skip_loading_so_files", None),
           loaded_libraries=sorted(getattr(torch.ops, "loaded_libraries", ())))


def _fix(stage, stages, returncode):
    """What to do about a preflight that stopped at this stage, where that is known."""
    if stage == "torchtune" and returncode == -signal.SIGABRT:
        where = stages.get("torch", {}).get("torchao_dir") or "<site-packages>/torchao"
        return (f"; the abort is most likely torchao 0.13 loading its compiled extension, "
                f"built for torch 2.8, into torch {stages.get('torch', {}).get('torch')} (its "
                f"version guard compares strings): delete it before the run "
                f"(rm -f {where}/_C*.so); nothing here uses its kernels")
    return ""


def machine():
    import platform

    import torch

    found = {}
    for name in ("gin-config", "torchtune", "torchao", "wandb"):
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            found[name] = None
    facts = {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
             "python": platform.python_version(), "torch": torch.__version__,
             "cuda_runtime": torch.version.cuda, "gpu": None, "nccl": None,
             "gpu_memory_gb": None, "packages": found}
    try:
        if torch.cuda.is_available():
            facts.update(gpu=torch.cuda.get_device_name(),
                         nccl=".".join(map(str, torch.cuda.nccl.version())),
                         gpu_memory_gb=round(torch.cuda.get_device_properties(0).total_memory
                                             / 2 ** 30, 1))
    except Exception as e:  # the preflight finds out what is wrong
        facts["gpu_error"] = f"{type(e).__name__}: {e}"
    return facts


def memory_scratch(need_gb):
    """A new folder in /dev/shm if it and the free memory have room for need_gb, else None."""
    shm = pathlib.Path("/dev/shm")
    try:
        free_shm = shutil.disk_usage(shm).free / 2 ** 30
        free_ram = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE") / 2 ** 30
    except (OSError, ValueError):
        return None
    if free_shm < need_gb or free_ram < 3 * need_gb:
        return None
    return pathlib.Path(tempfile.mkdtemp(prefix="gintune-gpu-checks-", dir=shm))


def _terminated(signum, frame):
    raise SystemExit(128 + signum)  # so that a launch's process group is killed on the way out


def main(steps, warmup, budget_s=None, out=None, rehearse=False, peak_tflops=None):
    import torch

    if rehearse:  # the launches it makes, too, must stay off any GPU there is
        os.environ["CUDA_VISIBLE_DEVICES"] = ""
    elif not torch.cuda.is_available():
        print("error: --preset=gpu needs a CUDA GPU and none is visible; run without --preset "
              "for the CPU figures, or add --rehearse to try the sequence on the CPU",
              file=sys.stderr)
        return 1
    signal.signal(signal.SIGTERM, _terminated)
    tmp = pathlib.Path(tempfile.mkdtemp(prefix="gintune-gpu-checks-"))
    scratch = memory_scratch(MEMORY_SCRATCH_GB["cpu" if rehearse else "gpu"])
    checks = Checks(tmp, steps, warmup, budget_s, out, rehearse, scratch)
    try:
        checks.save()  # an empty report: a run that hangs from here on still leaves one
        if not checks.preflight(peak_tflops):
            checks.report["stopped"] = "the preflight failed, so no check ran: see preflight"
            checks.save()
            print(f"error: preflight failed: {checks.report['preflight']['failed']}\n"
                  "no check ran; fix that and run again", file=sys.stderr)
            return 1
        start = checks.elapsed()
        files = checks.files()
        checks.report["data_s"] = round(checks.elapsed() - start, 1)
        for name in ORDER:
            if name == "save_resume":
                checks.run(name, lambda: checks.save_resume(files))
            else:
                checks.run(name, lambda name=name: checks.throughput(name, files))
        checks.save()
        print(json.dumps(checks.report, indent=2))
    except Exception as e:  # outside any one check (the data): keep the report so far
        checks.report["error"] = "".join(traceback.format_exception(e)[-6:])[-3000:]
        checks.save()
        raise
    finally:
        # a 1B run leaves its final checkpoint (~11 GiB)
        for folder in (tmp, scratch):
            if folder:
                shutil.rmtree(folder, ignore_errors=True)
    failed = [n for n, r in checks.report["checks"].items() if "failed" in r]
    return 1 if failed else 0
