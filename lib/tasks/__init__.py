"""Tasks: what differs between training objectives, behind the one surface the Trainer uses.

The Trainer (lib/trainer.py) owns the loop: steps, gradient accumulation, clipping, the
finiteness check, the LR schedule, eval and checkpoint cadence, stop requests, logging and
sharding. A task owns the rest, and the Trainer reaches it only through `Task`:

    setup(tokenizer, dist_info, seed, batch sizes, pack)   read its data, build the schedule
    model_head                                  "lm" or "reward": what the model builder attaches
    on_model_built(model)                       the initial weights, before sharding (1 process)
    on_weights_streamed(digest)                 instead, when ranks streamed their shards
    on_model_sharded(model, copies)             the sharded model; copies of it it may keep
    prepare(model, workdir, resuming)           after sharding, before a checkpoint is restored
    step_batches()                              step -> this rank's collated micro-batches
    rollout(model, micro_batches)               a step's batches made with the model (GRPO)
    checkpointable(step)                        whether a checkpoint may be taken after step
    micro_batch_loss(model, batch)              (loss sum to back-propagate, metric sums)
    metrics(sums, prefix)                       metric sums -> named metrics
    evaluate(model)                             eval metrics, exact at any world size
    eval_samples(model)                         a few generated examples to show, or []
    summary(), checkpoint_state(), export(...)

A micro-batch is a dict with at least `num_tokens` (non-pad tokens, for tokens/s),
`computed_tokens` (the tokens the model runs on, padding included) and `weight` (the units its
loss sums over: pairs, or completion tokens). With `pack` (Trainer.pack) a task collates its
micro-batches padding-free (lib/data/packing.py), eval batches too. The Trainer divides each
loss sum by the global batch's total weight, so the gradient is the mean over the global batch
whatever the split into ranks and micro-batches. Adding a task touches no file of the loop.
"""

import array
import hashlib
import pathlib
from typing import List, Optional, Sequence

import torch

from lib import distributed
from lib.data.batching import StepSchedule, eval_shard


# {task configurable name: its eval metric names}, for config checks that name a metric
# (Checkpointer.best_metric); each task module adds its own.
EVAL_METRICS = {}


def examples_digest(data) -> str:
    """SHA-256 of a task's encoded train and eval examples: their tokens and fields (the data
    files' contents as read, tokenized and cut), not the paths they came from."""
    h = hashlib.sha256()
    for split in ("train", "eval"):
        h.update(f"{split}:".encode())
        for example in getattr(data, split):
            for key, value in vars(example).items():
                if key == "source":
                    continue
                try:  # token ids: their bytes, three times faster than their repr
                    h.update(b"%s=%d:" % (key.encode(), len(value))
                             + array.array("q", value).tobytes())
                except TypeError:
                    h.update(f"{key}={value!r};".encode())
    return h.hexdigest()


class Task:
    """The base of every task: the schedule of training examples and default hooks."""

    model_head = "lm"
    sum_names: Sequence[str] = ()
    # (label, metric name, format) shown on the console's progress line beside the loss.
    progress: Sequence[tuple] = ()
    # The eval metric names (without the "eval/" prefix) a best-checkpoint rule may name.
    eval_metric_names: Sequence[str] = ()
    # Whether a task that streams wants lib.initialization.state_digest of the initial weights
    # (on_weights_streamed), which on_model_built would otherwise compute from the full model.
    wants_weights_digest = False

    def setup(self, tokenizer, dist_info, seed: int, global_batch_size: int,
              micro_batch_size: int, eval_batch_size: int, pack: bool = False) -> None:
        """Reads and encodes the data; builds the step schedule of the training set."""
        self.tokenizer, self.dist, self.pack = tokenizer, dist_info, pack
        self.eval_batch_size = eval_batch_size
        self.data = self.build_data(tokenizer)
        for split in ("train", "eval"):
            problem = self._all_dropped(split)
            if problem:
                raise ValueError(problem)
        self.data_digest = examples_digest(self.data)
        if not self.data.eval:
            raise ValueError(f"{type(self).__name__}: no eval examples: give the data "
                             "builder's eval_files or eval_fraction")
        self.schedule = StepSchedule(len(self.data.train), global_batch_size, dist_info.rank,
                                     dist_info.world_size, micro_batch_size, seed)

    def _all_dropped(self, split: str) -> Optional[str]:
        """Why a split read rows but kept none (every one dropped), else None."""
        stats = self.data.stats()
        rows = stats.get(f"data/{split}/rows", 0)
        if not rows or getattr(self.data, split):
            return None
        why = ", ".join(f"{k.rsplit('/', 1)[1]}: {v}" for k, v in stats.items()
                        if k.startswith(f"data/{split}/dropped") and v)
        return (f"{type(self).__name__}: all {rows} {split} rows were dropped ({why}); raise "
                "max_length or keep over-length rows with overlength_policy='truncate', and "
                "remove empty or identical replies")

    def build_data(self, tokenizer):
        raise NotImplementedError

    def summary(self) -> dict:
        """Run-level facts for summary.json and W&B: data counts by default."""
        return self.data.stats()

    def on_model_built(self, model) -> None:
        """Sees the full initial model (init_from applied), before sharding, in one process;
        several ranks stream their shards instead (on_weights_streamed)."""

    def on_weights_streamed(self, digest) -> None:
        """Instead of on_model_built when the ranks streamed their shards: the initial weights'
        digest if wants_weights_digest, else None."""

    def on_model_sharded(self, model, copies) -> None:
        """After the model is sharded (or left unwrapped), before any update: `copies`
        (lib.models.copies.ModelCopies) makes what the task keeps beside it, e.g. a frozen
        reference sharded as the model is (`copies.frozen()`)."""

    def prepare(self, model, workdir: pathlib.Path, resuming: bool) -> None:
        """Called once the model is built and sharded, before any checkpoint is restored."""

    def step_batches(self) -> torch.utils.data.Dataset:
        raise NotImplementedError

    def rollout(self, model, micro_batches: List[dict]) -> List[dict]:
        """The step's micro-batches as training needs them. A task that trains on what the
        model generates (GRPO) samples and scores here, every rank at once (a sharded model
        needs every rank); others return them unchanged."""
        return micro_batches

    def checkpointable(self, step: int) -> bool:
        """Whether the state after `step` can be saved and resumed exactly (GRPO: only after a
        rollout's last pass). A stop request waits for such a step."""
        return True

    def micro_batch_loss(self, model, batch: dict):
        raise NotImplementedError

    def metrics(self, sums: torch.Tensor, prefix: str) -> dict:
        raise NotImplementedError

    def evaluate(self, model) -> dict:
        raise NotImplementedError

    def eval_samples(self, model) -> List[dict]:
        return []

    def checkpoint_state(self) -> dict:
        """JSON-able facts saved in trainer_state.json beside the weights: the digest of the
        examples it was trained on, which a resume compares."""
        return {"data_digest": self.data_digest}

    def export(self, model, tokenizer, directory: pathlib.Path, is_main: bool) -> None:
        from lib.models.export import export_hf

        export_hf(model, tokenizer, directory, is_main, self.model_head)

    # -- shared by the tasks ------------------------------------------------------------------

    def eval_batches(self, collate_fn, indexed: bool = False):
        """Yields (batch, weight) over this rank's share of the eval set: every rank the same
        number of batches (FSDP needs every rank in each forward); a rank out of examples gets
        a placeholder batch of weight 0. With `indexed`, collate_fn gets (index, example)."""
        examples = self.data.eval
        for indices in eval_shard(len(examples), self.dist.rank, self.dist.world_size,
                                  self.eval_batch_size):
            items = [(j, examples[j]) for j in indices or [0]]
            yield (collate_fn(items if indexed else [e for _, e in items]),
                   1.0 if indices else 0.0)

    @staticmethod
    def reduce(sums: torch.Tensor) -> torch.Tensor:
        return distributed.all_reduce_sum(sums)
