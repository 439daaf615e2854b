"""Checkpoints that survive a kill at any moment, with torch.distributed.checkpoint (DCP).

A checkpoint is `<workdir>/checkpoints/step_<N>/` holding the DCP shards of model and optimizer
(`.metadata`, `__<rank>_0.distcp`), `trainer_state.json` (step, LR schedule, W&B run id),
`rng/rank_<r>.json` (each rank's python, numpy and torch RNG states), `operative_config.gin`,
and last `COMPLETE.json` (the step and the SHA-256 of every other file: each rank hashes the
files it wrote). The protocol:

1. every file is written under `.step_<N>.partial/`;
2. rank 0 writes COMPLETE.json, then renames the folder to `step_<N>` (atomic on POSIX);
3. only then are old checkpoints beyond `keep_last` renamed to `.step_<K>.deleting` and removed.

So a `step_<N>` folder is complete by construction; one without a valid marker (or whose
`.metadata` does not match its checksum) is never loaded and is removed at start-up, as are
leftover `.partial` and `.deleting` folders. A kill at any point leaves the previous checkpoint
intact and loadable. Before a checkpoint is loaded every file is checked against its checksum:
automatic resume renames a damaged one to `step_<N>.damaged` (kept for inspection, never
loaded, counted or removed) and takes the newest one that verifies; `--resume_from` naming a
damaged one is refused. A save that fails (a full disk) removes its partial folder and raises
CheckpointWriteError; earlier checkpoints are untouched.
"""

import concurrent.futures
import hashlib
import json
import os
import pathlib
import random
import re
import shutil
import time
from typing import Optional

import numpy as np
import torch
import torch.distributed as dist
from absl import logging

from lib import distributed
from lib.config.errors import ConfigError
from lib.faults import crash_point as _crash_point
from lib.config.registry import configurable


def _dcp():
    """torch.distributed.checkpoint, imported when a checkpoint is saved or loaded: it takes
    about 0.7 s, which the config-only commands (--validate_only, listing) do not need."""
    import torch.distributed.checkpoint as dcp
    import torch.distributed.checkpoint.state_dict  # noqa: F401  (get/set_state_dict)

    return dcp


CONFIG_FILE = "operative_config.gin"
STATE_FILE = "trainer_state.json"
MARKER = "COMPLETE.json"
BEST_FILE = "best.json"
_STEP_DIR = re.compile(r"^step_(\d+)$")
DAMAGED_SUFFIX = ".damaged"
DAMAGED_ADVICE = ("resume from another checkpoint, or without --resume_from to take the newest "
                  "one that verifies")


class CheckpointWriteError(OSError):
    """A checkpoint could not be written (e.g. the disk is full); earlier ones are intact."""


def _write_failures():
    """What a failed write raises: OSError, torch's RuntimeError from its zip writer, and
    DCP's CheckpointException (a BaseException) wrapping a rank's failure."""
    from torch.distributed.checkpoint.api import CheckpointException

    return (OSError, RuntimeError, CheckpointException)


def _check(view):
    keep_last = view.get("Checkpointer", "keep_last")
    if keep_last < 0:
        return [("keep_last", f"Checkpointer.keep_last={keep_last} must be >= 0 (0 keeps all)")]
    metric = view.get("Checkpointer", "best_metric")
    if not metric:
        return []
    from lib.tasks import EVAL_METRICS

    task = view.get("Trainer", "task")
    names = EVAL_METRICS.get(getattr(task, "name", None), ())
    if names and metric not in [f"eval/{n}" for n in names]:
        return [("best_metric", f"best_metric={metric!r} is not an eval metric of "
                 f"{task.name}; valid: {', '.join(f'eval/{n}' for n in names)}")]
    return []


@configurable(caller_args=("workdir",), check=_check)
class Checkpointer:
    """Saves and finds checkpoints under <workdir>/checkpoints/.

    Args:
      workdir: passed by the launcher.
      keep_last: how many complete checkpoints to keep (oldest removed first); 0 keeps all.
        The newest complete checkpoint is never removed.
      async_save: write shards in a background thread (DCP async_save) while training goes on;
        at most one save is in flight, and the time training was blocked is logged.
      best_metric: an eval metric (e.g. "eval/accuracy") that picks the best checkpoint among
        those saved at an eval step; "" keeps none. The best one is never removed by
        keep_last, is recorded in checkpoints/best.json and summary.json, and
        --resume_from=best and launchers.diff (<run>/checkpoints/best) name it.
      higher_is_better: whether a larger best_metric is better (False for a loss).
    """

    def __init__(self, workdir: str, keep_last: int = 2, async_save: bool = False,
                 best_metric: str = "", higher_is_better: bool = True):
        if keep_last < 0:
            raise ConfigError(f"Checkpointer.keep_last={keep_last} must be >= 0 (0 keeps all)")
        self.root = pathlib.Path(workdir) / "checkpoints"
        self.keep_last, self.async_save = keep_last, async_save
        self.best_metric, self.higher_is_better = best_metric, higher_is_better
        self.trainable_only = False  # set by the Trainer for adapters: frozen weights not saved
        self._pending = None  # (future, partial dir, final dir, step, files to write)
        self._pg = None
        self.blocked_s = 0.0
        self.damaged = []  # "folder: problem" of the checkpoints automatic resume set aside

    # -- finding -----------------------------------------------------------------------------

    def complete_steps(self):
        """Steps of the complete checkpoints, oldest first."""
        if not self.root.is_dir():
            return []
        steps = []
        for d in self.root.iterdir():
            m = _STEP_DIR.match(d.name)
            if m and _valid_marker(d, int(m.group(1))):
                steps.append(int(m.group(1)))
        return sorted(steps)

    def _options(self):
        """DCP state-dict options: only trainable weights with adapters (the frozen base is
        rebuilt from the config, and the Trainer checks its digest on resume)."""
        from torch.distributed.checkpoint.state_dict import StateDictOptions

        return StateDictOptions(ignore_frozen_params=True, strict=False) \
            if self.trainable_only else None

    def best(self) -> Optional[dict]:
        """{step, metric, value} of the best checkpoint, or None (no rule, or none saved)."""
        try:
            best = json.loads((self.root / BEST_FILE).read_text())
        except (OSError, ValueError):
            return None
        return best if best["step"] in self.complete_steps() else None

    def resume_point(self, resume_from: str) -> Optional[pathlib.Path]:
        """The checkpoint to resume from: "" for the newest complete one (None if there is
        none: a fresh start), else a step number, "best" or a checkpoint path, which must
        exist."""
        if resume_from == "best":
            best = self.best()
            if best is None:
                raise ConfigError(f"--resume_from=best: {self.root} records no best checkpoint "
                                  "(Checkpointer.best_metric picks one at each eval step)")
            resume_from = str(best["step"])
        if not resume_from:
            for step in reversed(self.complete_steps()):
                path = self.root / f"step_{step}"
                problem = verify(path)
                if problem is None:
                    return path
                aside = path.with_name(path.name + DAMAGED_SUFFIX)
                path.rename(aside)
                self.damaged.append(f"{path}: {problem}")
                logging.warning("checkpoint %s is damaged (%s); it is kept as %s for "
                                "inspection, never loaded, and resuming falls back to an "
                                "earlier checkpoint", path, problem, aside)
            return None
        path = (self.root / f"step_{int(resume_from)}" if resume_from.isdigit()
                else pathlib.Path(resume_from).resolve())
        m = _STEP_DIR.match(path.name)
        if not (m and _valid_marker(path, int(m.group(1)))):
            have = ", ".join(map(str, self.complete_steps())) or "none"
            raise ConfigError(f"--resume_from={resume_from}: {path} is not a complete "
                              f"checkpoint (complete steps in {self.root}: {have})")
        problem = verify(path)
        if problem is not None:
            raise ConfigError(f"--resume_from={resume_from}: {path} is damaged: {problem}; "
                              f"{DAMAGED_ADVICE}")
        return path

    def clean_up(self) -> None:
        """Removes partial, half-deleted and marker-less folders (rank 0, at start-up)."""
        if dist.get_rank() != 0 or not self.root.is_dir():
            return
        for d in sorted(self.root.iterdir()):
            m = _STEP_DIR.match(d.name)
            if d.name.endswith(DAMAGED_SUFFIX):
                continue  # set aside for inspection: never removed automatically
            if d.is_dir() and not (m and _valid_marker(d, int(m.group(1)))):
                logging.warning("removing incomplete checkpoint folder %s", d)
                shutil.rmtree(d, ignore_errors=True)

    # -- saving ------------------------------------------------------------------------------

    def save(self, step: int, model, optimizer, trainer_state: dict,
             operative_config: str, metrics: Optional[dict] = None) -> pathlib.Path:
        """Saves (a collective call on every rank); returns the folder it will complete as.

        With async_save the shards are written in the background and the folder is completed
        when the next save starts, or at wait(). The seconds training was blocked by this call
        are left in `self.blocked_s`.
        """
        t0 = time.perf_counter()
        self.wait()
        final = self.root / f"step_{step}"
        partial = self.root / f".step_{step}.partial"
        value = (metrics or {}).get(self.best_metric) if self.best_metric else None
        try:
            self._save(step, model, optimizer, trainer_state, operative_config, final, partial,
                       value)
        except _write_failures() as e:  # a full disk surfaces as OSError or RuntimeError
            raise self._failed(partial, step, e) from e
        self.blocked_s = time.perf_counter() - t0
        return final

    def _failed(self, partial, step, error) -> CheckpointWriteError:
        """Removes the partial folder of a failed save; the error to stop the run with."""
        if dist.get_rank() == 0:
            shutil.rmtree(partial, ignore_errors=True)
        steps = self.complete_steps()
        newest = self.root / f"step_{steps[-1]}" if steps else "none"
        lines = [line.strip() for line in str(error).splitlines() if line.strip()]
        reason = f"{type(error).__name__}: {lines[-1][:200] if lines else ''}"
        free = shutil.disk_usage(self.root).free / 2 ** 20
        return CheckpointWriteError(
            f"saving the checkpoint of step {step} into {self.root} failed ({reason}; "
            f"{free:,.0f} MB free there). The partial folder was removed and earlier "
            f"checkpoints are intact (newest: {newest}); free space and run the same command "
            "again to resume from there")

    def _save(self, step, model, optimizer, trainer_state, operative_config, final, partial,
              value):
        if dist.get_rank() == 0:
            shutil.rmtree(partial, ignore_errors=True)
            (partial / "rng").mkdir(parents=True)
        distributed.barrier()
        _crash_point("partial_created", step)
        # On a network file system another node may not see rank 0's folder yet: every rank
        # makes it (DCP's writer does the same for its shards).
        (partial / "rng").mkdir(parents=True, exist_ok=True)
        (partial / "rng" / f"rank_{dist.get_rank()}.json").write_text(json.dumps(rng_state()))
        dcp = _dcp()
        model_sd, optim_sd = dcp.state_dict.get_state_dict(model, optimizer,
                                                           options=self._options())
        state = {"model": model_sd, "optim": optim_sd}
        files = {STATE_FILE: json.dumps(trainer_state, indent=2) + "\n",
                 CONFIG_FILE: operative_config}
        if self.async_save:
            if self._pg is None:
                self._pg = dist.new_group(backend="gloo")
            future = dcp.async_save(state, checkpoint_id=str(partial), process_group=self._pg)
            self._pending = (future, partial, final, step, files, value)
        else:
            dcp.save(state, checkpoint_id=str(partial))
            self._complete(partial, final, step, files, value)

    def wait(self) -> None:
        """Finishes the save in flight, if any (every rank calls it)."""
        if self._pending is None:
            return
        future, partial, final, step, files, value = self._pending
        self._pending = None
        try:
            future.result()
            self._complete(partial, final, step, files, value)
        except _write_failures() as e:
            raise self._failed(partial, step, e) from e

    def _complete(self, partial, final, step, files, value) -> None:
        distributed.barrier()  # every rank's shards are on disk
        _crash_point("shards_written", step)
        rank = dist.get_rank()
        digests = _hash_files(partial, [f"__{rank}_*.distcp", f"rng/rank_{rank}.json"])
        if dist.get_world_size() > 1:
            gathered = [None] * dist.get_world_size()
            dist.all_gather_object(gathered, digests)
            digests = {k: v for d in gathered for k, v in d.items()}
        if rank == 0:
            for name, text in files.items():
                _write_durably(partial / name, text)
            _crash_point("state_written", step)
            rest = [str(p.relative_to(partial)) for p in sorted(partial.rglob("*"))
                    if p.is_file() and str(p.relative_to(partial)) not in digests]
            digests.update(_hash_files(partial, rest))
            marker = {"step": step, "metadata_sha256": digests[".metadata"],
                      "files": dict(sorted(digests.items()))}
            _write_durably(partial / MARKER, json.dumps(marker, indent=2) + "\n")
            _crash_point("marker_written", step)
            if final.exists():  # a stale copy of this step from an earlier attempt
                shutil.rmtree(final)
            partial.rename(final)
            _fsync_dir(self.root)
            _crash_point("renamed", step)
            self._update_best(step, value)
            self._retire_old()
            _crash_point("old_removed", step)
        distributed.barrier()

    def _update_best(self, step: int, value) -> None:
        if value is None:
            return
        best = self.best()
        sign = 1 if self.higher_is_better else -1
        if (best is None or best["metric"] != self.best_metric
                or sign * value > sign * best["value"]):
            record = {"step": step, "metric": self.best_metric, "value": value}
            tmp = self.root / f".{BEST_FILE}.partial"
            _write_durably(tmp, json.dumps(record, indent=2) + "\n")
            os.replace(tmp, self.root / BEST_FILE)

    def _retire_old(self) -> None:
        best = self.best()
        steps = [s for s in self.complete_steps() if not best or s != best["step"]]
        if not self.keep_last or len(steps) <= self.keep_last:
            return
        for step in steps[:-self.keep_last]:  # never the newest, nor the best
            doomed = self.root / f".step_{step}.deleting"
            (self.root / f"step_{step}").rename(doomed)
            shutil.rmtree(doomed, ignore_errors=True)

    # -- loading -----------------------------------------------------------------------------

    def fit_problem(self, path: pathlib.Path, model, optimizer) -> Optional[str]:
        """Why `load` could not fill this model and optimizer from `path` (a tensor the
        checkpoint lacks, or holds in another shape), else None: read from the checkpoint's
        metadata before anything is written, where DCP's own error would come mid-load."""
        from torch.distributed.checkpoint import FileSystemReader
        from torch.distributed.checkpoint._nested_dict import flatten_state_dict
        from torch.distributed.checkpoint.metadata import TensorStorageMetadata

        dcp = _dcp()
        model_sd, optim_sd = dcp.state_dict.get_state_dict(model, optimizer,
                                                           options=self._options())
        saved = FileSystemReader(str(path)).read_metadata().state_dict_metadata
        flat, _ = flatten_state_dict({"model": model_sd, "optim": optim_sd})
        for key, value in flat.items():
            if not isinstance(value, torch.Tensor):
                continue
            there = saved.get(key)
            if there is None:
                return f"{path} has no {key}, which this config's model or optimizer needs"
            if isinstance(there, TensorStorageMetadata) and tuple(there.size) != tuple(
                    value.shape):
                return (f"{path} holds {key} as {list(there.size)}, and this config's model "
                        f"needs {list(value.shape)}")
        return None

    def load(self, path: pathlib.Path, model, optimizer) -> dict:
        """Loads model and optimizer in place and this rank's RNG states; returns the trainer
        state (step, lr_schedule, wandb_run_id)."""
        path = pathlib.Path(path)
        dcp = _dcp()
        model_sd, optim_sd = dcp.state_dict.get_state_dict(model, optimizer,
                                                           options=self._options())
        state = {"model": model_sd, "optim": optim_sd}
        dcp.load(state, checkpoint_id=str(path))
        dcp.state_dict.set_state_dict(model, optimizer, model_state_dict=state["model"],
                                      optim_state_dict=state["optim"], options=self._options())
        rng = path / "rng" / f"rank_{dist.get_rank()}.json"
        if rng.exists():
            set_rng_state(json.loads(rng.read_text()))
        else:
            logging.warning("%s has no RNG state for rank %d (saved at another world size); "
                            "keeping this rank's seeded RNGs", path, dist.get_rank())
        return json.loads((path / STATE_FILE).read_text())


def rng_state() -> dict:
    """This process's python, numpy and torch (CPU, CUDA) RNG states, as JSON-able values."""
    np_state = np.random.get_state()
    state = {"python": _listify(random.getstate()),
             "numpy": [np_state[0], np_state[1].tolist(), *np_state[2:]],
             "torch": torch.get_rng_state().tolist()}
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state().tolist()
    return state


def set_rng_state(state: dict) -> None:
    random.setstate(_tuplify(state["python"]))
    np_state = state["numpy"]
    np.random.set_state((np_state[0], np.array(np_state[1], dtype=np.uint32), *np_state[2:]))
    torch.set_rng_state(torch.tensor(state["torch"], dtype=torch.uint8))
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state(torch.tensor(state["cuda"], dtype=torch.uint8))


def _listify(x):
    return [_listify(v) for v in x] if isinstance(x, (list, tuple)) else x


def _tuplify(x):
    return tuple(_tuplify(v) for v in x) if isinstance(x, list) else x


def _valid_marker(directory: pathlib.Path, step: int) -> bool:
    try:
        marker = json.loads((directory / MARKER).read_text())
        return (marker["step"] == step
                and marker["metadata_sha256"] == _sha256(directory / ".metadata"))
    except (OSError, ValueError, KeyError):
        return False


_HASH_THREADS = min(8, os.cpu_count() or 1)  # files verify() hashes at once


def verify(directory: pathlib.Path) -> Optional[str]:
    """None when every file COMPLETE.json lists has its recorded SHA-256, else what failed
    ("<file> is missing" or "<file> does not match its checksum")."""
    try:
        files = json.loads((directory / MARKER).read_text()).get("files", {})
    except (OSError, ValueError) as e:
        return f"{MARKER} cannot be read ({e})"
    missing = next((name for name in files if not (directory / name).is_file()), None)
    if missing is not None:
        return f"{missing} is missing"
    # Rank 0 checks every rank's shards while the others wait (under the collective timeout):
    # files are hashed concurrently (hashlib releases the GIL), the first mismatch reported.
    with concurrent.futures.ThreadPoolExecutor(_HASH_THREADS) as pool:
        digests = pool.map(lambda name: _sha256(directory / name), files)
        return next((f"{name} does not match its checksum"
                     for (name, want), got in zip(files.items(), digests) if got != want), None)


def _hash_files(root: pathlib.Path, patterns) -> dict:
    """{path relative to root: SHA-256} of the files matching `patterns` (globs or names)."""
    return {str(p.relative_to(root)): _sha256(p)
            for pattern in patterns for p in sorted(root.glob(pattern)) if p.is_file()}


def _sha256(path: pathlib.Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 24), b""):
            h.update(chunk)
    return h.hexdigest()


def _write_durably(path: pathlib.Path, text: str) -> None:
    with open(path, "w") as f:
        f.write(text)
        f.flush()
        os.fsync(f.fileno())


def _fsync_dir(path: pathlib.Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
