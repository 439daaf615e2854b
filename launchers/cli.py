"""How every launcher ends on a mistake of its user: one `error:` line and exit status 2.

absl's own parser prints a usage page and exits 1 for an unknown or malformed flag, and a
UsageError raised in main does the same; `run` turns both into one line (`--help` keeps absl's
behaviour).
"""

import os
import sys

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
        fail(f"{e} (see --help)")


def run(main):
    def guarded(argv):
        try:
            return main(argv)
        except app.UsageError as e:
            fail(f"{e} (see --help)")

    app.run(guarded, flags_parser=_parse)
