"""Bound values reach DataLoader workers started with spawn."""

import gin
import torch

from lib import config
from lib.config import registry


@registry.configurable()
def _worker_value(value: int = 0) -> int:
    """A configurable read inside DataLoader workers.

    Args:
      value: the value to report.
    """
    return value


class _ReadsConfig(torch.utils.data.Dataset):
    def __len__(self):
        return 2

    def __getitem__(self, i):
        return _worker_value()


def _values(worker_init_fn):
    loader = torch.utils.data.DataLoader(_ReadsConfig(), batch_size=None, num_workers=1,
                                         multiprocessing_context="spawn",
                                         worker_init_fn=worker_init_fn)
    return list(loader)


def test_spawned_workers_see_the_bound_values(search_roots):
    config.load([], ["_worker_value.value = 7"], builds=("_worker_value",))
    assert _worker_value() == 7
    assert _values(None) == [0, 0]  # gin 0.5.0 alone: a spawned worker has only defaults
    assert _values(config.WorkerConfig()) == [7, 7]
    assert gin.query_parameter("_worker_value.value") == 7
