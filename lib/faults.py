"""Crash points for the fault-injection tests (tests/test_checkpointing.py).

GINTUNE_CRASH_AT=<point>:<step> makes this process SIGKILL itself when it reaches that point at
that step, so a test can kill a run at an exact moment of a save or of the loop.
GINTUNE_SIGNAL_AT=<point>:<step> sends it SIGTERM there instead: a preemption that lands at a
known step; with a `:agent` suffix, rank 0 sends it to its parent, the torchrun agent, as SLURM or
a user would; GINTUNE_RAISE_AT=<point>:<step> raises an unexpected RuntimeError there (a bug).
Unset, a crash point costs three string comparisons.
"""

import os
import signal

POINTS = ("partial_created", "shards_written", "state_written", "marker_written", "renamed",
          "old_removed", "step_end")
_TARGET = os.environ.get("GINTUNE_CRASH_AT", "")
_SIGNAL = os.environ.get("GINTUNE_SIGNAL_AT", "")
_RAISE = os.environ.get("GINTUNE_RAISE_AT", "")


def crash_point(point: str, step: int) -> None:
    if _TARGET and _TARGET == f"{point}:{step}":
        os.kill(os.getpid(), signal.SIGKILL)
    if _SIGNAL and _SIGNAL == f"{point}:{step}":
        os.kill(os.getpid(), signal.SIGTERM)
    if _SIGNAL and _SIGNAL == f"{point}:{step}:agent" and os.environ.get("RANK") == "0":
        os.kill(os.getppid(), signal.SIGTERM)
    if _RAISE and _RAISE == f"{point}:{step}":
        raise RuntimeError(f"fault injected at {point}:{step}")
