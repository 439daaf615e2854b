"""launchers/make_venv.py (`make setup`): the environment keeps the torch of the Python that
makes it, also when that Python is itself a virtual environment, as this suite's is."""

import importlib.metadata
import os
import pathlib
import subprocess
import sys

import pytest
import torch

from launchers import make_venv
from tests.config.test_python_versions import _interpreter

REPO = pathlib.Path(__file__).resolve().parent.parent.parent
SCRIPT = str(REPO / "launchers" / "make_venv.py")
FLOOR = make_venv.torch_floor()


def _python(target):
    return str(target / "bin" / "python")


def test_a_venv_made_from_a_venv_python_keeps_its_torch(tmp_path):
    """This suite's python is a venv holding torch; `venv --system-site-packages` alone would
    see only the base interpreter's packages, and pip would install a second torch."""
    assert sys.prefix != sys.base_prefix  # the case under test: a venv's python
    target = tmp_path / "v"
    proc = subprocess.run([sys.executable, SCRIPT, str(target)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == (f"setup: keeping torch {torch.__version__} from "
                                   f"{pathlib.Path(torch.__file__).resolve().parent.parent}")
    # torch pinned to the build in use; nothing pinned that this torch itself requires
    constraints = (target / "constraints.txt").read_text().splitlines()
    assert [c for c in constraints if c.startswith("torch==")] == [
        f"torch=={importlib.metadata.version('torch')}"]
    assert "torchtune==0.6.1" in constraints
    assert not [c for c in constraints if c.lower().startswith(("sympy==", "networkx=="))]
    seen = subprocess.run(
        [_python(target), "-c", "import importlib.metadata, sys, torch; "
         "print(torch.__file__); print(importlib.metadata.version('torch')); print(sys.prefix)"],
        capture_output=True, text=True)
    assert seen.stdout.splitlines() == [torch.__file__, importlib.metadata.version("torch"),
                                        str(target)], seen.stderr
    # pip, offline, finds the requirement met: nothing to download
    pip = subprocess.run([_python(target), "-m", "pip", "install", "--dry-run", "--no-index",
                          "--no-deps", "--disable-pip-version-check", f"torch>={FLOOR}"],
                         capture_output=True, text=True)
    assert pip.returncode == 0 and "Requirement already satisfied: torch" in pip.stdout, (
        pip.stdout + pip.stderr)
    # setup again (make reruns it when setup.cfg changes): the environment starts from nothing
    (pathlib.Path(seen.stdout.splitlines()[2]) / "stale.txt").write_text("from an earlier setup")
    again = subprocess.run([sys.executable, SCRIPT, str(target)], capture_output=True, text=True)
    assert again.returncode == 0 and not (target / "stale.txt").exists(), again.stderr
    # run by the environment's own python (an activated .venv), it refuses and keeps it
    itself = subprocess.run([_python(target), SCRIPT, str(target)], capture_output=True,
                            text=True)
    (line,) = itself.stderr.splitlines()
    assert itself.returncode == 2 and line.startswith("error: ") and "itself" in line, line
    assert (target / "constraints.txt").exists()


def test_a_torch_older_than_the_floor_stops_setup_before_anything_is_made(tmp_path):
    major, minor = FLOOR.split(".")[:2]
    below = f"{major}.{int(minor) - 1}.0+cu128"  # one minor release below, so 2.8 for 2.9
    old = tmp_path / "old" / "torch"
    old.mkdir(parents=True)
    (old / "__init__.py").write_text(f"__version__ = {below!r}\n")
    target = tmp_path / "v"
    proc = subprocess.run([sys.executable, SCRIPT, str(target)], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(old.parent)})
    assert proc.returncode == 2 and not target.exists()
    (line,) = proc.stderr.splitlines()
    assert line.startswith(f"error: {sys.executable} has torch {below}, older than the "
                           f"{FLOOR} gintune needs (setup.cfg)"), line


def test_a_python_older_than_the_floor_stops_setup_before_anything_is_made(tmp_path):
    """pip would otherwise fail later on a pin with no release for it (numpy's, on 3.10)."""
    old = _interpreter("3.10")
    if old is None:
        pytest.skip("no Python 3.10 on this machine")
    target = tmp_path / "v"
    proc = subprocess.run([old, SCRIPT, str(target)], capture_output=True, text=True)
    assert proc.returncode == 2 and not target.exists()
    (line,) = proc.stderr.splitlines()
    assert line.startswith(f"error: {old} is Python 3.10.") and line.endswith(
        "gintune needs 3.11 or newer (setup.cfg): run make with PYTHON=python3.11 or newer"), line
