"""Which examples each rank reads at a step, for every task; and how pairs become tensors.

The order of the training set is a pure function of (seed, epoch), so the batch of any step can
be recomputed without replaying the data: a resumed run reads exactly what it would have read.
A global batch is split into contiguous per-rank slices, and each slice into micro-batches.
An example is whatever the task trains on (a preference pair, a prompt and completion); the
task's collate function turns a micro-batch's examples into tensors.
"""

from typing import Callable, List, Sequence

import torch

from lib.data.encoding import EncodedPair
from lib.data.packing import from_position, pack


def batch_problems(global_batch_size: int, micro_batch_size: int, world_size: int):
    """[(parameter, message)] when a global batch cannot be split over ranks and micro-batches."""
    small = [(arg, f"{arg}={value} must be >= 1")
             for arg, value in (("global_batch_size", global_batch_size),
                                ("micro_batch_size", micro_batch_size)) if value < 1]
    if small:  # each at its own binding
        return small
    unit = world_size * micro_batch_size
    if global_batch_size % unit:
        return [("global_batch_size", f"global_batch_size={global_batch_size} must be divisible "
                 f"by world_size ({world_size}) x micro_batch_size ({micro_batch_size}), e.g. "
                 f"{unit * max(1, global_batch_size // unit)}")]
    return []


class StepSchedule:
    """Maps a step to the example indices this rank reads, epoch after epoch."""

    def __init__(self, num_examples: int, global_batch_size: int, rank: int, world_size: int,
                 micro_batch_size: int, seed: int):
        for _, message in batch_problems(global_batch_size, micro_batch_size, world_size):
            raise ValueError(message)
        per_rank = global_batch_size // world_size
        if num_examples < global_batch_size:
            raise ValueError(f"the training set has {num_examples} examples, fewer than one "
                             f"global batch ({global_batch_size})")
        self.num_examples, self.global_batch_size = num_examples, global_batch_size
        self.steps_per_epoch = num_examples // global_batch_size  # the remainder is skipped
        self._slice = slice(rank * per_rank, (rank + 1) * per_rank)
        self._micro = micro_batch_size
        self._seed = seed
        self._perm_epoch, self._perm = None, None

    def micro_batches(self, step: int) -> List[List[int]]:
        """The example indices of each micro-batch this rank runs at `step` (0-based)."""
        epoch, i = divmod(step, self.steps_per_epoch)
        if epoch != self._perm_epoch:
            g = torch.Generator().manual_seed(self._seed * 1_000_003 + epoch)
            self._perm, self._perm_epoch = torch.randperm(self.num_examples, generator=g), epoch
        batch = self._perm[i * self.global_batch_size:(i + 1) * self.global_batch_size]
        mine = batch[self._slice].tolist()
        return [mine[j:j + self._micro] for j in range(0, len(mine), self._micro)]


class StepBatches(torch.utils.data.Dataset):
    """Item `step` is the list of collated micro-batches this rank runs at that step, so a
    DataLoader can prepare steps ahead in worker processes (`collate_fn` must pickle: a
    module-level function or a functools.partial of one)."""

    def __init__(self, schedule: StepSchedule, examples: Sequence, collate_fn: Callable):
        self.schedule, self.examples, self.collate_fn = schedule, examples, collate_fn

    def __len__(self):
        return 2 ** 62  # indexed by step; the sampler decides which steps are read

    def __getitem__(self, step: int) -> List[dict]:
        return [self.collate_fn([self.examples[j] for j in indices])
                for indices in self.schedule.micro_batches(step)]


def eval_shard(num_pairs: int, rank: int, world_size: int, batch_size: int):
    """Splits the eval set across ranks without padding duplicates.

    Returns a list of index lists, the same number for every rank (FSDP needs every rank in
    each forward); a rank with fewer pairs gets empty lists at the end.
    """
    mine = list(range(rank, num_pairs, world_size))
    longest = -(-num_pairs // world_size)
    num_batches = -(-longest // batch_size)
    return [mine[j * batch_size:(j + 1) * batch_size] for j in range(num_batches)]


def collate(pairs: Sequence[EncodedPair], pad_id: int) -> dict:
    """Stacks chosen then rejected sides into one right-padded batch for a single forward.

    Returns tokens and attention_mask of shape [2n, longest side in the batch], margin [n]
    (0 where a pair has none), prompt_lengths [2n] (each row's leading prompt tokens),
    num_tokens (non-pad) and weight (the pairs: the unit the loss averages over).
    """
    seqs = [p.chosen for p in pairs] + [p.rejected for p in pairs]
    longest = max(map(len, seqs))
    tokens = torch.full((len(seqs), longest), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), longest), dtype=torch.bool)
    for i, s in enumerate(seqs):
        tokens[i, :len(s)] = torch.tensor(s, dtype=torch.long)
        mask[i, :len(s)] = True
    margin = torch.tensor([p.margin or 0.0 for p in pairs], dtype=torch.float32)
    prompt_lengths = torch.tensor([p.prompt_lengths[0] for p in pairs]
                                  + [p.prompt_lengths[1] for p in pairs], dtype=torch.long)
    return {"tokens": tokens, "attention_mask": mask, "margin": margin,
            "prompt_lengths": prompt_lengths, "num_tokens": int(mask.sum()),
            "computed_tokens": tokens.numel(), "weight": len(pairs)}


def collate_packed(pairs: Sequence[EncodedPair], pad_id: int) -> dict:
    """The padding-free form of collate(): the same sequences (chosen sides, then rejected
    sides, in that order wherever a batch lists sequences) packed by lib/data/packing.py.

    Returns its tokens, segments, positions, starts and ends, plus `response` [rows, s] (True at
    each sequence's tokens after its prompt), margin, prompt_lengths, num_tokens, computed_tokens
    and weight as collate() does.
    """
    seqs = [p.chosen for p in pairs] + [p.rejected for p in pairs]
    batch = pack(seqs, pad_id)
    prompt_lengths = torch.tensor([p.prompt_lengths[0] for p in pairs]
                                  + [p.prompt_lengths[1] for p in pairs], dtype=torch.long)
    batch["response"] = from_position(batch, prompt_lengths)
    batch.update(margin=torch.tensor([p.margin or 0.0 for p in pairs], dtype=torch.float32),
                 prompt_lengths=prompt_lengths, weight=len(pairs))
    return batch


def collate_pairs(pairs: Sequence[EncodedPair], pad_id: int, packed: bool) -> dict:
    return collate_packed(pairs, pad_id) if packed else collate(pairs, pad_id)
