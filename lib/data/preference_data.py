"""The configurable entry point for preference data: files -> tokenized train and eval sets."""

import dataclasses
import random
from typing import List, Sequence

import gin

from lib.config import resolve_path
from lib.data.encoding import EncodedPair, EncodingStats, encode_pairs
from lib.data.sources import read_pairs


@dataclasses.dataclass
class PreferenceData:
    train: List[EncodedPair]
    eval: List[EncodedPair]
    train_stats: EncodingStats
    eval_stats: EncodingStats

    def stats(self) -> dict:
        return {**self.train_stats.as_dict("data/train"), **self.eval_stats.as_dict("data/eval")}


@gin.configurable
def build_preference_data(
    tokenizer,
    train_files: Sequence[str] = (),
    eval_files: Sequence[str] = (),
    eval_fraction: float = 0.0,
    split_seed: int = 0,
    max_length: int = 512,
    overlength_policy: str = "truncate",
) -> PreferenceData:
    """Reads, validates and tokenizes preference pairs.

    Args:
      tokenizer: passed by the Trainer (from its tokenizer_fn).
      train_files: .jsonl or .parquet files, read in order; relative paths resolve against the
        search roots (the repository root by default).
      eval_files: held-out files. Give these, or eval_fraction, not both.
      eval_fraction: the fraction (0 <= f < 1) of train rows held out for eval instead, chosen by
        split_seed before tokenization, so the split does not move with max_length.
      split_seed: seeds the eval_fraction split only; the training order uses Trainer.seed.
      max_length: the most tokens in one side of a pair (prompt + response, BOS and EOS included).
      overlength_policy: "truncate", "drop" or "error" for a side longer than max_length (see
        lib/data/encoding.py); counts are logged as data/train/* and data/eval/*.
    """
    if not train_files:
        raise ValueError("build_preference_data.train_files is empty; give at least one file")
    if eval_files and eval_fraction:
        raise ValueError("give either build_preference_data.eval_files or eval_fraction, "
                         "not both")
    if not 0.0 <= eval_fraction < 1.0:
        raise ValueError(f"eval_fraction={eval_fraction} must be in [0, 1)")
    train_rows = [p for f in train_files for p in read_pairs(resolve_path(f, "train file"))]
    eval_rows = [p for f in eval_files for p in read_pairs(resolve_path(f, "eval file"))]
    if eval_fraction:
        order = list(range(len(train_rows)))
        random.Random(split_seed).shuffle(order)
        cut = round(len(order) * eval_fraction)
        held = set(order[:cut])
        eval_rows = [p for i, p in enumerate(train_rows) if i in held]
        train_rows = [p for i, p in enumerate(train_rows) if i not in held]
    train, train_stats = encode_pairs(train_rows, tokenizer, max_length, overlength_policy)
    held_out, eval_stats = encode_pairs(eval_rows, tokenizer, max_length, overlength_policy)
    return PreferenceData(train, held_out, train_stats, eval_stats)
