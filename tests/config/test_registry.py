"""The configurable surface: annotated, snapshotted, and renames that keep old configs loading."""

import pathlib

import gin
import pytest

from launchers import configurables
from lib import config
from lib.config import registry

SNAPSHOT = pathlib.Path(__file__).resolve().parent.parent / "configurables.txt"


def test_configurable_surface_matches_the_committed_snapshot():
    """Renaming or removing a parameter must be a visible decision: update the snapshot with
    `python -m launchers.configurables --snapshot > tests/configurables.txt` and say why."""
    assert configurables.snapshot() == SNAPSHOT.read_text()


def test_every_bindable_parameter_is_annotated():
    missing = [f"{name}.{p.name}" for name, spec in registry.specs().items()
               if spec.module.startswith("lib.") for p in spec.params.values()
               if p.name not in spec.caller_args and p.annotation is registry.NO_DEFAULT]
    assert missing == []


def test_every_configurable_has_a_docstring_with_args():
    for name, spec in registry.specs().items():
        if spec.module.startswith("lib.") and any(
                p not in spec.caller_args for p in spec.params):
            assert "Args:" in spec.doc, name


def test_listing_shows_types_defaults_and_summary():
    text = configurables.listing("adamw")
    assert "build_adamw  (lib.optim)" in text
    assert "build_adamw.lr: float (required)" in text
    assert "build_adamw.eps: float = 1e-08" in text
    assert "build_adamw.model: Module (passed by the caller)" in text
    assert "Trainer" not in text


def test_a_listing_filter_that_matches_nothing_is_an_error(capsys):
    from absl import flags

    flags.FLAGS.unparse_flags()
    flags.FLAGS(["configurables"])
    try:
        with pytest.raises(SystemExit) as exit_info:
            configurables.main(["configurables", "build_adamm"])
    finally:
        flags.FLAGS.unparse_flags()
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.startswith(
        "error: no configurable or parameter name contains 'build_adamm'; did you mean: "
        "build_adamw")


@registry.configurable(renamed={"learning_rate": "lr"})
def _renamed_for_test(lr: float = 0.1):
    """A configurable whose parameter was renamed.

    Args:
      lr: the new name.
    """
    return lr


def test_renamed_parameter_loads_old_configs_with_a_warning(tmp_path, search_roots):
    old = tmp_path / "old.gin"
    old.write_text("_renamed_for_test.learning_rate = 0.5\n")
    cfg = config.load([str(old)], [], builds=("_renamed_for_test",))
    assert cfg.warnings == [f"{old}:1: _renamed_for_test.learning_rate was renamed to "
                            "_renamed_for_test.lr; applying it there (update the config)"]
    assert _renamed_for_test() == 0.5
    assert gin.query_parameter("_renamed_for_test.lr") == 0.5


def test_a_rename_that_does_not_fit_the_signature_is_refused():
    with pytest.raises(TypeError, match="does not fit the signature"):
        registry.configurable(renamed={"old": "missing"})(lambda x=1: x)
