"""Crash points for the fault-injection tests (tests/test_checkpointing.py, tests/slurm).

GINTUNE_CRASH_AT=<point>:<step> makes this process SIGKILL itself when it reaches that point at
that step, so a test can kill a run at an exact moment of a save or of the loop.
GINTUNE_SIGNAL_AT=<point>:<step> sends it SIGTERM there instead: a preemption that lands at a
known step; with a `:agent` suffix, rank 0 sends it to its parent, the torchrun agent, as SLURM or
a user would; GINTUNE_RAISE_AT=<point>:<step> raises an unexpected RuntimeError there (a bug).
A `:rank<N>` suffix limits any of them to global rank N (one rank of a job dying, as when its node
fails). Unset, a crash point costs three environment lookups (read at each call, so a process
forked from one that imported this module sees its own environment).
"""

import os
import signal

POINTS = ("partial_created", "shards_written", "state_written", "marker_written", "renamed",
          "old_removed", "step_end")


def _hit(spec: str, point: str, step: int) -> tuple | None:
    """The spec's suffixes when it names this point and step on this rank, else None."""
    if not spec:
        return None
    name, _, rest = spec.partition(":")
    at, _, options = rest.partition(":")
    if name != point or at != str(step):
        return None
    suffixes = tuple(options.split(":")) if options else ()
    rank = os.environ.get("RANK", "0")
    if any(s.startswith("rank") and s != f"rank{rank}" for s in suffixes):
        return None
    return suffixes


def crash_point(point: str, step: int) -> None:
    if _hit(os.environ.get("GINTUNE_CRASH_AT", ""), point, step) is not None:
        os.kill(os.getpid(), signal.SIGKILL)
    signal_at = _hit(os.environ.get("GINTUNE_SIGNAL_AT", ""), point, step)
    if signal_at is not None and "agent" not in signal_at:
        os.kill(os.getpid(), signal.SIGTERM)
    if signal_at is not None and "agent" in signal_at and os.environ.get("RANK") == "0":
        os.kill(os.getppid(), signal.SIGTERM)
    if _hit(os.environ.get("GINTUNE_RAISE_AT", ""), point, step) is not None:
        raise RuntimeError(f"fault injected at {point}:{step}")
