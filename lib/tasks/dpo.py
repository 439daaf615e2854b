"""Direct preference optimization: a policy (LM head) trained on preference pairs.

Each micro-batch runs chosen and rejected sides in one forward; a side's log-probability is the
sum over its response tokens (EOS included). The loss (lib/dpo_losses.py) compares them with
the reference policy's: the policy at initialization (after `init_from`). By default the
reference log-probabilities are computed once, before training, split over the ranks, and
stored in `<workdir>/reference_logps.safetensors` under a key that digests the initial weights,
the tokenizer, the encoded data (so max_length too) and the loss's length averaging. A resume
reads that file and refuses to go on if it is missing or its key differs: the reference is
never recomputed from trained weights. `reference="frozen_copy"` keeps a copy of the initial
model, sharded and wrapped as the policy is (lib/models/copies.py), and computes the reference
on the fly instead (same losses, one more shard of the weights per rank); with LoRA adapters it
runs the policy with its adapters disabled instead, with no copy.

Metrics use the reward task's names for the implicit rewards beta * log-ratio (`accuracy`,
`tie_rate`, `margin`, `reward_chosen`, `reward_rejected`, `reward_std`) plus `logps_chosen` and
`logps_rejected` (mean summed log-probabilities), so one runs table compares both column by
column. Pair margins in the data are not used.
"""

import functools
import hashlib
import json
import os
import pathlib
from typing import Callable

import torch
from absl import logging

from lib import distributed
from lib.config.registry import configurable
from lib.data.batching import StepBatches, collate_pairs, eval_shard
from lib.data.packing import packed_forward, per_sequence_sum
from lib.initialization import state_digest
from lib.losses import METRIC_SUMS, metric_sums, metrics_from_sums
from lib.models.limits import max_length_problems
from lib.models.lora import is_adapted
from lib.models.logprobs import IGNORE, response_mask, shifted_targets, token_logps
from lib.tasks import EVAL_METRICS, Task
from lib.tasks.reward import PAIR_METRICS

SUMS = METRIC_SUMS + ("logps_chosen", "logps_rejected")
REFERENCES = ("cached", "frozen_copy")
CACHE_FILE = "reference_logps.safetensors"


class ReferenceError(ValueError):
    """The stored reference log-probabilities cannot be used for this run."""


def collate_indexed(items, pad_id: int, packed: bool = False) -> dict:
    """collate_pairs() of (index, pair) items, plus the pairs' indices (to find cached
    values)."""
    batch = collate_pairs([pair for _, pair in items], pad_id, packed)
    batch["indices"] = torch.tensor([i for i, _ in items], dtype=torch.long)
    return batch


class DPOTask(Task):
    model_head = "lm"
    sum_names = SUMS
    eval_metric_names = PAIR_METRICS + ("logps_chosen", "logps_rejected")
    progress = (("acc", "accuracy", ".3f"), ("margin", "margin", ".3f"))

    def __init__(self, data_fn: Callable, loss_fn: Callable, reference: str):
        self.data_fn, self.loss_fn, self.reference = data_fn, loss_fn, reference
        self.ref_model, self.cache, self.key = None, None, None
        self.disable_adapters = False

    @property
    def wants_weights_digest(self) -> bool:
        return self._cached_reference  # its key

    @property
    def _cached_reference(self) -> bool:
        return self.loss_fn.needs_reference and self.reference == "cached"

    def on_weights_streamed(self, digest) -> None:
        self.weights_digest = digest

    def build_data(self, tokenizer):
        return self.data_fn(tokenizer)

    def summary(self) -> dict:
        facts = {**self.data.stats(), "reference/mode": (
            self.reference if self.loss_fn.needs_reference else "none (reference-free loss)")}
        if self.key:
            facts["reference/key"] = self.key
        return facts

    def step_batches(self):
        return StepBatches(self.schedule, list(enumerate(self.data.train)), functools.partial(
            collate_indexed, pad_id=self.tokenizer.pad_id, packed=self.pack))

    # -- the reference ------------------------------------------------------------------------

    def on_model_built(self, model) -> None:
        if self._cached_reference:
            self.weights_digest = state_digest(model.state_dict())

    def on_model_sharded(self, model, copies) -> None:
        if self.loss_fn.needs_reference and self.reference == "frozen_copy":
            if is_adapted(model):  # the base is the adapters-off model: no copy needed
                self.disable_adapters = True
            else:  # sharded as the policy: each rank keeps its shard, computing as the policy
                self.ref_model = copies.frozen()

    def prepare(self, model, workdir: pathlib.Path, resuming: bool) -> None:
        if not self._cached_reference:
            return
        self.key = self._cache_key()
        path = workdir / CACHE_FILE
        stored = _read_cache(path)
        if stored is not None and stored[0] == self.key:
            self.cache = stored[1]
            logging.info("reference log-probabilities: %s (key %s)", path, self.key[:12])
            return
        if resuming:
            why = "is missing" if stored is None else f"has key {stored[0][:12]}"
            raise ReferenceError(
                f"{path} {why}, but this run's reference needs key {self.key[:12]} (initial "
                "weights, tokenizer, data, length averaging); a resume never recomputes the "
                "reference from trained weights. Resume with the config that started the run, "
                "or start a new --workdir")
        model.eval()
        self.cache = {split: self._compute(model, getattr(self.data, split))
                      for split in ("train", "eval")}
        if self.dist.is_main:
            _write_cache(path, self.key, self.cache)
            logging.info("reference log-probabilities computed and stored: %s (key %s)",
                         path, self.key[:12])
        distributed.barrier()

    def _cache_key(self) -> str:
        h = hashlib.sha256()
        tokenizer_file = self.tokenizer.path / "tokenizer.json"
        h.update(json.dumps({
            "weights": self.weights_digest,
            "tokenizer": hashlib.sha256(tokenizer_file.read_bytes()).hexdigest(),
            "length_normalized": self.loss_fn.length_normalized}).encode())
        for split in ("train", "eval"):
            for p in getattr(self.data, split):
                h.update(repr((p.chosen, p.rejected, p.prompt_lengths)).encode())
        return h.hexdigest()

    @torch.no_grad()
    def _compute(self, model, pairs) -> torch.Tensor:
        """[n, 2] summed log-probabilities (chosen, rejected) of every pair, each rank
        computing its share."""
        out = torch.zeros(len(pairs), 2)
        for indices in eval_shard(len(pairs), self.dist.rank, self.dist.world_size,
                                  self.eval_batch_size):
            batch = collate_pairs([pairs[j] for j in indices] or pairs[:1],
                                  self.tokenizer.pad_id, self.pack)
            logps, _ = self._logps(model, batch)
            if indices:
                k = len(indices)
                out[indices] = torch.stack([logps[:k], logps[k:]], dim=1).cpu()
        return distributed.all_reduce_sum(out)

    def _reference_logps(self, model, batch, split: str):
        if self.ref_model is not None:
            with torch.no_grad():
                return self._logps(self.ref_model, batch)[0]
        if self.disable_adapters:
            from torchtune.modules.peft import disable_adapter

            with torch.no_grad(), disable_adapter(model):
                return self._logps(model, batch)[0]
        cached = self.cache[split][batch["indices"]].to(self.dist.device, non_blocking=True)
        return torch.cat([cached[:, 0], cached[:, 1]])

    # -- the loss -----------------------------------------------------------------------------

    def _logps(self, model, batch):
        """(summed response log-probabilities [2n], response tokens [2n]), chosen rows first."""
        device = self.dist.device
        tokens = batch["tokens"].to(device, non_blocking=True)
        if "segments" in batch:  # packed: sum each sequence's own positions
            targets = shifted_targets(tokens, batch["response"].to(device, non_blocking=True))
            logps = token_logps(packed_forward(model, batch, device), targets)
            # A target at t is the next token of t's own sequence (a sequence's first token
            # is prompt, never a target), so t's segment owns it.
            segments, n = batch["segments"].to(device, non_blocking=True), len(batch["ends"])
            return (per_sequence_sum(logps, segments, n),
                    per_sequence_sum((targets != IGNORE).float(), segments, n))
        mask, prompt_lengths = (batch[k].to(device, non_blocking=True)
                                for k in ("attention_mask", "prompt_lengths"))
        learn = response_mask(mask, prompt_lengths)
        targets = shifted_targets(tokens, learn)
        logps = token_logps(model(tokens), targets)
        return logps.sum(-1), learn[:, 1:].sum(-1).float()

    def _pair_losses(self, model, batch, split):
        logps, counts = self._logps(model, batch)
        n = logps.shape[0] // 2
        if self.loss_fn.needs_reference:
            ref = self._reference_logps(model, batch, split)
            ref_c, ref_r = ref[:n], ref[n:]
        else:
            ref_c = ref_r = None
        loss, chosen, rejected = self.loss_fn(logps[:n], logps[n:], ref_c, ref_r,
                                              counts[:n], counts[n:])
        return loss, chosen, rejected, logps.detach()

    def _sums(self, loss, chosen, rejected, logps, weight):
        n = chosen.shape[0]
        return torch.cat([metric_sums(loss, chosen, rejected, weight),
                          torch.stack([(logps[:n] * weight).sum(), (logps[n:] * weight).sum()])])

    def micro_batch_loss(self, model, batch):
        loss, chosen, rejected, logps = self._pair_losses(model, batch, "train")
        return loss.sum(), self._sums(loss, chosen, rejected, logps, torch.ones_like(loss))

    def metrics(self, sums, prefix):
        out = metrics_from_sums(sums[:len(METRIC_SUMS)], prefix)
        pairs = max(float(sums[METRIC_SUMS.index("pairs")]), 1.0)
        out[f"{prefix}/logps_chosen"] = float(sums[-2]) / pairs
        out[f"{prefix}/logps_rejected"] = float(sums[-1]) / pairs
        return out

    @torch.no_grad()
    def evaluate(self, model) -> dict:
        sums = torch.zeros(len(SUMS))
        pad_id = self.tokenizer.pad_id
        for batch, weight in self.eval_batches(
                lambda items: collate_indexed(items, pad_id, self.pack), indexed=True):
            loss, chosen, rejected, logps = self._pair_losses(model, batch, "eval")
            sums += self._sums(loss, chosen, rejected, logps,
                               torch.full_like(loss, weight)).cpu()
        return self.metrics(self.reduce(sums), "eval")


def _read_cache(path: pathlib.Path):
    """(key, {"train": [n, 2], "eval": [m, 2]}) from the stored file, or None."""
    if not path.exists():
        return None
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        return f.metadata()["key"], {k: f.get_tensor(k) for k in ("train", "eval")}


def _write_cache(path: pathlib.Path, key: str, cache: dict) -> None:
    from safetensors.torch import save_file

    tmp = path.with_name(path.name + ".partial")
    save_file({k: v.contiguous() for k, v in cache.items()}, str(tmp), metadata={"key": key})
    os.replace(tmp, path)


def _check(view):
    problems = []
    reference = view.get("dpo_task", "reference")
    if reference not in REFERENCES:
        problems.append(("reference", f"reference={reference!r}; valid: "
                         f"{', '.join(REFERENCES)}"))
    loss = view.get("dpo_task", "loss_fn")
    # A saved config writes every default, so only a value other than the default is an error.
    if getattr(loss, "name", None) == "simpo_loss" and reference != "cached":
        problems.append(("reference", "reference is bound but simpo_loss is reference-free, "
                         "so the binding does nothing; remove it"))
    if view.refers_to("dpo_task", "data_fn", "build_preference_data"):
        problems += max_length_problems(view, "build_preference_data")
    return problems


@configurable(check=_check, resume_sensitive=("data_fn", "reference"))
def dpo_task(data_fn: Callable, loss_fn: Callable, reference: str = "cached") -> DPOTask:
    """Direct preference optimization on preference pairs: an LM head (the policy).

    Args:
      data_fn: (tokenizer) -> PreferenceData (e.g. @build_preference_data).
      loss_fn: the preference loss (@sigmoid_dpo_loss(), @ipo_loss(), @dpo_norm_loss(),
        @simpo_loss()); see lib/dpo_losses.py.
      reference: "cached" computes the initial policy's log-probabilities once before training
        and stores them in the run folder (a resume reuses them); "frozen_copy" keeps a copy
        of the initial model and computes them at each step. Not used by reference-free
        losses (binding it with simpo_loss is an error).
    """
    return DPOTask(data_fn, loss_fn, reference)


EVAL_METRICS["dpo_task"] = DPOTask.eval_metric_names
