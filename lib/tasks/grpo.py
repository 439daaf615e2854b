"""GRPO: a policy (LM head) trained on its own sampled completions, scored by reward functions.

Group Relative Policy Optimization (Shao et al., 2024, DeepSeekMath). At each rollout, every
prompt of the step gets `group_size` completions sampled from the current policy
(lib/rollout.py); the configured reward functions (lib/rewards.py) score them; a completion's
advantage is its weighted reward minus its group's mean, divided by the group's standard
deviation (`scale_advantages`; Dr. GRPO, Liu et al., 2025, leaves it out). The loss is PPO's
clipped surrogate per completion token, with DAPO's separate clip range (1 - clip_low,
1 + clip_high; Yu et al., 2025), plus kl_coef times the k3 estimate of KL to the reference
policy (the initial weights: a frozen copy, or the adapters switched off under LoRA; Schulman,
2020). Log-probabilities are of the logits divided by the sampling temperature, the
distribution the completions were drawn from (as TRL does).

The Trainer's batch sizes count prompts: global_batch_size prompts per step, micro_batch_size
per forward (each with its group_size completions), so a group never straddles micro-batches
or ranks. With `num_passes` > 1 a rollout's completions train `num_passes` consecutive steps
(the ratio's old log-probabilities are the policy's at the rollout); a checkpoint can only be
taken after a rollout's last pass, so checkpoint_every and num_steps are multiples of it, and a
stop request waits for that boundary. Sampling draws from a generator seeded by (seed, rollout
step, the micro-batch's place in the global batch), so a resumed run samples exactly what the
uninterrupted run did, and 2 ranks sample what 1 rank does.

Metrics: `reward` (mean and `reward_std` of the weighted total), `rewards/<name>` and
`rewards/<name>_std` per function,
`equal_reward_groups` (share of groups with all rewards equal: no gradient), `kl` (per token,
with kl_coef > 0), `clip_ratio`
(share of tokens whose ratio was clipped), `completion_length` (mean; `_max`; `truncated`, the
share that hit max_new_tokens without a stop token), `entropy` (per token, nats),
`generation_tokens_per_s`; the Trainer adds `tokens_per_s` (training tokens). Eval:
`pass_at_1`, the share of held-out prompts whose greedy completion gets the full reward from
every verifiable function, `reward` and `rewards/<name>` of those completions, and a few
completions with their rewards (console and the W&B table eval/samples).
"""

import dataclasses
import time
from typing import Callable, List, Sequence

import torch

from lib import distributed
from lib.config import registry
from lib.config.registry import configurable
from lib.config.values import Ref
from lib.data.batching import eval_shard
from lib.data.packing import forward, pack, per_sequence_sum
from lib.data.sources import DataError, kind_of
from lib.models.limits import max_length_problems
from lib.models.logprobs import IGNORE, shifted_targets, token_logps
from lib.models.lora import is_adapted
from lib.rollout import Sampler, Sampling
from lib.tasks import EVAL_METRICS, Task

AGGREGATIONS = ("token", "sequence")
KL_ESTIMATORS = ("k3", "k1")
# Sums per step, before the per-function reward sums.
BASE_SUMS = ("loss", "completions", "reward", "reward_sq", "groups", "equal_groups",
             "tokens", "kl", "clipped", "entropy", "truncated", "generated", "generation_s")


# Zeroes the generation counts of a rollout's sums (the last two) on its later passes.
_NOT_GENERATION = torch.tensor([1.0] * 6 + [0.0, 0.0])


class PromptBatches(torch.utils.data.Dataset):
    """Item `step`: this rank's micro-batches of prompts at that step (for its rollout)."""

    def __init__(self, schedule, prompts, num_passes: int):
        self.schedule, self.prompts, self.num_passes = schedule, prompts, num_passes

    def __len__(self):
        return 2 ** 62

    def __getitem__(self, step: int) -> List[dict]:
        rollout = step - step % self.num_passes
        return [{"prompts": [self.prompts[j] for j in indices], "rollout_step": rollout,
                 "index": i}
                for i, indices in enumerate(self.schedule.micro_batches(rollout))]


@dataclasses.dataclass
class Settings:
    group_size: int
    sampling: Sampling
    reward_weights: Sequence[float]
    scale_advantages: bool
    clip_low: float
    clip_high: float
    kl_coef: float
    kl_estimator: str
    loss_aggregation: str
    num_passes: int
    num_samples: int


class GRPOTask(Task):
    model_head = "lm"
    eval_metric_names = ("pass_at_1", "reward")
    progress = (("reward", "reward", ".3f"), ("len", "completion_length", ".1f"))

    def __init__(self, data_fn: Callable, reward_fns: Sequence, settings: Settings):
        self.data_fn, self.reward_fns, self.cfg = data_fn, list(reward_fns), settings
        self.sum_names = (BASE_SUMS + tuple(f"rewards/{f.name}" for f in self.reward_fns)
                          + tuple(f"rewards_sq/{f.name}" for f in self.reward_fns))
        self.eval_metric_names += tuple(f"rewards/{f.name}" for f in self.reward_fns)
        self.ref_model = self.sampler = None
        self.disable_adapters = False
        self._cached = (None, None)  # (rollout step, its micro-batches)
        self._longest = 0  # the longest completion since the last report
        self._samples = []

    def setup(self, tokenizer, dist_info, seed, global_batch_size, micro_batch_size,
              eval_batch_size, pack=False):
        super().setup(tokenizer, dist_info, seed, global_batch_size, micro_batch_size,
                      eval_batch_size, pack)
        self.seed, self.micro_batch_size = seed, micro_batch_size
        sampling = self.cfg.sampling
        self.sampling = dataclasses.replace(
            sampling, stop_tokens=tuple(dict.fromkeys([tokenizer.eos_id,
                                                       *sampling.stop_tokens])))
        needed = {f for fn in self.reward_fns for f in fn.fields}
        for prompt in (*self.data.train, *self.data.eval):  # before any model is built
            missing = needed - set(prompt.fields)
            if missing:
                raise DataError(f"{prompt.source}: no field {sorted(missing)[0]!r}, which the "
                                f"reward functions read; the row has "
                                f"{', '.join(sorted(prompt.fields))}")
            for name in sorted(needed):  # a reference answer is compared as text
                value = prompt.fields[name]
                if not isinstance(value, (str, int, float)) or isinstance(value, bool):
                    raise DataError(f"{prompt.source}: the field {name!r}, which the reward "
                                    f"functions read, is {kind_of(value)}; give a string or a "
                                    "number")

    def build_data(self, tokenizer):
        return self.data_fn(tokenizer)

    def summary(self) -> dict:
        return {**self.data.stats(), "reference/mode": self._reference_mode()}

    def _reference_mode(self) -> str:
        if not self.cfg.kl_coef:
            return "none (kl_coef=0)"
        return "adapters off" if self.disable_adapters else "frozen_copy"

    # -- models -------------------------------------------------------------------------------

    def on_model_sharded(self, model, copies) -> None:
        from lib.parallel import is_sharded

        if self.cfg.kl_coef:
            if is_adapted(model):  # the reference is the adapters-off model: no copy
                self.disable_adapters = True
            else:  # sharded as the policy: each rank keeps its shard, computing as the policy
                self.ref_model = copies.frozen()
        # Generation needs an unsharded model: a sharded policy gathers its weights into a
        # copy before each rollout (Sampler.sync), held in the precision the policy computes in.
        self.sampler = Sampler(copies.unsharded(model.compute_dtype) if is_sharded(model)
                               else None, self.dist.device)

    def checkpointable(self, step: int) -> bool:
        return step % self.cfg.num_passes == 0

    # -- rollouts -----------------------------------------------------------------------------

    def step_batches(self):
        return PromptBatches(self.schedule, self.data.train, self.cfg.num_passes)

    def rollout(self, model, micro_batches):
        step = micro_batches[0]["rollout_step"]
        if self._cached[0] == step:  # a later pass: no generation to count again
            return [dict(b, rollout_sums=(b["rollout_sums"][0] * _NOT_GENERATION,
                                          b["rollout_sums"][1])) for b in self._cached[1]]
        self.sampler.sync(model)
        out = [self._rollout_one(model, mb, step) for mb in micro_batches]
        if self.cfg.num_passes > 1:
            self._cached = (step, out)
        return out

    def _generator(self, step: int, index: int) -> torch.Generator:
        """The sampling generator of this rank's micro-batch `index` at rollout `step`, seeded
        by the micro-batch's place in the global batch (not the rank): the same prompts are
        sampled alike whatever the world size."""
        first = self.dist.rank * self.schedule.global_batch_size // self.dist.world_size \
            + index * self.micro_batch_size
        seed = (self.seed * 1_000_003 + step) * 1_000_033 + first
        return torch.Generator(device=self.dist.device).manual_seed(seed % 2 ** 63)

    def _score(self, prompts, completions):
        """([n, functions] rewards, [n] weighted totals) of completions (token ids)."""
        eos = self.tokenizer.eos_id
        texts = [self.tokenizer.decode([t for t in c if t != eos]) for c in completions]
        per_fn = torch.tensor([fn(texts, completions, prompts) for fn in self.reward_fns],
                              dtype=torch.float32).T.reshape(len(completions), -1)
        weights = torch.tensor(self.cfg.reward_weights, dtype=torch.float32)
        return per_fn, per_fn @ weights, texts

    def _rollout_one(self, model, micro_batch, step):
        cfg = self.cfg
        prompts = [p for p in micro_batch["prompts"] for _ in range(cfg.group_size)]
        t0 = time.perf_counter()
        completions = self.sampler.generate(
            [p.tokens for p in prompts], self.sampling, self.tokenizer.pad_id,
            self._generator(step, micro_batch["index"]))
        generation_s = time.perf_counter() - t0
        per_fn, total, _ = self._score(prompts, completions)
        groups = total.reshape(-1, cfg.group_size)
        advantages = groups - groups.mean(1, keepdim=True)
        if cfg.scale_advantages:
            advantages = advantages / (groups.std(1, keepdim=True) + 1e-4)
        batch = self._collate(prompts, completions)
        batch["advantages"] = advantages.reshape(-1)
        lengths = torch.tensor([len(c) for c in completions], dtype=torch.float32)
        stops = set(self.sampling.stop_tokens)
        truncated = sum(1 for c in completions if not c or c[-1] not in stops)
        self._longest = max(self._longest, int(lengths.max()))
        equal = float((groups.max(1).values == groups.min(1).values).sum())
        batch["rollout_sums"] = torch.tensor(
            [len(completions), float(total.sum()), float((total ** 2).sum()),
             groups.shape[0], equal, float(truncated), float(lengths.sum()),
             generation_s]), torch.cat([per_fn.sum(0), (per_fn ** 2).sum(0)])
        with torch.no_grad():
            if cfg.num_passes > 1:
                batch["old_logps"] = self._logps(model, batch)[0].detach()
            if self.ref_model is not None:
                batch["ref_logps"] = self._logps(self.ref_model, batch)[0]
            elif self.disable_adapters:
                from torchtune.modules.peft import disable_adapter

                with disable_adapter(model):
                    batch["ref_logps"] = self._logps(model, batch)[0]
        return batch

    def _collate(self, prompts, completions) -> dict:
        """Prompt + completion sequences, padded or packed, with `seq` (each position's
        sequence, -1 for padding) and next-token targets on the completion tokens."""
        seqs = [p.tokens + c for p, c in zip(prompts, completions)]
        starts = torch.tensor([len(p.tokens) for p in prompts])
        if self.pack:
            batch = pack(seqs, self.tokenizer.pad_id)
            seq = batch["segments"]
            positions = batch["positions"]
        else:
            longest = max(len(s) for s in seqs)
            tokens = torch.full((len(seqs), longest), self.tokenizer.pad_id, dtype=torch.long)
            seq = torch.full((len(seqs), longest), -1, dtype=torch.long)
            for i, s in enumerate(seqs):
                tokens[i, :len(s)] = torch.tensor(s, dtype=torch.long)
                seq[i, :len(s)] = i
            positions = torch.arange(longest).expand(len(seqs), -1)
            batch = {"tokens": tokens, "num_tokens": sum(map(len, seqs)),
                     "computed_tokens": tokens.numel()}
        learn = (seq >= 0) & (positions >= starts[seq.clamp(min=0)])
        batch["targets"] = shifted_targets(batch["tokens"], learn)
        batch["seq"], batch["num_seqs"] = seq, len(seqs)
        # The loss's unit: completion tokens, or completions.
        batch["weight"] = (int((batch["targets"] != IGNORE).sum())
                           if self.cfg.loss_aggregation == "token" else len(seqs))
        return batch

    # -- the loss -----------------------------------------------------------------------------

    def _logps(self, model, batch):
        """(per-token log-probabilities of the targets at the sampling temperature [rows, s],
        logits / temperature)."""
        device = self.dist.device
        logits = forward(model, batch, device).float() / self.sampling.temperature
        return token_logps(logits, batch["targets"].to(device)), logits

    def micro_batch_loss(self, model, batch):
        cfg, device = self.cfg, self.dist.device
        logps, logits = self._logps(model, batch)
        targets = batch["targets"].to(device)
        mask = (targets != IGNORE).float()
        seq = batch["seq"].to(device)
        # A target at t is the next token of t's own sequence, so t's sequence owns it.
        advantages = batch["advantages"].to(device)[seq.clamp(min=0)]
        old = batch["old_logps"].to(device) if "old_logps" in batch else logps.detach()
        ratio = torch.exp(logps - old)
        clipped = ratio.clamp(1 - cfg.clip_low, 1 + cfg.clip_high)
        per_token = -torch.minimum(ratio * advantages, clipped * advantages)
        kl = torch.zeros_like(logps)
        if "ref_logps" in batch:
            log_ratio = batch["ref_logps"].to(device) - logps
            kl = (torch.exp(log_ratio) - log_ratio - 1 if cfg.kl_estimator == "k3"
                  else -log_ratio)
            per_token = per_token + cfg.kl_coef * kl
        n = batch["num_seqs"]
        if cfg.loss_aggregation == "token":
            loss_sum = (per_token * mask).sum()
        else:  # each completion's mean over its tokens, summed over completions
            counts = per_sequence_sum(mask, seq, n).clamp(min=1)
            loss_sum = (per_sequence_sum(per_token * mask, seq, n) / counts).sum()
        with torch.no_grad():
            log_probs = torch.log_softmax(logits, -1)
            entropy = -(log_probs.exp() * log_probs).sum(-1)
            was_clipped = ((ratio * advantages) > (clipped * advantages)).float()
            loss_terms = torch.stack([
                loss_sum.detach(), (kl * mask).sum(), (was_clipped * mask).sum(),
                (entropy * mask).sum()])
        # The rollout's sums (completions, reward, reward_sq, groups, equal, then truncated,
        # generated, generation_s, then per function) reach the device in one copy that does
        # not wait for the GPU; the token count stays there.
        host = torch.cat(batch["rollout_sums"]).to(device, non_blocking=True)
        sums = torch.cat([loss_terms[:1], host[:5], mask.sum()[None], loss_terms[1:], host[5:]])
        return loss_sum, sums

    def metrics(self, sums, prefix):
        s = dict(zip(self.sum_names, sums.tolist()))
        n = max(s["completions"], 1.0)
        tokens = max(s["tokens"], 1.0)
        mean = s["reward"] / n
        out = {f"{prefix}/loss": s["loss"] / max(s["completions" if self.cfg.loss_aggregation
                                                  == "sequence" else "tokens"], 1.0),
               f"{prefix}/reward": mean,
               f"{prefix}/reward_std": max(s["reward_sq"] / n - mean ** 2, 0.0) ** 0.5,
               f"{prefix}/equal_reward_groups": s["equal_groups"] / max(s["groups"], 1.0),
               f"{prefix}/clip_ratio": s["clipped"] / tokens,
               f"{prefix}/entropy": s["entropy"] / tokens,
               f"{prefix}/completion_length": s["tokens"] / n,
               f"{prefix}/truncated": s["truncated"] / n,
               f"{prefix}/generation_tokens_per_s": s["generated"] / max(
                   s["generation_s"] / self.dist.world_size, 1e-9)}
        if self.cfg.kl_coef:  # measured only against a reference
            out[f"{prefix}/kl"] = s["kl"] / tokens
        for fn in self.reward_fns:
            fn_mean = s[f"rewards/{fn.name}"] / n
            out[f"{prefix}/rewards/{fn.name}"] = fn_mean
            out[f"{prefix}/rewards/{fn.name}_std"] = max(
                s[f"rewards_sq/{fn.name}"] / n - fn_mean ** 2, 0.0) ** 0.5
        longest = torch.tensor([float(self._longest)])
        out[f"{prefix}/completion_length_max"] = int(distributed.all_reduce_max(longest))
        self._longest = 0
        return out

    # -- eval ---------------------------------------------------------------------------------

    def _greedy(self, prompts):
        settings = dataclasses.replace(self.sampling, greedy=True)
        return self.sampler.generate([p.tokens for p in prompts], settings,
                                     self.tokenizer.pad_id)

    @torch.no_grad()
    def evaluate(self, model) -> dict:
        self.sampler.sync(model)
        verifiable = torch.tensor([fn.verifiable for fn in self.reward_fns])
        sums = torch.zeros(3 + len(self.reward_fns), dtype=torch.float64)
        for indices in eval_shard(len(self.data.eval), self.dist.rank, self.dist.world_size,
                                  self.eval_batch_size):
            if not indices:
                continue
            prompts = [self.data.eval[j] for j in indices]
            completions = self._greedy(prompts)
            per_fn, total, _ = self._score(prompts, completions)
            passed = (per_fn[:, verifiable] >= 1.0).all(1) if verifiable.any() else \
                torch.zeros(len(prompts), dtype=torch.bool)
            sums += torch.cat([torch.tensor([len(prompts), float(passed.sum()),
                                             float(total.sum())]), per_fn.sum(0)]).double()
        sums = self.reduce(sums)
        n = max(float(sums[0]), 1.0)
        out = {"eval/pass_at_1": float(sums[1]) / n, "eval/reward": float(sums[2]) / n,
               "eval/prompts": int(sums[0])}
        for i, fn in enumerate(self.reward_fns):
            out[f"eval/rewards/{fn.name}"] = float(sums[3 + i]) / n
        self._samples = self._sample_rows()
        return out

    def _sample_rows(self):
        prompts = self.data.eval[:self.cfg.num_samples]
        if not prompts:
            return []
        completions = self._greedy(prompts)
        per_fn, total, texts = self._score(prompts, completions)
        return [{"prompt": p.text, "completion": text, "reward": round(float(t), 4),
                 **{fn.name: round(float(r), 4) for fn, r in zip(self.reward_fns, rs)}}
                for p, text, t, rs in zip(prompts, texts, total, per_fn)]

    def eval_samples(self, model):
        return self._samples


def _check(view):
    get = lambda arg: view.get("grpo_task", arg)  # noqa: E731
    problems = []
    if get("group_size") < 2:
        problems.append(("group_size", f"group_size={get('group_size')} must be >= 2 (the "
                         "advantage is relative to the group)"))
    fns, weights = get("reward_fns"), get("reward_weights")
    if not fns:
        problems.append(("reward_fns", "give at least one reward function, e.g. "
                         "[@exact_match_reward()]"))
    elif weights is not None and len(weights) != len(fns):
        problems.append(("reward_weights", f"{len(weights)} weights for {len(fns)} reward "
                         "functions; give one weight per function"))
    for fn in fns or []:
        if isinstance(fn, Ref) and not fn.evaluate:
            problems.append(("reward_fns", f"{fn!r} passes the function itself; call it: "
                             f"@{fn.scoped_name}()"))
    names = [view.get(f.name, "name") for f in fns or [] if isinstance(f, Ref)]
    if len(set(names)) != len(names):
        problems.append(("reward_fns", f"reward function names {names} repeat; give each its "
                         "own name (a scope: @a/format_reward(), with a/format_reward.name)"))
    low, high = get("clip_low"), get("clip_high")
    if not 0 < low < 1 or high <= 0 or low > high:
        problems.append(("clip_low", f"need 0 < clip_low ({low}) < 1, clip_high ({high}) > 0 "
                         "and clip_low <= clip_high"))
    if get("kl_coef") < 0:
        problems.append(("kl_coef", f"kl_coef={get('kl_coef')} must be >= 0"))
    # A saved config writes every default, so only a value other than the default is an error.
    if get("kl_coef") == 0 and get("kl_estimator") != "k3":
        problems.append(("kl_estimator", f"kl_estimator={get('kl_estimator')!r} is bound but "
                         "kl_coef=0 keeps no reference, so the binding does nothing; set kl_coef "
                         "or remove it"))
    if get("kl_estimator") not in KL_ESTIMATORS:
        problems.append(("kl_estimator", f"kl_estimator={get('kl_estimator')!r}; valid: "
                         f"{', '.join(KL_ESTIMATORS)}"))
    if get("loss_aggregation") not in AGGREGATIONS:
        problems.append(("loss_aggregation", f"loss_aggregation={get('loss_aggregation')!r}; "
                         f"valid: {', '.join(AGGREGATIONS)}"))
    if get("temperature") <= 0:
        problems.append(("temperature", f"temperature={get('temperature')} must be > 0"))
    if not 0 < get("top_p") <= 1:
        problems.append(("top_p", f"top_p={get('top_p')} must be in (0, 1]"))
    if get("top_k") < 0:
        problems.append(("top_k", f"top_k={get('top_k')} must be >= 0 (0: no top-k cut)"))
    if get("max_new_tokens") < 1:
        problems.append(("max_new_tokens", f"max_new_tokens={get('max_new_tokens')} must be "
                         ">= 1"))
    passes = get("num_passes")
    if passes < 1:
        problems.append(("num_passes", f"num_passes={passes} must be >= 1"))
    else:
        for arg in ("num_steps", "checkpoint_every"):
            value = view.get("Trainer", arg)
            if value % passes:
                problems.append(("num_passes", f"Trainer.{arg}={value} is not a multiple of "
                                 f"num_passes={passes}: a checkpoint is only taken after a "
                                 "rollout's last pass"))
    if get("num_samples") < 0:
        problems.append(("num_samples", f"num_samples={get('num_samples')} must be >= 0"))
    if view.refers_to("grpo_task", "data_fn", "build_prompt_data"):
        from lib.data.prompt_data import template_problems

        needed = [view.get(f.name, "field") for f in fns or []
                  if isinstance(f, Ref) and "field" in registry.specs()[f.name].params]
        sources = [*view.get("build_prompt_data", "train_files"),
                   *(view.get("build_prompt_data", "eval_files") or [])]
        problems += [("reward_fns", m) for _, m in template_problems(
            "", sources, view.get("build_prompt_data", "columns"), needed)]
        length = view.get("build_prompt_data", "max_prompt_length") + get("max_new_tokens")
        for _, message in max_length_problems(view, "build_prompt_data", length):
            problems.append(("max_new_tokens", message.replace(
                f"max_length={length}", f"max_prompt_length + max_new_tokens = {length}")))
    return problems


@configurable(check=_check, resume_sensitive=("data_fn", "group_size", "num_passes"))
def grpo_task(data_fn: Callable, reward_fns: Sequence, reward_weights: Sequence[float] = None,
              group_size: int = 8, temperature: float = 1.0, top_p: float = 1.0,
              top_k: int = 0, max_new_tokens: int = 256, stop_token_ids: Sequence[int] = (),
              scale_advantages: bool = True, clip_low: float = 0.2, clip_high: float = 0.2,
              kl_coef: float = 0.0, kl_estimator: str = "k3",
              loss_aggregation: str = "token", num_passes: int = 1,
              num_samples: int = 3) -> GRPOTask:
    """GRPO on prompts with verifiable answers: an LM head (the policy); see lib/tasks/grpo.py.

    The Trainer's global_batch_size and micro_batch_size count prompts; each brings
    group_size completions.

    Args:
      data_fn: (tokenizer) -> PromptData (e.g. @build_prompt_data): prompts (its
        max_prompt_length truncates them on the left) and the fields the rewards read.
      reward_fns: reward functions (lib/rewards.py), e.g. [@exact_match_reward(),
        @format_reward()]; each name unique.
      reward_weights: one weight per reward function; None weighs each 1.0.
      group_size: completions sampled per prompt (>= 2); advantages are relative to the
        group. 8 as in TRL's GRPOConfig.num_generations.
      temperature: sampling temperature (> 0); the loss's log-probabilities use the same
        scaling. 1.0, the policy's own distribution (TRL's default).
      top_p: nucleus sampling: keep the smallest set of tokens reaching this probability; 1.0
        keeps all (TRL's default).
      top_k: keep the k most likely tokens; 0 keeps all (TRL's default, None).
      max_new_tokens: the longest completion, in tokens; a completion without a stop token
        by then counts as truncated. 256 as in TRL's max_completion_length. With the prompt
        limit it must fit the model's positions (checked).
      stop_token_ids: token ids that end a completion besides the tokenizer's EOS (always one).
      scale_advantages: divide each advantage by its group's reward std (+1e-4), as GRPO does;
        False gives Dr. GRPO's unscaled advantages.
      clip_low: the ratio's lower clip is 1 - clip_low (PPO's epsilon, 0.2).
      clip_high: the ratio's upper clip is 1 + clip_high; DAPO raises it (0.28) to keep
        exploring. Must be >= clip_low.
      kl_coef: weight of the KL penalty to the reference policy (the initial weights); 0 (the
        default, TRL's `beta` default and DAPO's: no reference is kept). open-instruct uses
        0.05, DeepSeekMath 0.04.
      kl_estimator: "k3" (exp(r) - r - 1 with r = ref - policy log-probability, unbiased and
        >= 0; GRPO's) or "k1" (-r). Setting "k1" with kl_coef=0 is an error.
      loss_aggregation: "token": the loss's mean over every completion token of the global
        batch (DAPO; no length bias); "sequence": each completion's mean over its tokens, then
        the mean over completions (the GRPO paper's).
      num_passes: optimizer steps on each rollout's completions (TRL's num_iterations, 1);
        the clip acts from the second pass on.
      num_samples: held-out prompts whose greedy completion and rewards are shown at each
        eval (console, W&B table eval/samples); 0 shows none.
    """
    fns = list(reward_fns)
    weights = [1.0] * len(fns) if reward_weights is None else list(reward_weights)
    settings = Settings(
        group_size=group_size,
        sampling=Sampling(max_new_tokens=max_new_tokens, stop_tokens=tuple(stop_token_ids),
                          temperature=temperature, top_p=top_p, top_k=top_k),
        reward_weights=weights, scale_advantages=scale_advantages, clip_low=clip_low,
        clip_high=clip_high, kl_coef=kl_coef, kl_estimator=kl_estimator,
        loss_aggregation=loss_aggregation, num_passes=num_passes, num_samples=num_samples)
    return GRPOTask(data_fn, fns, settings)


EVAL_METRICS["grpo_task"] = ("pass_at_1", "reward")
