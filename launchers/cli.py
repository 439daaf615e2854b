"""How every launcher ends: on a mistake of its user, one `error:` line and exit status 2; and
in every case through `exit_process`, without the interpreter's teardown.

absl's own parser prints a usage page and exits 1 for an unknown or malformed flag, and a
UsageError raised in main does the same; `run` turns both into one line (`--help` keeps absl's
behaviour).
"""

import atexit
import os
import sys
import threading
import traceback
from typing import NoReturn

from absl import app, flags

EXIT_USAGE = 2


def fail(message: str, status: int = EXIT_USAGE, every_node: bool = False):
    """Prints `error: message` (once, on rank 0 under torchrun; with every_node, once on each
    node, for what differs between nodes) and exits with `status`."""
    if os.environ.get("RANK", "0") == "0" or (every_node and
                                               os.environ.get("LOCAL_RANK", "0") == "0"):
        print(f"error: {message}", file=sys.stderr)
    sys.exit(status)


def _parse(argv):
    try:
        return flags.FLAGS(argv)
    except flags.Error as e:
        fail(f"{_flag_message(e)} (see --help)")


def _flag_message(e: Exception) -> str:
    """absl's message for a flag error, without the tuple its boolean parser raises with
    (`flag --x=maybe: ('Non-boolean argument to boolean flag', 'maybe')`)."""
    cause = e.__context__
    if (isinstance(e, flags.IllegalFlagValueError) and isinstance(cause, (TypeError, ValueError))
            and len(cause.args) == 2 and str(cause.args[0]).startswith("Non-boolean")):
        return f"{str(e).split(': ', 1)[0]} is not a boolean; give true or false (or 1 or 0)"
    return str(e)


def run(main):
    """Runs `main` under absl and ends the process with its status through `exit_process`; an
    exception that escapes `main` is printed as Python would, with status 1."""
    def guarded(argv):
        try:
            return main(argv)
        except app.UsageError as e:
            fail(f"{e} (see --help)")

    try:
        app.run(guarded, flags_parser=_parse)
    except SystemExit as e:
        exit_process(e.code)
    except KeyboardInterrupt:
        raise
    except BaseException:  # a bug: Python's own report, then the same ending
        traceback.print_exc()
        exit_process(1)


def exit_process(code) -> NoReturn:
    """Ends the process with sys.exit(code)'s status after what Python does first on its way out
    (wait for non-daemon threads, run atexit handlers: W&B's, logging's, multiprocessing's, then
    flush stdout and stderr), but skips the interpreter's teardown (objects' finalizers: the
    run closes its files itself, and metrics.jsonl is written line by line).

    gloo's worker threads outlive destroy_process_group: torch's DTensor caches keep the group
    alive. Each frees a collective's tensors after the collective has returned, and in torch
    2.13 that takes the GIL (a tensor's C++ references hold its Python object). A worker still
    waiting for the GIL when the teardown begins is ended by Python inside a noexcept
    destructor, and the process aborts after a finished run ('terminate called without an
    active exception', SIGABRT), which torchrun reports as a failed rank."""
    if code is None:
        status = 0
    elif isinstance(code, int):
        status = code
    else:  # sys.exit("message"): Python prints it and exits 1
        print(code, file=sys.stderr)
        status = 1
    try:
        threading._shutdown()
        atexit._run_exitfuncs()
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except (OSError, ValueError):  # a closed pipe or stream: nothing more can be said
                pass
        os._exit(status & 0xFF)
