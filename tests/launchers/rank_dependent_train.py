"""launchers.train with one extra binding on rank 1 only, to test the cross-rank config check.

    torchrun --nproc_per_node=2 tests/launchers/rank_dependent_train.py ARGS...
"""

import os
import sys

from absl import app

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
from launchers import train  # noqa: E402

if __name__ == "__main__":
    if os.environ.get("RANK") == "1":
        sys.argv.append("--gin_bindings=Trainer.seed=1")
    app.run(train.main)
