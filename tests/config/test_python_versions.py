"""Malformed input gives the same problems on Python 3.11, 3.12 and 3.13.

Python's tokenizer reports unclosed quotes and brackets differently across versions; the
reader must not. Other interpreters are used where the machine has them (pyenv here), with
this environment's pure-Python gin-config on the path; none found means skipped.
"""

import glob
import json
import os
import pathlib
import shutil
import site
import subprocess

import pytest

from lib.config.sources import Reader

REPO = pathlib.Path(__file__).resolve().parent.parent.parent
CASES = ["x = 'abc", "a.b = [1, 2", "a.b = = 3", "a.b = 1 2", 'a.b = "x\n', "a.b = (1,\n2\n",
         "import os", "include 'nope.gin'"]
SCRIPT = f"""
import json, pathlib, sys
sys.path.insert(0, {str(REPO)!r})
from lib.config.sources import Reader
out = []
for text in json.loads(sys.argv[1]):
    r = Reader([pathlib.Path({str(REPO)!r})])
    r.read_binding(0, text)
    out.append([str(p) for p in r.problems])
print(json.dumps(out))
"""


def _interpreter(version):
    """A working python{version} (pyenv's versions first, then PATH), else None."""
    candidates = sorted(glob.glob(os.path.expanduser(
        f"~/.pyenv/versions/{version}.*/bin/python")))[-1:] + [shutil.which(f"python{version}")]
    for candidate in filter(None, candidates):
        if subprocess.run([candidate, "-c", "pass"], capture_output=True).returncode == 0:
            return candidate
    return None


@pytest.mark.parametrize("version", ["3.12", "3.13"])
def test_malformed_input_reads_the_same_on_other_pythons(version):
    interpreter = _interpreter(version)
    if interpreter is None:
        pytest.skip(f"no Python {version} on this machine")
    here = []
    for text in CASES:
        r = Reader([REPO])
        r.read_binding(0, text)
        here.append([str(p) for p in r.problems])
    env = {**os.environ, "PYTHONPATH": site.getsitepackages()[0], "PYTHONNOUSERSITE": "1"}
    proc = subprocess.run([interpreter, "-c", SCRIPT, json.dumps(CASES)], env=env,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout) == here
    assert all(len(problems) == 1 for problems in here)
