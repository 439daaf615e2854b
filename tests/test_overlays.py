"""Every overlay with every task, and every pair of overlays that combine, through the real
config checks (no model is built): an overlay applies where its header says, and is refused,
saying why, where it does not."""

import itertools
import pathlib
import re

import pytest

from launchers.train import BUILDS
from lib import config

GIN = pathlib.Path(__file__).resolve().parent.parent / "gin"
TASKS = {"reward": "gin/reward.gin", "sft": "gin/sft.gin", "dpo": "gin/dpo.gin"}
OVERLAYS = sorted((GIN / "overlays").glob("*.gin")) + [GIN / "debug" / "smoke.gin"]


def _applies_to(path):
    """The tasks an overlay's header names in 'Applies to:' (every task, or 'the X task only')."""
    match = re.search(r"Applies to: (.*?)[.;]", path.read_text())
    if path.parent.name == "debug" or (match and match.group(1).startswith("every task")):
        return set(TASKS)
    (task,) = re.findall(r"the (\w+) task only", match.group(1), flags=re.I) if match else [None]
    assert task and task.lower() in TASKS, f"{path}: its header must say what it applies to"
    return {task.lower()}


def test_overlays_are_found_and_say_what_they_apply_to():
    assert len(OVERLAYS) >= 5
    for path in OVERLAYS:
        assert _applies_to(path)


@pytest.mark.parametrize("task", sorted(TASKS))
@pytest.mark.parametrize("overlay", OVERLAYS, ids=lambda p: p.name)
def test_an_overlay_applies_where_it_says_and_is_refused_elsewhere(task, overlay, search_roots):
    files = [TASKS[task], str(overlay)]
    if task in _applies_to(overlay):
        assert config.load(files, [], builds=BUILDS).warnings == []
    else:
        with pytest.raises(config.ConfigError, match="does nothing: this config never builds"):
            config.load(files, [], builds=BUILDS)


UNIVERSAL = [p for p in OVERLAYS if _applies_to(p) == set(TASKS)]


@pytest.mark.parametrize("task", sorted(TASKS))
@pytest.mark.parametrize("pair", list(itertools.combinations(UNIVERSAL, 2)),
                         ids=lambda pair: "+".join(p.stem for p in pair))
def test_overlays_that_apply_to_every_task_combine(task, pair, search_roots):
    config.load([TASKS[task], *map(str, pair)], [], builds=BUILDS)
