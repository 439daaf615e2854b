"""A rank that needs STOP_S seconds to stop after SIGTERM, as one saving a large checkpoint
does (tests/test_distributed.py: torchrun's --shutdown_timeout).

    python -m launchers.torchrun --nproc_per_node=2 tests/launchers/slow_stop.py DIR STOP_S

Each rank writes DIR/ready-RANK; rank 0, once both are there, sends SIGTERM to the agent. On
SIGTERM a rank waits STOP_S seconds, writes DIR/stopped-RANK and exits 75, unless the agent
has killed it first. No torch: only the agent's timing is under test.
"""

import os
import pathlib
import signal
import sys
import time

folder, stop_s = pathlib.Path(sys.argv[1]), float(sys.argv[2])
rank = os.environ["RANK"]


def stop(signum, frame):
    time.sleep(stop_s)
    (folder / f"stopped-{rank}").touch()
    sys.exit(75)


signal.signal(signal.SIGTERM, stop)
(folder / f"ready-{rank}").touch()
if rank == "0":
    while not all((folder / f"ready-{r}").exists() for r in ("0", "1")):
        time.sleep(0.05)
    os.kill(os.getppid(), signal.SIGTERM)
while True:
    time.sleep(1)
