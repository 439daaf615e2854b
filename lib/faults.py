"""Crash points for the fault-injection tests (tests/test_checkpointing.py).

GINTUNE_CRASH_AT=<point>:<step> makes this process SIGKILL itself when it reaches that point at
that step, so a test can kill a run at an exact moment of a save or of the loop.
GINTUNE_SIGNAL_AT=<point>:<step> sends it SIGTERM there instead: a preemption that lands at a
known step; with a `:agent` suffix, rank 0 sends it to its parent, the torchrun agent, as SLURM or
a user would; GINTUNE_RAISE_AT=<point>:<step> raises an unexpected RuntimeError there (a bug).
Unset, a crash point costs three environment lookups (read at each call, so a process forked
from one that imported this module sees its own environment).
"""

import os
import signal

POINTS = ("partial_created", "shards_written", "state_written", "marker_written", "renamed",
          "old_removed", "step_end")


def crash_point(point: str, step: int) -> None:
    target = os.environ.get("GINTUNE_CRASH_AT", "")
    signal_at = os.environ.get("GINTUNE_SIGNAL_AT", "")
    raise_at = os.environ.get("GINTUNE_RAISE_AT", "")
    if target and target == f"{point}:{step}":
        os.kill(os.getpid(), signal.SIGKILL)
    if signal_at and signal_at == f"{point}:{step}":
        os.kill(os.getpid(), signal.SIGTERM)
    if signal_at and signal_at == f"{point}:{step}:agent" and os.environ.get("RANK") == "0":
        os.kill(os.getppid(), signal.SIGTERM)
    if raise_at and raise_at == f"{point}:{step}":
        raise RuntimeError(f"fault injected at {point}:{step}")
