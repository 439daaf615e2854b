"""The Trainer: builds the components it is given and runs the training loop.

Tasks (lib/tasks/) differ in their data, loss, metrics and eval, not in the loop. `train()`
orchestrates; `train_step()` does, in order: micro-batches (sampled by the task's rollout, for
GRPO) -> forward/backward -> clip -> finiteness check (agreed over ranks) -> optimizer step ->
schedule -> metrics. Evaluation and checkpointing key off the same step, the last included.
"""

import pathlib
import random
import statistics
import time
import json
from typing import Callable, Optional

import numpy as np
import torch
from absl import logging

from lib import checkpointing, config, distributed, initialization, parallel
from lib.config.registry import configurable
from lib.config.values import Ref
from lib.data.batching import batch_problems
from lib.faults import crash_point
from lib.models import fresh, lora, streaming
from lib.models.copies import ModelCopies
from lib.reporting import RunLogger, format_progress
from lib.tasks import Task


class NonFiniteLossError(RuntimeError):
    """The loss or gradient became NaN or infinite; the message names the step."""


class Preempted(Exception):
    """A stop was requested (SIGTERM/SIGINT); a checkpoint of `step` was saved at `path`."""

    def __init__(self, step: int, path: pathlib.Path):
        super().__init__(f"stopped at step {step}; checkpoint {path}")
        self.step, self.path = step, path


def _check(view):
    """The Trainer's invariants that need no data or weights."""
    get = lambda arg: view.get("Trainer", arg)  # noqa: E731
    problems = batch_problems(get("global_batch_size"), get("micro_batch_size"),
                              view.world_size)
    if get("num_steps") < 1:
        problems.append(("num_steps", f"num_steps={get('num_steps')} must be >= 1"))
    for arg, low in (("log_every", 1), ("eval_batch_size", 1), ("eval_every", 0),
                     ("checkpoint_every", 0), ("num_workers", 0)):
        if get(arg) < low:
            problems.append((arg, f"{arg}={get(arg)} must be >= {low}"))
    if get("max_grad_norm") < 0:
        problems.append(("max_grad_norm", f"max_grad_norm={get('max_grad_norm')} must be >= 0 "
                         "(0 turns clipping off)"))
    task = get("task")
    if isinstance(task, Ref) and not task.evaluate:
        problems.append(("task", f"task={task!r} passes the function itself; call it: "
                         f"Trainer.task = @{task.scoped_name}()"))
    return problems + initialization.init_problems(get("init_from"))


@configurable(caller_args=("workdir", "dist_info", "checkpointer"), check=_check,
              resume_sensitive=("tokenizer_fn", "model_fn", "shard_fn", "global_batch_size",
                                "seed", "init_from"))
class Trainer:
    """Trains a model on a task: the loop every objective shares.

    Args:
      workdir: passed by the launcher.
      dist_info: passed by the launcher (rank, world size, device).
      checkpointer: passed by the launcher (a Checkpointer for <workdir>/checkpoints/).
      task: the objective, its data, loss, metrics and eval (e.g. @reward_task(), @sft_task(),
        @dpo_task()); see lib/tasks/.
      tokenizer_fn: () -> Tokenizer (e.g. @build_tokenizer).
      model_fn: (head) -> torchtune decoder with the head the task trains (e.g. @llama3_model,
        @hf_model).
      shard_fn: (model, dist_info) -> the model wrapped for training (e.g. @fsdp).
      optimizer_fn: (model) -> optimizer (e.g. @build_adamw).
      lr_schedule_fn: (optimizer, num_steps) -> LR scheduler (e.g. @build_lr_schedule).
      num_steps: optimizer steps to train for.
      global_batch_size: examples (pairs, prompt-completion examples, GRPO's prompts) per
        optimizer step, all ranks and micro-batches; divisible by world size x micro_batch_size.
      micro_batch_size: examples per forward/backward on one rank (gradient accumulation runs
        global_batch_size / (world size x micro_batch_size) of them per step).
      eval_batch_size: examples per eval forward on one rank.
      eval_every: evaluate every this many steps and after the last step; 0 only at the end.
      eval_first: also evaluate before the first step (logged at step 0), for the starting
        value of each eval metric; a resumed run does not repeat it.
      checkpoint_every: save every this many steps and after the last step; 0 only at the end.
      log_every: report training metrics every this many steps (averaged over them).
      max_grad_norm: clip the global gradient norm to this; 0 disables clipping.
      seed: seeds initialization and the data order (python, numpy and torch RNGs).
      pack: padding-free batches (lib/data/packing.py): a micro-batch's sequences share rows,
        each attending only to itself, so no compute goes to padding; per-sequence results
        equal the padded ones (to float summation order). False pads every row to the
        micro-batch's longest sequence. `train/packing_efficiency` reports real / computed
        tokens either way.
      tf32: on a GPU, run float32 matmuls and convolutions in TensorFloat-32 (Ampere and
        newer: several times the float32 rate, float32 accumulation); no effect on a CPU, or on
        what bf16 mixed precision (fsdp.param_dtype) computes in bf16.
      num_workers: DataLoader worker processes that prepare the next steps' batches (started
        with spawn; each gets this process's config); 0 prepares them in the training loop.
      export_hf: after the last step, also write the model as a Hugging Face directory
        (safetensors, config.json, tokenizer files) to <workdir>/hf/.
      adapter_fn: (model, head) -> the model with adapters and its base frozen (e.g. @lora(),
        gin/overlays/lora.gin); None trains every weight. Applied after init_from.
      init_from: start from the weights of an earlier run (its folder: the newest complete
        checkpoint; or a checkpoint folder), with a fresh optimizer and schedule; "" starts
        from model_fn's weights. A head the source lacks (a reward head on an SFT model)
        keeps model_fn's initialization. The source and a digest of the loaded weights go to
        summary.json.
    """

    def __init__(self, workdir: str, dist_info: distributed.DistInfo,
                 checkpointer: checkpointing.Checkpointer, *, task: Task,
                 tokenizer_fn: Callable, model_fn: Callable,
                 shard_fn: Callable, optimizer_fn: Callable, lr_schedule_fn: Callable,
                 num_steps: int, global_batch_size: int, micro_batch_size: int,
                 eval_batch_size: int = 32, eval_every: int = 0, eval_first: bool = False,
                 checkpoint_every: int = 0,
                 log_every: int = 10, max_grad_norm: float = 1.0, seed: int = 0,
                 pack: bool = True, tf32: bool = True, num_workers: int = 0,
                 export_hf: bool = False, init_from: str = "",
                 adapter_fn: Optional[Callable] = None):
        if num_steps < 1:
            raise ValueError(f"Trainer.num_steps={num_steps} must be >= 1")
        self.workdir = pathlib.Path(workdir)
        self.dist, self.checkpointer = dist_info, checkpointer
        self.num_steps, self.global_batch_size = num_steps, global_batch_size
        self.eval_every, self.eval_first = eval_every, eval_first
        self.checkpoint_every, self.log_every = checkpoint_every, log_every
        self.max_grad_norm, self.num_workers = max_grad_norm, num_workers
        self.export_hf = export_hf
        if dist_info.device.type == "cuda":
            torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = tf32
        _seed_everything(seed)

        self.tokenizer = tokenizer_fn()
        self.task = task
        task.setup(self.tokenizer, dist_info, seed, global_batch_size, micro_batch_size,
                   eval_batch_size, pack)

        # Several ranks build on the meta device and receive their shards of the initial
        # weights from rank 0 (lib/models/streaming.py).
        self.streamed = dist_info.world_size > 1
        self.rank_0_full_model = not self.streamed  # (every rank's, when not streamed)
        self._rss_before_model = _rss_gb()
        head = task.model_head

        def build():  # the model with its adapters (drawn after the base), on the current device
            built = model_fn(head=head)
            return built if adapter_fn is None else adapter_fn(built, head=head)

        def template():  # the same on the meta device (no memory, no random draws)
            with torch.device("meta"):
                return build()

        torch.manual_seed(seed)  # the same initial weights on every rank, before sharding
        with torch.device("meta" if self.streamed else "cpu"):
            model = model_fn(head=head)
        vocab = model.tok_embeddings.num_embeddings
        if self.tokenizer.vocab_size > vocab:
            source = getattr(model, "hf_source", None)
            raise ValueError(
                f"the tokenizer in {self.tokenizer.path} has {self.tokenizer.vocab_size} ids but "
                + (f"the model of {source} embeds only {vocab} (its config.json's vocab_size); "
                   "use the tokenizer that came with the checkpoint" if source else
                   f"the model embeds only {vocab}; raise the model builder's vocab_size (e.g. "
                   "llama3_model.vocab_size)"))
        self.num_params = sum(p.numel() for p in model.parameters())
        self.base_digest = None
        if self.streamed:
            self.init_info = {}
            digests = {"all": None} if task.wants_weights_digest else {}
            base_names = set(model.state_dict())
            if adapter_fn is not None:
                with torch.device("meta"):
                    model = adapter_fn(model, head=head)
                digests["frozen"] = {k for k, p in model.named_parameters()
                                     if not p.requires_grad}
                self._adapted(model, checkpointer)

            self.model = shard_fn(model, dist_info)
            info, got, self.rank_0_full_model = streaming.load_streamed(
                self.model, dist_info, build, seed, init_from, digests, base_names, template)
            self.init_info = {**info, **self.init_info}
            self.base_digest = got.get("frozen")
            task.on_weights_streamed(got.get("all"))
        else:
            given = set(getattr(model, "hf_names", ()))  # the weights a checkpoint gave
            self.init_info = {}
            if init_from:
                self.init_info = initialization.load_initial(model, init_from)
                given |= set(model.state_dict()) - set(self.init_info["init/kept_fresh"])
            if adapter_fn is not None:
                model = adapter_fn(model, head=head)
            if given:  # the rest is drawn module by module, as the streamed path draws it
                fresh.initialize(model, set(model.state_dict()) - given, seed)
            if adapter_fn is not None:
                self.base_digest = lora.frozen_digest(model)
                self._adapted(model, checkpointer)
            task.on_model_built(model)
            self.model = shard_fn(model, dist_info)
        task.on_model_sharded(self.model, ModelCopies(
            self.model, template, lambda module: shard_fn(module, dist_info), dist_info.device))
        self.sharded = parallel.is_sharded(self.model)
        self.optimizer = optimizer_fn(self.model)
        self.lr_schedule = lr_schedule_fn(self.optimizer, num_steps)
        self.step = 0
        self.wandb_run_id = None
        self._stop_requested = False
        self.activity = "starting"  # what the loop is doing, for an unexpected error's message

    def prepare(self, resuming: bool) -> None:
        """The task's work before the first step (e.g. DPO's reference log-probabilities)."""
        self.task.prepare(self.model, self.workdir, resuming)

    def restore(self, path: pathlib.Path) -> dict:
        """Continues from a checkpoint: weights, optimizer, schedule, step, RNGs.

        The data position follows from the step (the batch order is a function of seed and
        step), so nothing is replayed. If the config's peak lr differs from the checkpoint's,
        the new one applies from here on, with the schedule's multiplier at this step.
        """
        new_base_lrs = list(self.lr_schedule.base_lrs)
        if self.base_digest is not None:
            saved = json.loads((path / checkpointing.STATE_FILE).read_text()).get("base_digest")
            if saved != self.base_digest:
                raise ValueError(
                    f"{path} holds adapters trained on another base model (its base digest "
                    f"{str(saved)[:12]}, this config's {self.base_digest[:12]}); resume with "
                    "the config (model, init_from, seed) that started the run")
        state = self.checkpointer.load(path, self.model, self.optimizer)
        self.lr_schedule.load_state_dict(state["lr_schedule"])
        self.step, self.wandb_run_id = state["step"], state.get("wandb_run_id")
        if new_base_lrs != self.lr_schedule.base_lrs:
            self.lr_schedule.base_lrs = new_base_lrs
            factor = self.lr_schedule.lr_lambdas[0](self.lr_schedule.last_epoch)
            for group, base in zip(self.optimizer.param_groups, new_base_lrs):
                group["initial_lr"], group["lr"] = base, base * factor
            self.lr_schedule._last_lr = [g["lr"] for g in self.optimizer.param_groups]
        return state

    def request_stop(self) -> None:
        """Asks for a checkpoint and a clean stop at the next step boundary (signal-safe)."""
        self._stop_requested = True

    # -- the loop ---------------------------------------------------------------------------

    def train(self, logger: RunLogger, operative_config: str) -> dict:
        """Trains to num_steps; returns the final eval metrics."""
        logger.summary({**self.task.summary(), **self.init_info,
                        "model/parameters": self.num_params,
                        "world_size": self.dist.world_size, **self._startup_memory()})
        sums, tokens, t0, start = None, 0, time.perf_counter(), time.perf_counter()
        step_times = []  # wall seconds of each step since the last report, data included
        first_step, final_eval = self.step, {}
        if self.step >= self.num_steps and self.dist.is_main:
            logging.info("nothing to train: the checkpoint is at step %d of %d", self.step,
                         self.num_steps)
        if self.eval_first and self.step == 0:
            self._evaluate_and_log(logger)
        batches = iter(self._step_loader())
        while self.step < self.num_steps:
            t_step = time.perf_counter()
            self.activity = f"reading the batches of step {self.step + 1}"
            micro_batches = next(batches)
            self.activity = f"training step {self.step + 1}"
            step_sums, step_tokens, lr = self.train_step(micro_batches)
            self.step += 1
            step_times.append(time.perf_counter() - t_step)
            if self.step == first_step + 1:
                logger.summary({"startup/first_step_s": round(_seconds_since_start(), 3)})
            sums = step_sums if sums is None else sums + step_sums
            tokens += step_tokens
            last = self.step == self.num_steps
            if self.step % self.log_every == 0 or last:
                metrics = self._train_metrics(sums, tokens, time.perf_counter() - t0, lr)
                metrics["train/step_s_median"] = statistics.median(step_times)
                eta = ((time.perf_counter() - start) / (self.step - first_step)
                       * (self.num_steps - self.step))
                if self.dist.is_main:
                    logging.info(format_progress(self.step, self.num_steps, metrics, eta,
                                                 self.task.progress))
                logger.log(self.step, metrics)
                sums, tokens, t0, step_times = None, 0, time.perf_counter(), []
            evaluated = _due(self.step, self.eval_every, last)
            if evaluated:
                final_eval = self._evaluate_and_log(logger)
            # Every rank takes part in the agreement; the task may defer the stop to a step it
            # can resume from exactly.
            stop = self._stop_agreed() and self.task.checkpointable(self.step)
            if _due(self.step, self.checkpoint_every, last) or stop:
                self.activity = f"saving the checkpoint of step {self.step}"
                path = self.save_checkpoint(operative_config, logger,
                                            final_eval if evaluated else None)
            crash_point("step_end", self.step)
            if stop and not last:
                self.checkpointer.wait()
                raise Preempted(self.step, path)
        self.checkpointer.wait()
        if self.export_hf:
            self.activity = f"exporting the model to {self.workdir / 'hf'}"
            self.task.export(self.model, self.tokenizer, self.workdir / "hf", self.dist.is_main)
            if self.dist.is_main:
                logging.info("Hugging Face export: %s", self.workdir / "hf")
        summary = {f"final/{k}": v for k, v in final_eval.items()}
        best = self.checkpointer.best()
        if best:
            summary.update({"best/step": best["step"], f"best/{best['metric']}": best["value"]})
        if self.dist.device.type == "cuda":
            summary["memory/peak_gpu_gb"] = round(
                torch.cuda.max_memory_allocated(self.dist.device) / 2 ** 30, 2)
        logger.summary(summary)
        return final_eval

    def train_step(self, micro_batches):
        """One optimizer step; returns (metric sums on the device, [non-pad tokens, computed
        tokens], lr).

        The finiteness check is the step's one wait for the device; metric sums stay there
        until a report reads them.
        """
        self.model.train()
        micro_batches = self.task.rollout(self.model, micro_batches)
        sums = torch.zeros(len(self.task.sum_names), device=self.dist.device)
        tokens = np.zeros(2, dtype=np.int64)
        # Each loss sum is divided by this rank's share of the global batch's weight (pairs,
        # or completion tokens); FSDP averages gradients over ranks, so the gradient is the
        # mean over the global batch however it is split.
        share = self._global_weight(micro_batches) / self.dist.world_size
        for i, batch in enumerate(micro_batches):
            if self.sharded and self.model.defer_gradient_sync:  # on the last one only
                self.model.set_requires_gradient_sync(i == len(micro_batches) - 1)
            loss_sum, batch_sums = self.task.micro_batch_loss(self.model, batch)
            (loss_sum / share).backward()
            sums += batch_sums
            tokens += (batch["num_tokens"], batch["computed_tokens"])
        # With CPU offload the norm comes back on the CPU; the metric sums live on the device.
        grad_norm = _clip(self.model, self.max_grad_norm).to(sums.device)
        if not self._all_finite(torch.isfinite(grad_norm) & torch.isfinite(sums[0])):
            raise NonFiniteLossError(
                f"non-finite loss or gradient at step {self.step + 1} (loss sum "
                f"{float(sums[0]):.4g}, gradient norm {float(grad_norm):.4g}); stopped before "
                "the optimizer step")
        lr = self.lr_schedule.get_last_lr()[0]
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.lr_schedule.step()
        return torch.cat([sums, grad_norm.reshape(1)]), tokens, lr

    def evaluate(self) -> dict:
        """The task's metrics over the whole eval set, exact at any world size."""
        self.model.eval()
        return self.task.evaluate(self.model)

    def _evaluate_and_log(self, logger: RunLogger) -> dict:
        """Evaluates at this step; the metrics and the task's samples go to the console and
        the logger."""
        self.activity = f"evaluating at step {self.step}"
        metrics = self.evaluate()
        samples = self.task.eval_samples(self.model)
        if self.dist.is_main:
            logging.info("eval @ step %d | %s", self.step, _fmt(metrics))
            for sample in samples:
                logging.info("sample @ step %d | %s", self.step, _fmt(sample))
        logger.log(self.step, metrics)
        if samples:
            logger.table(self.step, "eval/samples", samples)
        return metrics

    def save_checkpoint(self, operative_config: str, logger: RunLogger,
                        metrics: dict = None) -> pathlib.Path:
        """Saves this step; `metrics` (this step's eval, if any) feed the best-checkpoint rule."""
        state = {"step": self.step, "lr_schedule": self.lr_schedule.state_dict(),
                 "wandb_run_id": logger.run_id, **self.task.checkpoint_state()}
        if self.base_digest is not None:
            state["base_digest"] = self.base_digest
        path = self.checkpointer.save(self.step, self.model, self.optimizer, state,
                                      operative_config, metrics)
        blocked = self.checkpointer.blocked_s
        if self.dist.is_main:
            logging.info("checkpoint %s: %s (training blocked %.2f s)",
                         "started" if self.checkpointer.async_save else "saved", path, blocked)
        logger.log(self.step, {"checkpoint/blocked_s": blocked})
        return path

    # -- helpers ----------------------------------------------------------------------------

    def _stop_agreed(self) -> bool:
        """Whether any rank was asked to stop; every rank gets the same answer."""
        flag = torch.tensor([1.0 if self._stop_requested else 0.0])
        return bool(distributed.all_reduce_sum(flag).item() > 0)

    def _all_finite(self, finite: torch.Tensor) -> bool:
        """Whether every rank's loss and gradient are finite: all ranks stop together rather
        than one stopping while the others wait in the next collective."""
        if self.dist.world_size == 1:
            return bool(finite)
        bad = torch.tensor([0.0 if bool(finite) else 1.0])
        return float(distributed.all_reduce_sum(bad)) == 0.0

    def _adapted(self, model, checkpointer) -> None:
        """What adapters change: checkpoints hold the trainable weights only."""
        checkpointer.trainable_only = True
        self.init_info["model/trainable_parameters"] = lora.trainable_count(model)

    def _startup_memory(self) -> dict:
        """Each rank's host memory before the model was built and its peak so far (resident
        set, GB), for summary.json: what building and sharding the model cost each rank."""
        mine = torch.tensor([self._rss_before_model, _peak_rss_gb()], dtype=torch.float64)
        table = torch.zeros(self.dist.world_size, 2, dtype=torch.float64)
        table[self.dist.rank] = mine
        table = distributed.all_reduce_sum(table)
        return {"startup/rss_before_model_gb_by_rank": [round(v, 3) for v in table[:, 0].tolist()],
                "startup/peak_rss_gb_by_rank": [round(v, 3) for v in table[:, 1].tolist()],
                "startup/streamed_weights": self.streamed,
                "startup/rank_0_built_full_model": self.rank_0_full_model}

    def _global_weight(self, micro_batches) -> float:
        """The summed weight of this step's micro-batches over all ranks."""
        weight = float(sum(b["weight"] for b in micro_batches))
        if self.dist.world_size == 1:
            return weight
        return float(distributed.all_reduce_sum(torch.tensor([weight], dtype=torch.float64)))

    def _step_loader(self):
        """Batches of the steps still to run, from this step on.

        A DataLoader draws a seed when its iteration starts; a generator of its own keeps that
        draw off the global RNG, which a resumed run restores just before and dropout uses.
        """
        dataset = self.task.step_batches()
        workers = dict(num_workers=self.num_workers, multiprocessing_context="spawn",
                       worker_init_fn=config.WorkerConfig()) if self.num_workers else {}
        # Pinned host memory lets the tasks' non_blocking copies overlap the GPU's work.
        return torch.utils.data.DataLoader(dataset, batch_size=None,
                                           pin_memory=self.dist.device.type == "cuda",
                                           generator=torch.Generator().manual_seed(0),
                                           sampler=range(self.step, self.num_steps), **workers)

    def _train_metrics(self, sums, tokens, elapsed, lr) -> dict:
        steps = self.step % self.log_every or self.log_every
        sums = sums.cpu()
        n = len(self.task.sum_names)  # sums[n]: the window's summed gradient norm
        grad_norm = float(sums[n]) / steps
        reduced = distributed.all_reduce_sum(
            torch.cat([sums[:n].double(), torch.as_tensor(tokens, dtype=torch.float64)]))
        metrics = self.task.metrics(reduced[:n].float(), "train")
        real, computed = float(reduced[n]), float(reduced[n + 1])
        metrics.update({"train/lr": lr, "train/grad_norm": grad_norm,
                        "train/tokens": int(real),
                        "train/tokens_per_s": real / max(elapsed, 1e-9),
                        "train/packing_efficiency": real / max(computed, 1.0)})
        return metrics


def _clip(model, max_norm: float) -> torch.Tensor:
    params = [p for p in model.parameters() if p.grad is not None]
    norm = torch.nn.utils.clip_grad_norm_(params, max_norm if max_norm > 0 else float("inf"))
    if hasattr(norm, "full_tensor"):
        norm = norm.full_tensor()
    return norm.detach().float()


def _seconds_since_start() -> float:
    """Seconds since this process started (imports included)."""
    import psutil

    return time.time() - psutil.Process().create_time()


def _rss_gb() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 2 ** 30


def _peak_rss_gb() -> float:
    """This process's peak resident set so far (Linux reports ru_maxrss in KB)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2 ** 20


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def _due(step: int, every: int, last: bool) -> bool:
    return last or (every > 0 and step % every == 0)


def _fmt(metrics: dict) -> str:
    return " | ".join(f"{k.split('/')[-1]} {v:.4f}" if isinstance(v, float) else
                      f"{k.split('/')[-1]} {v!r}" if isinstance(v, str) else
                      f"{k.split('/')[-1]} {v}" for k, v in metrics.items())
