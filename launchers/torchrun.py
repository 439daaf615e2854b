"""torchrun, ending the way every gintune launcher ends: one `error:` line and our exit status.

    python -m launchers.torchrun --nproc_per_node=2 -m launchers.train --gin_file=gin/reward.gin

The arguments are torchrun's own (`torch.distributed.run`), passed through unchanged, and the
agent, its rendezvous, restarts and worker supervision are torchrun's. Only the ending differs,
and `--shutdown_timeout` works on every torch (torch 2.9's torchrun lacks it: parse_args).
Plain torchrun exits 1 on any failure, after a traceback and a report of every rank; so a job
script cannot tell a preemption that saved a checkpoint from a typo in a config. Here:

- a SIGTERM, SIGINT or SIGUSR1 to the agent (`scancel`, Ctrl-C, SLURM's warning before the
  time limit) makes torchrun send SIGTERM to every rank, which saves a checkpoint at its next
  step boundary and stops; the agent waits for them (`--shutdown_timeout`, 30 s by default)
  and exits **75**. SIGUSR1 is the one to send to a whole job: SLURM signals every process of
  a job step, and W&B's service process exits on SIGTERM, losing the run's last records,
  while it ignores SIGUSR1 (plain torchrun would die of a SIGUSR1);
- ranks that fail: the exit status of the first rank that failed when it is one of gintune's
  (2 config or data, 3 non-finite loss, 74 checkpoint write failure, 75 stopped by a signal),
  and 1 otherwise (a bug, or a rank killed by a signal: by the kernel out of memory, by a
  crash in native code);
  the failed rank's own log says why, and the last line names it (of the ranks that ended
  as the first one did, the lowest: when all find the same problem, rank 0);
- on several nodes, a rendezvous that fails (the torchrun hosting it, on another node, has
  exited, or --rdzv_endpoint cannot be reached): 1, and a line saying so; the other node's log
  says why it stopped;
- on several nodes, when this node's ranks have ended but the rendezvous host has stopped
  answering (its node is down, or the network to it is cut): 1, and a line saying so, a minute
  after the ranks ended. torchrun's agent would otherwise wait forever: its store client, once a
  wait times out, blocks on a reply that never comes, and no signal but SIGKILL ends it.
"""

import os
import pathlib
import signal
import socket
import sys
import threading
import time

from launchers.cli import fail

OUR_STATUSES = {2: "a config or data problem", 3: "a non-finite loss",
                74: "a checkpoint could not be written", 75: "stopped by a signal"}
EXIT_UNEXPECTED, EXIT_PREEMPTED = 1, 75


def _signal_name(sigval) -> str:
    try:
        return signal.Signals(sigval).name
    except ValueError:
        return f"signal {sigval}"


_CRASHES = (signal.SIGABRT, signal.SIGSEGV, signal.SIGBUS, signal.SIGFPE, signal.SIGILL)


def killed(rank, sigval) -> str:
    """What a rank that a signal ended tells about its cause."""
    if sigval == signal.SIGKILL:
        why = "by the kernel when a node runs out of memory, or by the scheduler"
    elif sigval in _CRASHES:
        why = ("a crash in native code: torch, a C extension or a driver; the lines it printed "
               "above say where")
    else:
        why = "sent by the scheduler or a user"
    return f"rank {rank} was killed by {_signal_name(sigval)} ({why}); torchrun stopped the others"


def reported_failure(failures):
    """(rank, failure) of the ranks that failed to name: the lowest rank of those that ended as
    the first one did. When every rank finds the same problem (damaged weights, checked on each
    rank), which of them exits first is chance; rank 0 is the one whose log says why."""
    first = min(failures.values(), key=lambda f: f.timestamp)
    rank = min(r for r, f in failures.items() if f.exitcode == first.exitcode)
    return rank, failures[rank]


# How long this node's ranks may all be gone while torchrun still runs, before the rendezvous
# host is checked: ending normally, torchrun waits there for the other nodes (up to 300 s), and
# then the host answers.
RANKS_GONE_S = 60.0


def _children(pid: int) -> list[int]:
    """The running processes whose parent is `pid` (Linux's /proc), not counting those that
    have exited but not been waited for (a stuck torchrun does not reap its ranks)."""
    found = []
    for stat in pathlib.Path("/proc").glob("[0-9]*/stat"):
        try:
            # The command name, in parentheses, may hold spaces: state and parent follow it.
            state, parent = stat.read_text().rsplit(")", 1)[1].split()[:2]
            if int(parent) == pid and state != "Z":
                found.append(int(stat.parent.name))
        except (OSError, IndexError, ValueError):
            continue
    return found


def _answers(host: str, port: int) -> bool:
    try:
        with socket.create_connection((host, port), timeout=10):
            return True
    except OSError:
        return False


def _watch_rendezvous(endpoint: str, host: str, port: int, check_every_s: float = 5.0) -> None:
    """Ends this torchrun when its ranks have all ended and the rendezvous host, RANKS_GONE_S
    later, does not accept a connection (a daemon thread: torchrun's main thread may be the
    one that is stuck)."""
    seen, gone_since = False, None
    while True:
        time.sleep(check_every_s)
        if _children(os.getpid()):
            seen, gone_since = True, None
            continue
        if not seen:
            continue
        gone_since = gone_since or time.monotonic()
        if time.monotonic() - gone_since >= RANKS_GONE_S and not _answers(host, port):
            print(f"error: torchrun lost its rendezvous {endpoint}: this node's ranks have "
                  f"ended, and the node hosting it has not answered since (it is down, or "
                  f"the network to it is cut); the lines above say what the ranks saw",
                  file=sys.stderr, flush=True)
            os._exit(EXIT_UNEXPECTED)


def _start_watch(args) -> None:
    """On several nodes, watches the rendezvous host (see _watch_rendezvous)."""
    from torch.distributed.elastic.rendezvous.utils import parse_rendezvous_endpoint
    from torch.distributed.run import parse_min_max_nnodes

    if args.standalone or parse_min_max_nnodes(args.nnodes)[1] <= 1:
        return
    endpoint = args.rdzv_endpoint or f"{args.master_addr}:{args.master_port}"
    host, port = parse_rendezvous_endpoint(endpoint, default_port=29400)
    threading.Thread(target=_watch_rendezvous, args=(endpoint, host, port), daemon=True,
                     name="gintune-rendezvous-watch").start()


SHUTDOWN_TIMEOUT_S = 30  # torchrun's own default


def parse_args(argv):
    """torchrun's arguments, with `--shutdown_timeout` on every torch. torch 2.9.1's torchrun
    has no such option: its agent always gives the ranks 30 s after SIGTERM before SIGKILL, too
    little for a large checkpoint, and it rejects the option (exit 2) that a job script passes.
    On such a torch the option is added here, and the agent's wait is made to honour it (or, as
    newer torchruns do, TORCH_ELASTIC_SHUTDOWN_TIMEOUT)."""
    import dataclasses

    from torch.distributed.launcher.api import LaunchConfig
    from torch.distributed.run import get_args_parser

    parser = get_args_parser()
    if "shutdown_timeout" in {f.name for f in dataclasses.fields(LaunchConfig)}:
        return parser.parse_args(argv)
    parser.add_argument(
        "--shutdown-timeout", "--shutdown_timeout", type=int, default=None,
        help=f"seconds the ranks get to stop after SIGTERM before SIGKILL (default: "
             f"TORCH_ELASTIC_SHUTDOWN_TIMEOUT, else {SHUTDOWN_TIMEOUT_S})")
    args = parser.parse_args(argv)
    timeout = args.shutdown_timeout
    if timeout is None:
        timeout = int(os.environ.get("TORCH_ELASTIC_SHUTDOWN_TIMEOUT", SHUTDOWN_TIMEOUT_S))
    if timeout < 0:
        parser.error(f"--shutdown_timeout must be 0 or more seconds, got {timeout}")
    _wait_before_kill(timeout)
    return args


def _wait_before_kill(timeout_s: int) -> None:
    """Makes the agent wait `timeout_s` for its ranks after the signal that stops them: the
    agent closes its process context with no timeout, so the context's default applies."""
    from torch.distributed.elastic.multiprocessing.api import PContext

    close = PContext.close

    def close_after(self, death_sig=None, timeout=timeout_s):
        return close(self, death_sig, timeout)

    PContext.close = close_after


def main(argv=None) -> None:
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.elastic.rendezvous.api import RendezvousError
    from torch.distributed.run import run

    received = []

    def on_usr1(signum, frame):
        # What torchrun does for SIGTERM: its agent stops the ranks with the signal it got.
        received.append(signum)
        raise SignalException(f"Process got signal: {signum}", sigval=signal.SIGTERM)

    args = parse_args(sys.argv[1:] if argv is None else argv)
    signal.signal(signal.SIGUSR1, on_usr1)
    _start_watch(args)
    try:
        run(args)
    except SignalException as e:
        got = _signal_name(received[0] if received else e.sigval)
        fail(f"torchrun got {got} and passed SIGTERM to every rank, which save a checkpoint "
             f"at their next step boundary and stop (the log above says where); run the same "
             f"command to resume", EXIT_PREEMPTED)
    except RendezvousError as e:
        endpoint = f"{args.rdzv_endpoint} " if args.rdzv_endpoint else ""
        fail(f"torchrun lost its rendezvous {endpoint}({type(e).__name__}): the torchrun "
             f"hosting it on another node has exited (that node's log says why), or the "
             f"endpoint cannot be reached from this node", EXIT_UNEXPECTED)
    except ChildFailedError as e:
        rank, failure = reported_failure(e.failures)
        if failure.exitcode < 0:
            fail(killed(rank, -failure.exitcode), EXIT_UNEXPECTED)
        status = failure.exitcode if failure.exitcode in OUR_STATUSES else EXIT_UNEXPECTED
        what = OUR_STATUSES.get(status, "an unexpected error")
        fail(f"rank {rank} exited with status {failure.exitcode} ({what}; its log above says "
             f"why); torchrun stopped the others", status)


if __name__ == "__main__":
    main()
