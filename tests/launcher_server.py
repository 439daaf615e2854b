"""Runs `python -m launchers.train` for the tests without paying its imports each time.

Each launch of the real launcher spends about 5 s of CPU importing torch, torchtune (with
torchao and torch._dynamo), W&B and the library before it reads its first flag; the suite
launches it about a hundred times. This server imports all of that once, touching no tensor
(no thread pool, no process group), and then forks one child per launch: a separate process
with its own working directory, environment, argv, stdout, stderr and exit status, running the
real `launchers.train` entry point exactly as `python -m` would from there on.

Tests that check what a fresh interpreter imports or prints while importing (the triton
warning, `--validate_only` importing no torchtune) launch a real subprocess instead
(`run_launcher(..., fresh=True)`).

Protocol (one launch at a time, JSON lines): the client writes
{"argv", "cwd", "env", "out", "err"}; the server answers {"pid"} once the child runs and
{"returncode"} (as subprocess reports it: -N for a signal) once it has ended.
"""

import json
import os
import sys
import traceback


def _warm_imports():
    import torch  # noqa: F401
    import torchtune.models.llama3  # noqa: F401  (imports torchao and torch._dynamo)
    import torchtune.models.qwen2  # noqa: F401
    import torchtune.modules.peft  # noqa: F401
    import wandb  # noqa: F401

    import lib.configurables  # noqa: F401
    import lib.run  # noqa: F401
    import lib.trainer  # noqa: F401
    from launchers import train  # noqa: F401  (defines the launcher's flags)


def _child(request) -> None:
    from launchers import cli, train

    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    devnull = os.open(os.devnull, os.O_RDONLY)
    os.dup2(devnull, 0)
    for fd, path in ((1, request["out"]), (2, request["err"])):
        target = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        os.dup2(target, fd)
        os.close(target)
    sys.argv = [train.__file__, *request["argv"]]
    try:
        cli.run(train.main)  # ends the process, as it does under `python -m`
    except KeyboardInterrupt:  # which cli.run lets through: never back into the server's loop
        traceback.print_exc()
        cli.exit_process(1)


def main() -> None:
    _warm_imports()
    out = sys.stdout
    print(json.dumps({"ready": True}), file=out, flush=True)
    for line in sys.stdin:
        request = json.loads(line)
        pid = os.fork()
        if pid == 0:
            _child(request)
        print(json.dumps({"pid": pid}), file=out, flush=True)
        _, status = os.waitpid(pid, 0)
        print(json.dumps({"returncode": os.waitstatus_to_exitcode(status)}), file=out,
              flush=True)


if __name__ == "__main__":
    main()
