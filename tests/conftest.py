"""Shared fixtures: a clean gin state per test, the demo tokenizer, and running the launcher."""

import json
import os
import pathlib
import shutil
import subprocess
import sys

import pytest

from third_party import gin_config

REPO = pathlib.Path(__file__).resolve().parent.parent
DEMO = REPO / "assets" / "demo"


@pytest.fixture(autouse=True)
def clean_gin():
    """Every test starts and ends with no bindings and an unlocked config."""
    gin_config.reset()
    yield
    gin_config.reset()


def where(relative_path: str, line_start: str) -> str:
    """'gin/x.gin:N' for the line of a shipped file that starts with `line_start`, so tests of
    provenance do not hard-code line numbers."""
    lines = (REPO / relative_path).read_text().splitlines()
    (n,) = [i for i, line in enumerate(lines, start=1) if line.startswith(line_start)]
    return f"{relative_path}:{n}"


@pytest.fixture
def search_roots():
    """The repository root as the only search root, restored after the test."""
    from lib import config

    before = config.search_roots()
    config.set_search_roots([REPO])
    yield
    config.set_search_roots(before)


@pytest.fixture
def hf_dirs(tmp_path):
    """Local HF-style directories (config.json + the demo tokenizer) for validating the real
    model configs; no weights, which validation does not read."""
    dirs = {}
    for model_type in ("llama", "qwen2"):
        d = tmp_path / model_type
        d.mkdir()
        (d / "config.json").write_text(json.dumps({"model_type": model_type}))
        for name in ("tokenizer.json", "tokenizer_config.json"):
            shutil.copy(DEMO / name, d / name)
        dirs[model_type] = d
    return dirs


@pytest.fixture(scope="session")
def demo_tokenizer():
    from lib.data.tokenizer import Tokenizer

    return Tokenizer(DEMO)


@pytest.fixture(scope="session")
def sft_run(tmp_path_factory):
    """A short SFT run of the tiny model (gin/sft_compare.gin, smoke-length): a run folder with
    complete checkpoints, for configs that start from another run (Trainer.init_from)."""
    workdir = tmp_path_factory.mktemp("init") / "sft"
    proc = run_launcher(["--gin_file=gin/sft_compare.gin", "--gin_file=gin/debug/smoke.gin",
                         "--gin_bindings=RunLogger.use_wandb=False", f"--workdir={workdir}"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    return workdir


def demo_batch(tokenizer_dir, num_pairs=6):
    """(tokens, attention_mask) of the first demo eval pairs, right-padded, chosen then
    rejected, tokenized with the tokenizer in `tokenizer_dir`."""
    from lib.data.batching import collate
    from lib.data.encoding import encode_pairs
    from lib.data.sources import read_pairs
    from lib.data.tokenizer import Tokenizer

    tok = Tokenizer(tokenizer_dir)
    pairs, _ = encode_pairs(read_pairs(DEMO / "eval.jsonl")[:num_pairs], tok, 128, "error")
    batch = collate(pairs, tok.pad_id)
    return batch["tokens"], batch["attention_mask"]


class _LauncherServer:
    """The client of tests/launcher_server.py: one server per test session, started on first
    use; each launch is a child process forked from it."""

    def __init__(self):
        self.proc = subprocess.Popen([sys.executable, "-m", "tests.launcher_server"], cwd=REPO,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        if json.loads(self.proc.stdout.readline() or "{}").get("ready") is not True:
            raise RuntimeError("tests/launcher_server.py did not start")

    def run(self, args, cwd, env, timeout):
        import select
        import signal
        import tempfile

        with tempfile.TemporaryDirectory(prefix="gintune-launch-") as tmp:
            out, err = os.path.join(tmp, "out"), os.path.join(tmp, "err")
            self.proc.stdin.write(json.dumps({"argv": list(map(str, args)), "cwd": str(cwd),
                                              "env": env, "out": out, "err": err}) + "\n")
            self.proc.stdin.flush()
            pid = json.loads(self.proc.stdout.readline())["pid"]
            if not select.select([self.proc.stdout], [], [], timeout)[0]:
                os.kill(pid, signal.SIGKILL)
                self.proc.stdout.readline()
                raise subprocess.TimeoutExpired(["launchers.train", *args], timeout)
            returncode = json.loads(self.proc.stdout.readline())["returncode"]
            with open(out) as o, open(err) as e:
                return subprocess.CompletedProcess(
                    [sys.executable, "-m", "launchers.train", *args], returncode, o.read(),
                    e.read())

    def close(self):
        self.proc.stdin.close()
        self.proc.wait(timeout=30)


_server = None


def run_launcher(args, cwd=REPO, env=None, timeout=600, torchrun_nproc=None, fresh=False):
    """Runs `python -m launchers.train ARGS` (or under torchrun, through launchers.torchrun);
    returns the CompletedProcess. A single-process launch is forked from a server that has
    already imported the launcher's dependencies (tests/launcher_server.py); `fresh` starts a
    new interpreter instead, for what happens while importing."""
    global _server
    full_env = {**os.environ, "WANDB_MODE": "offline", "PYTHONUNBUFFERED": "1", **(env or {})}
    if not torchrun_nproc and not fresh:
        if _server is None:
            _server = _LauncherServer()
        return _server.run(args, cwd, full_env, timeout)
    if torchrun_nproc:
        cmd = [sys.executable, "-m", "launchers.torchrun", "--standalone",
               f"--nproc_per_node={torchrun_nproc}", "-m", "launchers.train", *args]
    else:
        cmd = [sys.executable, "-m", "launchers.train", *args]
    return subprocess.run(cmd, cwd=cwd, env=full_env, capture_output=True, text=True,
                          timeout=timeout)


def pytest_sessionfinish(session, exitstatus):
    if _server is not None:
        _server.close()
