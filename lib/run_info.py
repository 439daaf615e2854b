"""What it takes to relaunch a run exactly, written to `<workdir>/run_info.json`.

The exact command line and working directory, the git commit of the code and whether the tree
was dirty (with the changed paths), the versions of Python and of the packages that affect
numerics, the world size, and the start time. With `operative_config.gin` beside it:

    python -m launchers.train --gin_file=<workdir>/operative_config.gin --workdir=<new workdir>
"""

import datetime
import importlib.metadata
import json
import os
import pathlib
import platform
import shlex
import subprocess
import sys
from typing import Optional, Sequence

PACKAGES = ("torch", "torchtune", "torchao", "gin-config", "wandb", "absl-py", "numpy",
            "tokenizers", "safetensors", "pyarrow", "gintune")


def command(argv: Sequence[str]) -> str:
    """The command line that started this run, as one would type it again: under torchrun, the
    agent's own command (this process's parent), so a multi-node run keeps its rendezvous
    arguments; where that cannot be read, one rebuilt from torchrun's variables."""
    if "TORCHELASTIC_RUN_ID" not in os.environ:
        return shlex.join([sys.executable, "-m", "launchers.train", *argv[1:]])
    agent = _agent_argv()
    if agent:
        return shlex.join(agent)
    return shlex.join([sys.executable, "-m", "launchers.torchrun",
                       f"--nnodes={os.environ.get('GROUP_WORLD_SIZE', 1)}",
                       f"--nproc_per_node={os.environ.get('LOCAL_WORLD_SIZE', 1)}",
                       "-m", "launchers.train", *argv[1:]])


def _agent_argv() -> Optional[list]:
    """The torchrun agent's argv, read from /proc (Linux), or None."""
    try:
        raw = pathlib.Path(f"/proc/{os.getppid()}/cmdline").read_bytes()
    except OSError:
        return None
    args = [a.decode(errors="replace") for a in raw.split(b"\0")[:-1]]
    modules = ("launchers.torchrun", "torch.distributed.run")
    if not any(a in modules or os.path.basename(a) == "torchrun" for a in args[:3]):
        return None
    return args


def slurm() -> Optional[dict]:
    """The SLURM job this run is part of, or None."""
    if "SLURM_JOB_ID" not in os.environ:
        return None
    keys = {"job_id": "SLURM_JOB_ID", "job_name": "SLURM_JOB_NAME",
            "nodelist": "SLURM_JOB_NODELIST", "restart_count": "SLURM_RESTART_COUNT",
            "submit_dir": "SLURM_SUBMIT_DIR"}
    return {k: os.environ[v] for k, v in keys.items() if v in os.environ}


# Variables that change how a run is launched or where it looks, outside its config.
ENVIRONMENT = ("GINTUNE_GIN_PATH", "GINTUNE_COLLECTIVE_TIMEOUT_S", "GLOO_SOCKET_IFNAME",
               "NCCL_SOCKET_IFNAME", "CUDA_VISIBLE_DEVICES")


def collect(argv: Sequence[str], world_size: int, repo: pathlib.Path) -> dict:
    return {
        "command": command(argv),
        "argv": list(argv),
        "cwd": os.getcwd(),
        "world_size": world_size,
        "launched_with_torchrun": "TORCHELASTIC_RUN_ID" in os.environ,
        "nodes": int(os.environ.get("GROUP_WORLD_SIZE", 1)),
        "slurm": slurm(),
        "environment": {k: os.environ[k] for k in ENVIRONMENT if k in os.environ},
        "git": git_state(repo),
        "python": platform.python_version(),
        "packages": {p: _version(p) for p in PACKAGES},
        "hostname": platform.node(),
        "started": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
    }


def write(path: pathlib.Path, info: dict) -> None:
    path.write_text(json.dumps(info, indent=2) + "\n")


def git_state(repo: pathlib.Path) -> Optional[dict]:
    """{'commit', 'dirty', 'changed'} of the repository holding the code, or None."""
    def git(*args):
        return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, text=True,
                              timeout=10)

    try:
        head = git("rev-parse", "HEAD")
        if head.returncode != 0:
            return None
        changed = git("status", "--porcelain").stdout.splitlines()
    except (OSError, subprocess.TimeoutExpired):
        return None
    return {"commit": head.stdout.strip(), "dirty": bool(changed),
            "changed": [line[3:] for line in changed[:50]]}


def _version(package: str) -> Optional[str]:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None
