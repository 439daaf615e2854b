"""The configurable entry point for preference data: sources -> tokenized train and eval sets."""

import dataclasses
from typing import Dict, List, Optional, Sequence

from lib.config import ConfigError
from lib.config.registry import configurable
from lib.data.encoding import EMPTY_POLICIES, EncodedPair, EncodingStats, encode_pairs
from lib.data.files import data_problems, read_split
from lib.data.sources import read_pairs
from lib.data.tokenizer import Tokenizer


@dataclasses.dataclass
class PreferenceData:
    train: List[EncodedPair]
    eval: List[EncodedPair]
    train_stats: EncodingStats
    eval_stats: EncodingStats

    def stats(self) -> dict:
        return {**self.train_stats.as_dict("data/train"), **self.eval_stats.as_dict("data/eval")}


def _check(view):
    problems = data_problems(*(view.get("build_preference_data", a) for a in (
        "train_files", "eval_files", "eval_fraction", "max_length", "overlength_policy")))
    empty = view.get("build_preference_data", "empty_policy")
    if empty not in EMPTY_POLICIES:
        problems.append(("empty_policy", f"empty_policy={empty!r}; valid: "
                         f"{', '.join(EMPTY_POLICIES)}"))
    return problems


@configurable(caller_args=("tokenizer",), check=_check, resume_sensitive=("*",))
def build_preference_data(
    tokenizer: Tokenizer,
    train_files: Sequence[str] = (),
    eval_files: Sequence[str] = (),
    eval_fraction: float = 0.0,
    split_seed: int = 0,
    max_length: int = 512,
    overlength_policy: str = "truncate",
    columns: Optional[Dict[str, str]] = None,
    empty_policy: str = "drop",
) -> PreferenceData:
    """Reads, validates and tokenizes preference pairs.

    Args:
      tokenizer: passed by the Trainer (from its tokenizer_fn).
      train_files: sources read in order: .jsonl or .parquet files, datasets save_to_disk
        folders ('folder:split' for a DatasetDict), or 'hf:NAME:SPLIT' from the local HF
        cache; relative paths resolve against the search roots (the repository root by
        default). Row forms: lib/data/sources.py.
      eval_files: held-out sources. Give these or eval_fraction: exactly one.
      eval_fraction: the fraction (0 <= f < 1) of train rows held out for eval instead, chosen by
        split_seed before tokenization, so the split does not move with max_length.
      split_seed: seeds the eval_fraction split only; the training order uses Trainer.seed.
      max_length: the most tokens in one side of a pair (prompt + response, BOS and EOS included).
      overlength_policy: "truncate", "drop" or "error" for a side longer than max_length (see
        lib/data/encoding.py); counts are logged as data/train/* and data/eval/*.
      columns: {our field: the source's column}, e.g. {"chosen": "preferred"}; None reads
        prompt/chosen/rejected/margin as they are.
      empty_policy: "drop" (count as data/*/dropped_empty and drop) or "error" for a pair with
        an empty chosen or rejected reply.
    """
    problems = data_problems(train_files, eval_files, eval_fraction, max_length,
                             overlength_policy)
    if problems:
        raise ConfigError("; ".join(f"build_preference_data.{m}" for _, m in problems))
    train_rows, eval_rows = read_split(train_files, eval_files, eval_fraction, split_seed,
                                       lambda source: read_pairs(source, columns))
    train, train_stats = encode_pairs(train_rows, tokenizer, max_length, overlength_policy,
                                      empty_policy)
    held_out, eval_stats = encode_pairs(eval_rows, tokenizer, max_length, overlength_policy,
                                        empty_policy)
    return PreferenceData(train, held_out, train_stats, eval_stats)
