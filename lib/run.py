"""One training run, from a checked config to an exit status.

Start-up, in order: the process group; every rank checks it holds the same config; that the
workdir can be a folder, and on several nodes that every node sees it (rank 0 makes it for
that); its checkpoints (incomplete ones removed); the resume point, whose saved config is
compared with this one; the components (which write nothing, so a bad value leaves no workdir,
or on several nodes an empty one), whose encoded examples and tensor shapes are then compared
with the checkpoint's; then the workdir files, the loggers, the signal handlers, and training.

Exit status: 0 done; 1 an unexpected error (a bug: its traceback, then a last line saying what
the run was doing); 2 a config or data problem (nothing trained), or a checkpoint that cannot
be resumed; 3 a non-finite loss (the last good checkpoint is kept); 74 a checkpoint could not be
written (a full disk: the partial folder is removed, earlier checkpoints are intact); 75 stopped
by SIGTERM/SIGINT/SIGUSR1 after saving a checkpoint (run the same command again to resume).
"""

import datetime
import json
import os
import pathlib
import secrets
import signal
import socket
import time
import traceback
from typing import Optional, Sequence

from absl import logging

from lib import config, distributed, reporting, run_info
from lib.checkpointing import CONFIG_FILE, STATE_FILE, Checkpointer, CheckpointWriteError
from lib.config import copies
from lib.config.diff import diff
from lib.trainer import NonFiniteLossError, Preempted, Trainer

EXIT_OK, EXIT_UNEXPECTED, EXIT_CONFIG, EXIT_NON_FINITE, EXIT_WRITE, EXIT_PREEMPTED = (
    0, 1, 2, 3, 74, 75)


class RunError(Exception):
    """Stops the run with `status` after `message` is printed (on rank 0; with every_node, on
    each node's first rank: for what one node sees and another may not)."""

    def __init__(self, message: str, status: int, every_node: bool = False):
        super().__init__(message)
        self.status = status
        self.every_node = every_node


def default_workdir(first_gin_file: str) -> pathlib.Path:
    stamp = datetime.datetime.now().strftime("%Y%m%d-%H%M%S")
    return pathlib.Path("runs", f"{pathlib.Path(first_gin_file).stem}-{stamp}").resolve()


def run(cfg: config.LoadedConfig, workdir: Optional[str], first_gin_file: str,
        resume_from: str = "", allow_config_change: bool = False,
        argv: Sequence[str] = ()) -> int:
    """Trains; returns the exit status. Raises RunError for a problem found at start-up."""
    try:
        dist_info = distributed.init()
    except distributed.StartProblem as e:  # each node sees it from its own side
        raise RunError(str(e), EXIT_CONFIG, every_node=True) from e
    if not dist_info.is_main:  # one console: rank 0 reports, the others only their errors
        logging.set_verbosity(logging.ERROR)
    try:
        return _run(cfg, dist_info, workdir, first_gin_file, resume_from, allow_config_change,
                    argv)
    finally:
        distributed.shutdown()


def _run(cfg, dist_info, workdir, first_gin_file, resume_from, allow_config_change, argv):
    try:
        distributed.check_same_config(cfg.effective_text())
        workdir = pathlib.Path(distributed.broadcast_object(
            str(pathlib.Path(workdir).resolve()) if workdir else
            str(default_workdir(first_gin_file))))
        unusable = distributed.broadcast_object(_unusable_workdir(workdir))
        if unusable:
            raise RunError(unusable, EXIT_CONFIG)
        unshared = _unshared_workdir(workdir, dist_info)
        if unshared:
            raise RunError(unshared, EXIT_CONFIG, every_node=True)
        checkpointer = Checkpointer(str(workdir))
        checkpointer.clean_up()
        distributed.barrier()
        resume = _resume_point(checkpointer, resume_from, dist_info.is_main)
        changes = _compare_configs(resume, cfg, allow_config_change) if resume else []
        trainer = Trainer(str(workdir), dist_info, checkpointer)
        if resume:
            changes += _compare_data(resume, trainer.task.data_digest, allow_config_change)
        unfit = resume and checkpointer.fit_problem(resume, trainer.model, trainer.optimizer)
        if unfit:
            raise RunError(f"cannot resume: {unfit}. A checkpoint resumes only into the model "
                           "and optimizer that saved it: undo the config change that alters "
                           "them, or start a new run from its weights with "
                           f"Trainer.init_from='{resume.parent.parent}'", EXIT_CONFIG)
    except (ValueError, OSError) as e:
        raise RunError(config.user_message(e), EXIT_CONFIG) from e

    if dist_info.is_main:
        try:
            workdir.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise RunError(f"cannot make the workdir {workdir}: {e.strerror}; give a folder "
                           "you can write for --workdir", EXIT_CONFIG) from e
        _log_to_file(workdir / "train.log")
        logging.info("workdir: %s", workdir)
        idle = distributed.idle_gpus() if dist_info.device.type == "cpu" else None
        if idle:
            logging.warning(idle)
        run_info.write(workdir / "run_info.json",
                       run_info.collect(argv, dist_info.world_size, config.REPO_ROOT))
        copies.write(workdir, cfg.files, cfg.roots)
        if resume:
            logging.info("resuming from %s", resume)
            for change in changes:
                logging.info("config changed since the checkpoint: %s", change)
        else:
            logging.info("fresh start: no checkpoint in %s", checkpointer.root)
    try:
        trainer.prepare(resuming=bool(resume))
    except ValueError as e:  # e.g. a DPO reference cache that does not fit this run
        raise RunError(config.user_message(e), EXIT_CONFIG) from e
    try:
        state = trainer.restore(resume) if resume else {}
    except ValueError as e:  # e.g. LoRA adapters saved on another base model
        raise RunError(config.user_message(e), EXIT_CONFIG) from e
    distributed.barrier()

    logger = reporting.RunLogger(str(workdir), enabled=dist_info.is_main)
    saved = cfg.saved_text()  # after every component is built
    if dist_info.is_main:
        (workdir / "operative_config.gin").write_text(saved)
    logger.start(workdir.name, config.flat_config(saved),
                 resume_step=state.get("step"), resume_run_id=state.get("wandb_run_id"))
    if resume:
        logger.summary({"resume/from_step": state["step"],
                        "resume/config_changes": [str(c) for c in changes]})
    if checkpointer.damaged:
        logger.summary({"resume/damaged_checkpoints": checkpointer.damaged})
    previous = _install_stop_handlers(trainer)
    try:
        trainer.train(logger, saved)
        return EXIT_OK
    except Preempted as p:
        command = run_info.command(argv)
        if not any(a.startswith("--workdir") for a in argv):
            command += f" --workdir={workdir}"
        if dist_info.is_main:
            logging.warning("stopped by a signal at step %d; checkpoint saved to %s. Resume "
                            "with the same command (and --workdir): %s", p.step, p.path, command)
        return EXIT_PREEMPTED
    except CheckpointWriteError as e:
        raise RunError(str(e), EXIT_WRITE) from e
    except NonFiniteLossError as e:
        steps = checkpointer.complete_steps()
        raise RunError(f"{e}; last good checkpoint: "
                       f"{checkpointer.root / f'step_{steps[-1]}' if steps else 'none'}",
                       EXIT_NON_FINITE) from e
    except Exception as e:  # a bug: keep the traceback, and end with what the run was doing
        lines = [line for line in str(e).splitlines() if line.strip()]
        lost = distributed.lost_peer(e)
        if lost:  # not this rank's fault: its traceback would mislead
            raise RunError(f"a collective failed while {trainer.activity} of the run in "
                           f"{workdir}: {lost}", EXIT_UNEXPECTED, every_node=True) from e
        traceback.print_exc()
        raise RunError(f"unexpected {type(e).__name__} ({lines[-1].strip() if lines else ''}) "
                       f"while {trainer.activity} of the run in {workdir}; the traceback above "
                       "shows where", EXIT_UNEXPECTED) from e
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        logger.finish()


PROBE_WAIT_S = 30.0  # how long each other node looks for rank 0's probe file in the workdir


def _unusable_workdir(workdir: pathlib.Path) -> Optional[str]:
    """Why the workdir could not be made or written into (rank 0's view, found before any
    work and without writing), else None."""
    existing = workdir
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        where = "is" if existing == workdir else f"lies under {existing}, which is"
        return f"the workdir {workdir} {where} a file, not a folder; give a folder for --workdir"
    if not os.access(existing, os.W_OK | os.X_OK):
        return (f"the workdir {workdir} cannot be written: {existing} is not writable by this "
                "user; give a folder you can write for --workdir")
    return None


def _unshared_workdir(workdir: pathlib.Path, dist_info) -> Optional[str]:
    """On several nodes: why the workdir is not one folder that every node sees, else None.

    Every rank writes its shards of each checkpoint into the workdir, and rank 0 alone marks
    a checkpoint complete; on a disk each node sees alone, no checkpoint could be resumed. Rank
    0 writes a probe file there, and each other node's first rank waits up to PROBE_WAIT_S (or
    half the collective timeout, if less) to read it. The probe is removed, and so is the
    workdir if rank 0 made it and a node cannot see it."""
    if int(os.environ.get("GROUP_WORLD_SIZE", 1)) <= 1:
        return None
    token, made, problem = secrets.token_hex(8), False, None
    if dist_info.is_main:
        try:
            made = not workdir.exists()
            workdir.mkdir(parents=True, exist_ok=True)
            (workdir / f".node-probe-{token}").write_text(token)
        except OSError as e:
            problem = f"cannot write into the workdir {workdir}: {e.strerror}"
    token, problem = distributed.broadcast_object((token, problem))
    if problem:
        return problem
    probe = workdir / f".node-probe-{token}"
    # Within the collective timeout, which the other ranks wait under meanwhile.
    wait_s = min(PROBE_WAIT_S, distributed.collective_timeout_s() / 2)
    seen = True
    if dist_info.local_rank == 0 and not dist_info.is_main:
        seen = _appears(probe, token, wait_s)
    blind = [host for host, ok in distributed.gather_object((socket.gethostname(), seen))
             if not ok]
    if dist_info.is_main:
        probe.unlink(missing_ok=True)
        if blind and made:
            workdir.rmdir()
    if not blind:
        return None
    more = f" (and {len(blind) - 1} more node(s))" if len(blind) > 1 else ""
    return (f"the workdir {workdir} is not one folder every node sees: node {blind[0]}{more} "
            f"did not see a file rank 0 wrote there within {wait_s:g} s. Every rank "
            "writes its shards of each checkpoint there, so put --workdir on a file system "
            "that all nodes mount")


def _appears(path: pathlib.Path, text: str, wait_s: float) -> bool:
    """Whether the file at `path` holds `text` within `wait_s` seconds."""
    deadline = time.monotonic() + wait_s
    while True:
        try:
            if path.read_text() == text:
                return True
        except OSError:
            pass
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.5)


def _resume_point(checkpointer: Checkpointer, resume_from: str, is_main: bool):
    """Rank 0 picks (and verifies) the checkpoint; every rank gets its choice or its error."""
    if is_main:
        try:
            answer = (checkpointer.resume_point(resume_from), None, checkpointer.damaged)
        except config.ConfigError as e:
            answer = (None, e.problems, [])
    answer = distributed.broadcast_object(answer if is_main else None)
    if answer[1] is not None:
        raise config.ConfigError(answer[1])
    checkpointer.damaged = answer[2]
    return answer[0]


def _compare_configs(resume: pathlib.Path, cfg, allow_config_change: bool):
    """The differences between the checkpoint's config and this one; refuses changes that
    alter shapes or data unless allowed."""
    changes = diff((resume / CONFIG_FILE).read_text(), cfg.effective_text())
    blocking = [c for c in changes if c.changes_state]
    if blocking and not allow_config_change:
        raise config.ConfigError(
            [config.Problem(None, (
                f"resuming {resume} with a config that changes the model, tokenizer, data or "
                f"its order: {c}")) for c in blocking],
            advice="pass --allow_config_change to resume anyway, or use a new --workdir for a "
                   "fresh start")
    return changes


def _compare_data(resume: pathlib.Path, digest: str, allow_config_change: bool) -> list:
    """[the change] if the examples differ from those the checkpoint trained on (the same
    config over edited data files); refused unless allowed. A checkpoint saved before digests
    were recorded is not compared."""
    saved = json.loads((resume / STATE_FILE).read_text()).get("data_digest")
    if saved is None or saved == digest:
        return []
    digests = f"digest {saved[:12]} there, {digest[:12]} now"
    if not allow_config_change:
        raise config.ConfigError(
            [config.Problem(None, (
                f"resuming {resume} on other data: the examples differ from those it was "
                f"trained on ({digests}); a data file's contents, or how they are read, "
                "changed"))],
            advice="restore the data, pass --allow_config_change to resume on the new data, or "
                   "use a new --workdir for a fresh start")
    change = f"data: the examples differ from those the checkpoint was trained on ({digests})"
    return [change]


def _install_stop_handlers(trainer: Trainer) -> dict:
    """SIGTERM, SIGINT and SIGUSR1 (SLURM's warning before a time limit, see
    launchers/slurm_train.sh) ask the trainer to checkpoint and stop at the next step boundary."""
    previous = {}
    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1):
        previous[sig] = signal.signal(sig, lambda *_: trainer.request_stop())
    return previous


def _log_to_file(path: pathlib.Path) -> None:
    import logging as pylogging

    handler = pylogging.FileHandler(path)
    handler.setFormatter(pylogging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    pylogging.getLogger().addHandler(handler)
