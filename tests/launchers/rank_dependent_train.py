"""launchers.train with one extra binding on rank 1 only, to test the cross-rank config check.

    torchrun --nproc_per_node=2 tests/launchers/rank_dependent_train.py ARGS...
"""

import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
from launchers import cli, train  # noqa: E402

if __name__ == "__main__":
    if os.environ.get("RANK") == "1":
        sys.argv.append("--gin_bindings=Trainer.seed=1")
    cli.run(train.main)
