"""Padding-free batches: several sequences share a row, and each sees only itself.

A micro-batch's sequences are placed into rows by first-fit decreasing, each row as long as the
micro-batch's longest sequence, so a row holds one long sequence or several short ones and
padding is left only at the rows' ends. `segments[r, t]` says which sequence position t of row
r belongs to (-1 for padding) and `positions[r, t]` is t's position inside its own sequence, so
rotary embeddings restart at every sequence. The model attends through a block-causal mask made
from `segments` (`block_causal_mask`): a token sees the earlier tokens of its own sequence and
nothing else, so each sequence's outputs equal those of a padded batch (to float summation
order). A pair's two sides are always in the same micro-batch, hence in the same packed batch.

Measured on CPU (benchmarks/packing.py): with the mask given as an additive float mask, SDPA
costs about what the causal kernel does per row, so the gain is the padding removed (1.3x to
1.5x the tokens/s of padded batches for the reward benchmark, 1.5x for SFT). On a GPU a dense
mask takes SDPA off its flash kernel, so the shipped GPU configs leave packing off until
measured there.
"""

from typing import List, Sequence

import torch


def place(lengths: Sequence[int]) -> tuple:
    """(row of each sequence, its offset in the row, the row length, the number of rows): first
    fit, longest first, into rows as long as the longest sequence."""
    row_length = max(lengths)
    order = sorted(range(len(lengths)), key=lambda i: (-lengths[i], i))
    free: List[int] = []
    rows, offsets = [0] * len(lengths), [0] * len(lengths)
    for i in order:
        for r, room in enumerate(free):
            if lengths[i] <= room:
                break
        else:
            r = len(free)
            free.append(row_length)
        rows[i], offsets[i] = r, row_length - free[r]
        free[r] -= lengths[i]
    return rows, offsets, row_length, len(free)


def pack(seqs: Sequence[Sequence[int]], pad_id: int) -> dict:
    """Packs token sequences; returns tokens, segments and positions [rows, row length], and for
    each sequence i (in the given order): `starts[i]` and `ends[i]`, the flat indices (row *
    row length + offset) of its first and last token."""
    lengths = [len(s) for s in seqs]
    rows, offsets, row_length, num_rows = place(lengths)
    tokens = torch.full((num_rows, row_length), pad_id, dtype=torch.long)
    segments = torch.full((num_rows, row_length), -1, dtype=torch.long)
    positions = torch.zeros((num_rows, row_length), dtype=torch.long)
    for i, (s, r, o) in enumerate(zip(seqs, rows, offsets)):
        tokens[r, o:o + len(s)] = torch.as_tensor(s, dtype=torch.long)
        segments[r, o:o + len(s)] = i
        positions[r, o:o + len(s)] = torch.arange(len(s))
    starts = torch.tensor([r * row_length + o for r, o in zip(rows, offsets)], dtype=torch.long)
    return {"tokens": tokens, "segments": segments, "positions": positions, "starts": starts,
            "ends": starts + torch.tensor(lengths, dtype=torch.long) - 1,
            "num_tokens": sum(lengths), "computed_tokens": num_rows * row_length}


def from_position(batch: dict, starts: torch.Tensor) -> torch.Tensor:
    """[rows, s] bool: True at sequence i's tokens from its position starts[i] on (its response
    after a prompt of starts[i] tokens, say)."""
    segments = batch["segments"]
    return (segments >= 0) & (batch["positions"] >= starts[segments.clamp(min=0)])


def block_causal_mask(segments: torch.Tensor) -> torch.Tensor:
    """[rows, s, s] bool, True where query t may attend to key u: same sequence and u <= t.
    A padding position attends to itself only, which keeps its softmax finite; nothing reads
    its output."""
    s = segments.shape[1]
    causal = torch.ones(s, s, dtype=torch.bool, device=segments.device).tril()
    same = segments[:, :, None] == segments[:, None, :]
    eye = torch.eye(s, dtype=torch.bool, device=segments.device)
    return (same & causal & (segments >= 0)[:, :, None]) | eye


def packed_forward(model, batch: dict, device) -> torch.Tensor:
    """The model's output [rows, s, ...] on a packed batch's rows.

    The mask goes in as an additive float mask (0 or -inf) in the dtype attention computes in
    (`model.compute_dtype`, set by lib/parallel.py; float32 otherwise): SDPA on a CPU converts
    a boolean mask at every layer, forward and backward: about 12% more attention time here.
    """
    segments = batch["segments"].to(device, non_blocking=True)
    allowed = block_causal_mask(segments)
    mask = torch.zeros(allowed.shape, dtype=getattr(model, "compute_dtype", torch.float32),
                       device=allowed.device).masked_fill_(~allowed, float("-inf"))
    return model(batch["tokens"].to(device, non_blocking=True), mask=mask,
                 input_pos=batch["positions"].to(device, non_blocking=True))


def forward(model, batch: dict, device) -> torch.Tensor:
    """The model's output on a batch's rows, packed (packed_forward) or right-padded (the
    causal mask alone keeps padding out of every real position)."""
    if "segments" in batch:
        return packed_forward(model, batch, device)
    return model(batch["tokens"].to(device, non_blocking=True))


def per_sequence_sum(values: torch.Tensor, segments: torch.Tensor, num_seqs: int):
    """[num_seqs]: the sum of `values` [rows, s] over each sequence's positions."""
    flat, seg = values.reshape(-1), segments.reshape(-1)
    keep = seg >= 0
    out = torch.zeros(num_seqs, dtype=values.dtype, device=values.device)
    return out.index_add(0, seg[keep], flat[keep])
