"""torchrun, ending the way every gintune launcher ends: one `error:` line and our exit status.

    python -m launchers.torchrun --nproc_per_node=2 -m launchers.train --gin_file=gin/reward.gin

The arguments are torchrun's own (`torch.distributed.run`), passed through unchanged, and the
agent, its rendezvous, restarts and worker supervision are torchrun's. Only the ending differs.
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
  and 1 otherwise (a bug, or a rank killed by a signal, e.g. by the kernel out of memory);
  the failed rank's own log says why, and the last line names it;
- on several nodes, a rendezvous that fails (the torchrun hosting it, on another node, has
  exited, or --rdzv_endpoint cannot be reached): 1, and a line saying so; the other node's log
  says why it stopped.
"""

import signal
import sys

from launchers.cli import fail

OUR_STATUSES = {2: "a config or data problem", 3: "a non-finite loss",
                74: "a checkpoint could not be written", 75: "stopped by a signal"}
EXIT_UNEXPECTED, EXIT_PREEMPTED = 1, 75


def _signal_name(sigval) -> str:
    try:
        return signal.Signals(sigval).name
    except ValueError:
        return f"signal {sigval}"


def main(argv=None) -> None:
    from torch.distributed.elastic.multiprocessing.api import SignalException
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.elastic.rendezvous.api import RendezvousError
    from torch.distributed.run import parse_args, run

    received = []

    def on_usr1(signum, frame):
        # What torchrun does for SIGTERM: its agent stops the ranks with the signal it got.
        received.append(signum)
        raise SignalException(f"Process got signal: {signum}", sigval=signal.SIGTERM)

    args = parse_args(sys.argv[1:] if argv is None else argv)
    signal.signal(signal.SIGUSR1, on_usr1)
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
        rank, failure = e.get_first_failure()
        if failure.exitcode < 0:
            fail(f"rank {rank} was killed by {failure.signal_name()} (by the kernel when a "
                 f"node runs out of memory, or by the scheduler); torchrun stopped the others",
                 EXIT_UNEXPECTED)
        status = failure.exitcode if failure.exitcode in OUR_STATUSES else EXIT_UNEXPECTED
        what = OUR_STATUSES.get(status, "an unexpected error")
        fail(f"rank {rank} exited with status {failure.exitcode} ({what}; its log above says "
             f"why); torchrun stopped the others", status)


if __name__ == "__main__":
    main()
