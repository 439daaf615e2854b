"""Two ranks; rank 1 ends while one of gloo's worker threads still has to free a collective's
tensors, which takes the GIL (tests/launchers/test_failures.py).

    torchrun --nproc_per_node=2 tests/launchers/exit_race.py SIGNAL_FILE [plain]

Rank 1 leaves a broadcast in flight and returns. On its way out, its last atexit handler holds
the GIL in C for about a second, as exiting code may; the handler just before it creates
SIGNAL_FILE, and rank 0, which waits for that file, then completes the broadcast. So rank 1's
worker waits for the GIL at the moment the interpreter would begin its teardown. The process
ends through launchers.cli, as every launcher does; `plain` ends it through Python's own exit
instead.
"""

import atexit
import os
import pathlib
import sys
import time

# Registered before anything else, so that they run last: the signal, then the GIL held.
atexit.register(sum, range(6 * 10**7))
atexit.register(lambda: pathlib.Path(sys.argv[1]).touch() if os.environ["RANK"] == "1" else None)

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
import torch  # noqa: E402
import torch.distributed as dist  # noqa: E402

from launchers import cli  # noqa: E402
from lib import distributed  # noqa: E402


def main(argv):
    distributed.init()
    t = torch.zeros(4)
    if dist.get_rank() == 0:
        signal = pathlib.Path(argv[1])
        while not signal.exists():
            time.sleep(0.01)
        dist.broadcast(t, src=0)
    else:
        dist.broadcast(t, src=0, async_op=True)  # rank 0 completes it once this rank exits
    return 0


if __name__ == "__main__":
    if sys.argv[2:] == ["plain"]:
        sys.exit(main(sys.argv))
    cli.run(main)
