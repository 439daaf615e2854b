"""Where metrics go: the console, `<workdir>/metrics.jsonl`, and Weights & Biases.

Only global rank 0 reports; other ranks get a logger that does nothing. W&B is best effort: a
failure to start or to log is reported once and training goes on, with metrics.jsonl intact.
WANDB_MODE is respected; with no WANDB_MODE and no API key the run is recorded offline under
`<workdir>/wandb/`, so the demo needs no account.
"""

import json
import os
import pathlib
import shutil
import time
from typing import Optional, Sequence

from absl import logging

from lib.config.registry import configurable


@configurable(caller_args=("workdir", "enabled"))
class RunLogger:
    """Reports metrics and the run's config.

    Args:
      workdir: passed by the launcher.
      enabled: passed by the launcher (True on global rank 0 only).
      wandb_project: the W&B project.
      wandb_entity: the W&B entity (team or user); None uses the account's default.
      wandb_tags: tags for the W&B run.
      use_wandb: False keeps metrics to the console and metrics.jsonl.
    """

    def __init__(self, workdir: str, enabled: bool, wandb_project: str = "gintune",
                 wandb_entity: Optional[str] = None, wandb_tags: Sequence[str] = (),
                 use_wandb: bool = True):
        self.workdir = pathlib.Path(workdir)
        self.enabled = enabled
        self._wandb_args = dict(project=wandb_project, entity=wandb_entity, tags=list(wandb_tags))
        self._use_wandb = use_wandb and enabled
        self._run = None
        self._jsonl = None

    @property
    def run_id(self) -> Optional[str]:
        """The W&B run id (None without W&B), kept in checkpoints so a resume continues it."""
        return self._run.id if self._run is not None else None

    def start(self, run_name: str, flat_config: dict, resume_step: Optional[int] = None,
              resume_run_id: Optional[str] = None) -> None:
        """Opens metrics.jsonl and the W&B run (recording the config and operative_config.gin).

        On a resume from `resume_step`, records after that step (written by the run that
        stopped after its last checkpoint) are dropped, so every step appears once, and the
        W&B run `resume_run_id` is continued.
        """
        if not self.enabled:
            return
        path = self.workdir / "metrics.jsonl"
        if resume_step is not None and path.exists():
            kept = [line for line in path.read_text().splitlines()
                    if json.loads(line)["step"] <= resume_step]
            path.write_text("".join(line + "\n" for line in kept))
        self._jsonl = open(path, "a", buffering=1)
        if self._use_wandb:
            self._start_wandb(run_name, flat_config, resume_run_id)

    def _start_wandb(self, run_name, flat_config, resume_run_id):
        mode = os.environ.get("WANDB_MODE")
        if mode is None and not _has_wandb_credentials():
            mode = "offline"
            logging.info("W&B: no WANDB_MODE and no API key; recording the run offline under %s",
                         self.workdir / "wandb")
        try:
            import wandb

            self._run = wandb.init(
                name=run_name, dir=str(self.workdir), config=flat_config, mode=mode,
                id=resume_run_id, resume="allow" if resume_run_id else None,
                settings=wandb.Settings(console="off", silent=True), **self._wandb_args)
            # A copy, not wandb.save's symlink, so the run folder stands on its own.
            copy = shutil.copy(self.workdir / "operative_config.gin", self._run.dir)
            self._run.save(copy, base_path=self._run.dir, policy="now")
        except Exception as e:  # W&B is never a reason to stop training
            logging.warning("W&B disabled for this run: %s: %s", type(e).__name__, e)
            self._run = None

    def log(self, step: int, metrics: dict) -> None:
        if not self.enabled:
            return
        record = {"step": step, "time": round(time.time(), 3), **metrics}
        self._jsonl.write(json.dumps(record) + "\n")
        if self._run is not None:
            try:
                self._run.log(metrics, step=step)
            except Exception as e:
                logging.warning("W&B logging failed, disabling it: %s", e)
                self._run = None

    def table(self, step: int, key: str, rows: list) -> None:
        """Rows of {column: value} (e.g. generated samples): metrics.jsonl and a W&B table."""
        if not self.enabled or not rows:
            return
        record = {"step": step, "time": round(time.time(), 3), key: rows}
        self._jsonl.write(json.dumps(record) + "\n")
        if self._run is not None:
            try:
                import wandb

                columns = list(rows[0])
                table = wandb.Table(columns=columns,
                                    data=[[r.get(c) for c in columns] for r in rows])
                self._run.log({key: table}, step=step)
            except Exception as e:
                logging.warning("W&B table %s failed: %s", key, e)

    def summary(self, values: dict) -> None:
        """Run-level facts (data counts, parameters, final eval): console, summary.json, W&B."""
        if not self.enabled or not values:
            return
        logging.info("%s", "  ".join(f"{k}={v}" for k, v in values.items()))
        path = self.workdir / "summary.json"
        merged = {**(json.loads(path.read_text()) if path.exists() else {}), **values}
        path.write_text(json.dumps(merged, indent=2) + "\n")
        if self._run is not None:
            try:
                self._run.summary.update(values)
            except Exception as e:
                logging.warning("W&B summary failed: %s", e)

    def finish(self) -> None:
        if self._jsonl is not None:
            self._jsonl.close()
        if self._run is not None:
            try:
                self._run.finish()
            except Exception as e:
                logging.warning("W&B finish failed: %s", e)


def _has_wandb_credentials() -> bool:
    if os.environ.get("WANDB_API_KEY"):
        return True
    netrc = pathlib.Path(os.path.expanduser("~/.netrc"))
    return netrc.exists() and "api.wandb.ai" in netrc.read_text(errors="ignore")


def format_progress(step: int, num_steps: int, metrics: dict, eta_s: float,
                    extra=()) -> str:
    """One console line: step, loss, the task's headline metrics, lr, tokens/s, ETA.

    `extra` is the task's (label, metric name, format) triples, e.g. ("acc", "accuracy", ".3f").
    """
    eta = f"{int(eta_s // 60)}m{int(eta_s % 60):02d}s"
    shown = "".join(f"{label} {metrics[f'train/{name}']:{fmt}} | " for label, name, fmt in extra)
    return (f"step {step}/{num_steps} | loss {metrics['train/loss']:.4f} | {shown}"
            f"lr {metrics['train/lr']:.2e} | tok/s {metrics['train/tokens_per_s']:,.0f} | "
            f"eta {eta}")
