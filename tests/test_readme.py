"""The README's examples are real output: its provenance lines come from the canonical config,
and its console lines (checked by the canonical run in tests/launchers/test_train_e2e.py) from
the demo, log prefix and source line included."""

import pathlib
import re

from launchers.train import BUILDS
from lib import config

README = (pathlib.Path(__file__).resolve().parent.parent / "README.md").read_text()
PREFIX = re.compile(r"^I\d{4} \d\d:\d\d:\d\d\.\d{6} \d+ (\w+\.py:\d+)\] (.*)$")


def _block_after(heading: str) -> list:
    """The lines of the first code block after `heading`."""
    rest = README.split(heading, 1)[1]
    return rest.split("```\n", 2)[1].splitlines()


def test_the_provenance_example_is_what_the_canonical_config_records(search_roots):
    lines = _block_after("### Provenance in a saved config")
    assert len(lines) >= 4
    text = config.load(["gin/reward.gin"], ["lr=1e-4"], builds=BUILDS).effective_text()
    for line in lines:
        assert line in text.splitlines(), line


def console_lines():
    """[(file:line, message)] of the README's demo console sample."""
    lines = [PREFIX.match(line) for line in _block_after("The console shows one line per")]
    assert lines and all(lines)
    return [m.groups() for m in lines]


def test_the_console_example_has_the_real_log_prefix():
    assert [where.split(":")[0] for where, _ in console_lines()] == ["trainer.py", "trainer.py"]


def check_console_example(stderr: str) -> None:
    """Each README console line is in `stderr` (the canonical run's), from the same source line,
    with the same text up to the throughput, which varies from run to run."""
    real = [PREFIX.match(line) for line in stderr.splitlines()]
    real = [m.groups() for m in real if m]
    for where, message in console_lines():
        stable = re.split(r" \| tok/s | \| \.\.\.", message)[0]
        assert any(w == where and m.startswith(stable) for w, m in real), (where, message)
