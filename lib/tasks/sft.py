"""Supervised fine-tuning: next-token cross-entropy on completions.

The loss is the mean over every completion token of the global batch (not a mean of
per-example or per-micro-batch means), so neither gradient accumulation nor the world size
changes it: each micro-batch returns its summed token loss and its token count as `weight`,
and the Trainer divides by the global count. Metrics: `loss` (per token), `perplexity`
(exp of it), `token_accuracy` (greedy next token right), `tokens` (trained tokens). At each
eval, a few held-out prompts are completed greedily and shown (console and a W&B table).
"""

import functools
import math
from typing import Callable

import torch

from lib.config.registry import configurable
from lib.data.batching import StepBatches
from lib.data.packing import forward, from_position, pack
from lib.generation import complete
from lib.models.limits import max_length_problems
from lib.models.logprobs import IGNORE, shifted_targets, token_logps
from lib.tasks import EVAL_METRICS, Task

SUMS = ("loss", "correct", "tokens")


def collate_examples(examples, pad_id: int, train_on_prompt: bool,
                     packed: bool = False) -> dict:
    """Right-padded tokens [b, longest] and next-token targets (IGNORE outside the loss); or,
    `packed`, the padding-free rows of lib/data/packing.py with their targets."""
    if packed:
        batch = pack([e.tokens for e in examples], pad_id)
        starts = torch.tensor([1 if train_on_prompt else e.prompt_length for e in examples])
        batch["targets"] = shifted_targets(batch["tokens"], from_position(batch, starts))
        batch["weight"] = int((batch["targets"] != IGNORE).sum())
        return batch
    longest = max(len(e.tokens) for e in examples)
    tokens = torch.full((len(examples), longest), pad_id, dtype=torch.long)
    mask = torch.zeros((len(examples), longest), dtype=torch.bool)
    for i, e in enumerate(examples):
        tokens[i, :len(e.tokens)] = torch.tensor(e.tokens, dtype=torch.long)
        mask[i, :len(e.tokens)] = True
    starts = torch.tensor([1 if train_on_prompt else e.prompt_length for e in examples])
    learn = mask & (torch.arange(longest)[None, :] >= starts[:, None])
    targets = shifted_targets(tokens, learn)
    return {"tokens": tokens, "targets": targets, "num_tokens": int(mask.sum()),
            "computed_tokens": tokens.numel(), "weight": int((targets != IGNORE).sum())}


class SFTTask(Task):
    model_head = "lm"
    sum_names = SUMS
    eval_metric_names = ("loss", "perplexity", "token_accuracy")
    progress = (("ppl", "perplexity", ".2f"), ("tok_acc", "token_accuracy", ".3f"))

    def __init__(self, data_fn: Callable, train_on_prompt: bool, num_samples: int,
                 max_new_tokens: int):
        self.data_fn, self.train_on_prompt = data_fn, train_on_prompt
        self.num_samples, self.max_new_tokens = num_samples, max_new_tokens

    def build_data(self, tokenizer):
        return self.data_fn(tokenizer)

    def _collate_fn(self):
        return functools.partial(collate_examples, pad_id=self.tokenizer.pad_id,
                                 train_on_prompt=self.train_on_prompt, packed=self.pack)

    def step_batches(self):
        return StepBatches(self.schedule, self.data.train, self._collate_fn())

    def _sums(self, model, batch):
        device = self.dist.device
        logits = forward(model, batch, device)
        targets = batch["targets"].to(device, non_blocking=True)
        logps = token_logps(logits, targets)
        correct = ((logits.argmax(-1) == targets) & (targets != IGNORE)).sum()
        loss_sum = -logps.sum()
        sums = torch.stack([loss_sum.detach(), correct.float(),
                            torch.full((), float(batch["weight"]), device=device)])
        return loss_sum, sums

    def micro_batch_loss(self, model, batch):
        return self._sums(model, batch)

    def metrics(self, sums, prefix):
        loss, correct, tokens = sums.tolist()
        mean = loss / max(tokens, 1.0)
        return {f"{prefix}/loss": mean, f"{prefix}/perplexity": math.exp(min(mean, 50.0)),
                f"{prefix}/token_accuracy": correct / max(tokens, 1.0),
                f"{prefix}/tokens": int(tokens)}

    @torch.no_grad()
    def evaluate(self, model) -> dict:
        sums = torch.zeros(len(SUMS))
        for batch, weight in self.eval_batches(self._collate_fn()):
            sums += self._sums(model, batch)[1].cpu() * weight
        return self.metrics(self.reduce(sums), "eval")

    def eval_samples(self, model):
        examples = self.data.eval[:self.num_samples]
        if not examples:
            return []
        prompts = [e.tokens[:e.prompt_length] for e in examples]
        outs = complete(model, prompts, self.max_new_tokens, [self.tokenizer.eos_id],
                        model.max_seq_len, self.dist.device)
        return [{"prompt": self.tokenizer.decode(p[1:]),
                 "completion": self.tokenizer.decode([t for t in o
                                                      if t != self.tokenizer.eos_id]),
                 "reference": self.tokenizer.decode(e.tokens[e.prompt_length:-1])}
                for p, o, e in zip(prompts, outs, examples)]


def _check(view):
    problems = []
    if view.refers_to("sft_task", "data_fn", "build_sft_data"):
        problems += max_length_problems(view, "build_sft_data")
    for arg in ("num_samples", "max_new_tokens"):
        if view.get("sft_task", arg) < 0:
            problems.append((arg, f"{arg}={view.get('sft_task', arg)} must be >= 0"))
    return problems


@configurable(check=_check, resume_sensitive=("data_fn", "train_on_prompt"))
def sft_task(data_fn: Callable, train_on_prompt: bool = False, num_samples: int = 3,
             max_new_tokens: int = 48) -> SFTTask:
    """Supervised fine-tuning on prompt-completion examples: an LM head.

    Args:
      data_fn: (tokenizer) -> SFTData (e.g. @build_sft_data).
      train_on_prompt: also take the loss on prompt tokens (default: completion and EOS only).
      num_samples: held-out prompts completed greedily at each eval and shown (console, W&B
        table "eval/samples"); 0 shows none.
      max_new_tokens: the longest sample completion, in tokens.
    """
    return SFTTask(data_fn, train_on_prompt, num_samples, max_new_tokens)


EVAL_METRICS["sft_task"] = SFTTask.eval_metric_names
