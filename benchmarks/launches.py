"""Launching and measuring the real launcher for the benchmarks: one process per run, its own
peak RSS, and the steady-state figures of its metrics.jsonl; optionally a time limit, past which
the run's whole process group is killed."""

import json
import os
import pathlib
import signal
import statistics
import subprocess
import sys
import tempfile
import time

from benchmarks import mfu

REPO = pathlib.Path(__file__).resolve().parent.parent
PY = sys.executable


def run_measured(cmd, env=None, timeout_s=None):
    """Runs cmd to completion; returns (stdout, stderr, returncode, peak RSS in MB, wall s,
    minor page faults).

    The peak RSS and the page faults are this child's own (os.wait4), not summed or maximized
    over all children. With timeout_s the child leads its own process group (torch.compile's
    workers included), which is killed with SIGKILL when the child runs past timeout_s, when
    this process is interrupted while waiting, and after the child exits (stragglers); past
    timeout_s it raises subprocess.TimeoutExpired with the output so far.
    """
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=REPO, stdout=out, stderr=err,
                                env={**os.environ, **(env or {})},
                                process_group=None if timeout_s is None else 0)
        if timeout_s is None:
            _, status, usage = os.wait4(proc.pid, 0)
        else:
            try:
                waited = _wait_until(proc.pid, t0 + timeout_s)
            finally:
                _kill_group(proc.pid)
            if waited is None:
                os.wait4(proc.pid, 0)
                out.seek(0)
                err.seek(0)
                raise subprocess.TimeoutExpired(cmd, timeout_s, out.read(), err.read())
            status, usage = waited
        wall = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        return (out.read(), err.read(), proc.returncode, usage.ru_maxrss / 1024, wall,
                usage.ru_minflt)


def _wait_until(pid, deadline):
    """(wait status, rusage) of the child once it exits, or None if the deadline (a
    perf_counter time) comes first; the child is then still unreaped."""
    while True:
        done, status, usage = os.wait4(pid, os.WNOHANG)
        if done:
            return status, usage
        if time.perf_counter() >= deadline:
            return None
        time.sleep(0.2)


def _kill_group(pgid):
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:  # the group's processes have all exited
        pass


def steady(step_s, tokens, warmup):
    s, t = step_s[warmup:], tokens[warmup:]
    return {"tokens_per_s": sum(t) / sum(s), "step_ms_median": 1000 * statistics.median(s)}


def launcher_cmd(workdir, files, *bindings, gin_file="gin/benchmarks/reward.gin"):
    """`python -m launchers.train` on a benchmark config with its data files set."""
    return [PY, "-m", "launchers.train", f"--gin_file={gin_file}",
            f"--gin_bindings=train_files=['{files['train']}']",
            f"--gin_bindings=eval_files=['{files['eval']}']", f"--workdir={workdir}",
            *(f"--gin_bindings={b}" for b in bindings)]


def launcher_run(workdir, files, steps, warmup, *bindings, gin_file="gin/benchmarks/reward.gin",
                 env=None, timeout_s=None):
    """One launch of `steps` steps: (steady figures, its metrics.jsonl records). Raises
    RuntimeError when it fails, subprocess.TimeoutExpired past timeout_s (run_measured)."""
    cmd = launcher_cmd(workdir, files, f"Trainer.num_steps={steps}", *bindings,
                       gin_file=gin_file)
    out, err, rc, peak, wall, faults = run_measured(
        cmd, env={"WANDB_MODE": "offline", **(env or {})}, timeout_s=timeout_s)
    if rc != 0:
        raise RuntimeError(f"launcher failed:\n{err[-3000:]}")
    records = [json.loads(line) for line in (workdir / "metrics.jsonl").read_text().splitlines()]
    # One report per 10 steps: its token count, tokens/s and median step time.
    windows = [r for r in records if "train/loss" in r and r["step"] - 10 >= warmup]
    seconds = sum(r["train/tokens"] / r["train/tokens_per_s"] for r in windows)
    summary = json.loads((workdir / "summary.json").read_text())
    result = {"tokens_per_s": sum(r["train/tokens"] for r in windows) / seconds,
              "step_ms_median": 1000 * statistics.median(r["train/step_s_median"]
                                                          for r in windows),
              "peak_rss_mb": peak, "minor_faults": faults,
              "first_step_s": summary["startup/first_step_s"],
              "wall_s": wall, "flops_per_token": _flops_per_token(workdir, summary, windows)}
    if "memory/peak_gpu_gb" in summary:
        result["peak_gpu_gb"] = summary["memory/peak_gpu_gb"]
    return result, records


def _flops_per_token(workdir, summary, windows):
    """Model training FLOPs per token of this run (benchmarks/mfu.py), from its saved config
    and the mean non-pad length of the sequences it trained on."""
    from lib.config.diff import resolved_values

    values = resolved_values((workdir / "operative_config.gin").read_text())
    model = {k.split(".")[1]: v for k, v in values.items()
             if k.startswith("llama3_model.")}
    sequences = 10 * len(windows) * 2 * values["Trainer.global_batch_size"]
    seq_len = sum(r["train/tokens"] for r in windows) / sequences
    non_embedding = summary["model/parameters"] - model["vocab_size"] * model["embed_dim"]
    return mfu.flops_per_token(non_embedding, model["num_layers"], model["embed_dim"], seq_len)
