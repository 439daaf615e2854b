"""Configs written by earlier versions of gintune, brought up to date with a warning each.

Saved configs must keep loading: a checkpoint's `operative_config.gin` is relaunched months
later. Each migration maps what an earlier version wrote to what this one reads, and the
binding keeps its original file:line, so provenance still points at the text that set it.

- Before tasks (gintune 0.1), the reward model was the only objective: `Trainer.data_fn` and
  `Trainer.loss_fn` now belong to `reward_task`, which `Trainer.task = @reward_task()` selects.
- The model builders serve every task now, so they lost "reward" from their names:
  `llama3_reward_model`, `qwen2_reward_model`, `hf_reward_model` are `llama3_model`,
  `qwen2_model`, `hf_model`.
"""

import dataclasses
from typing import List, Sequence, Tuple

from lib.config.sources import Binding
from lib.config.values import Macro, Ref, walk

RENAMED_CONFIGURABLES = {"llama3_reward_model": "llama3_model",
                         "qwen2_reward_model": "qwen2_model",
                         "hf_reward_model": "hf_model"}
MOVED_TO_REWARD_TASK = ("data_fn", "loss_fn")


def migrate(bindings: Sequence[Binding]) -> Tuple[List[Binding], List[str]]:
    """(the bindings in today's names, a warning per file and old name)."""
    out, warnings, renamed = [], [], {}
    binds_task = any(_name(b.selector) == "Trainer" and b.arg == "task" for b in bindings)
    task_added = False
    for b in bindings:
        new = dataclasses.replace(b, selector=_rename(b.selector), value=_rename_refs(b.value))
        if _name(b.selector) == "Trainer" and b.arg in MOVED_TO_REWARD_TASK and not binds_task:
            new = dataclasses.replace(new, selector="reward_task")
            if not task_added:
                out.append(Binding(b.scope, "Trainer", "task", Ref("reward_task", True),
                                   b.where))
                task_added = True
            warnings.append(f"{b.where}: Trainer.{b.arg} is from a config written before "
                            f"tasks; applying it as reward_task.{b.arg} with Trainer.task = "
                            "@reward_task() (update the config)")
        elif new != b:
            old = _name(b.selector) if new.selector != b.selector else next(
                r.name for r in walk(b.value)
                if isinstance(r, Ref) and r.name in RENAMED_CONFIGURABLES)
            renamed.setdefault((b.where.source, old), []).append(b.where)
        out.append(new)
    for (source, old), wheres in renamed.items():
        warnings.append(f"{wheres[0]}: {old} is the old name of {RENAMED_CONFIGURABLES[old]}; "
                        f"applying its {len(wheres)} binding(s) in {source} to the new name "
                        "(update the config)")
    return out, warnings


def _name(selector: str) -> str:
    return selector.rsplit(".", 1)[-1]


def _rename(selector: str) -> str:
    head, _, name = selector.rpartition(".")
    new = RENAMED_CONFIGURABLES.get(name)
    return selector if new is None else (f"{head}.{new}" if head else new)


def _rename_refs(value):
    if isinstance(value, Ref):
        scope, _, name = value.scoped_name.rpartition("/")
        new = RENAMED_CONFIGURABLES.get(name, name)
        return Ref(f"{scope}/{new}" if scope else new, value.evaluate)
    if isinstance(value, Macro):
        return value
    if isinstance(value, (list, tuple)):
        return type(value)(_rename_refs(v) for v in value)
    if isinstance(value, dict):
        return {_rename_refs(k): _rename_refs(v) for k, v in value.items()}
    return value
