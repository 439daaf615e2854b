"""The configurable entry point for preference data: files -> tokenized train and eval sets."""

import dataclasses
import random
from typing import List, Sequence

from lib.config import ConfigError, resolve_path
from lib.config.registry import configurable
from lib.data.encoding import POLICIES, EncodedPair, EncodingStats, encode_pairs
from lib.data.tokenizer import Tokenizer
from lib.data.sources import read_pairs


@dataclasses.dataclass
class PreferenceData:
    train: List[EncodedPair]
    eval: List[EncodedPair]
    train_stats: EncodingStats
    eval_stats: EncodingStats

    def stats(self) -> dict:
        return {**self.train_stats.as_dict("data/train"), **self.eval_stats.as_dict("data/eval")}


def data_problems(train_files, eval_files, eval_fraction, max_length, overlength_policy):
    """[(parameter, message)] for a data config that cannot work; reads no data."""
    problems = []
    if not train_files or isinstance(train_files, str):
        problems.append(("train_files", "train_files must be a non-empty list of .jsonl or "
                         f".parquet paths, got {train_files!r}"))
    if isinstance(eval_files, str):
        problems.append(("eval_files", f"eval_files must be a list of paths, got {eval_files!r}"))
    if bool(eval_files) == bool(eval_fraction):
        problems.append(("eval_files", "give exactly one held-out source: eval_files "
                         f"(now {list(eval_files)!r}) or eval_fraction (now {eval_fraction})"))
    if not 0.0 <= eval_fraction < 1.0:
        problems.append(("eval_fraction", f"eval_fraction={eval_fraction} must be in [0, 1)"))
    if max_length < 4:
        problems.append(("max_length", f"max_length={max_length} cannot hold BOS, a prompt "
                         "token, a response token and EOS"))
    if overlength_policy not in POLICIES:
        problems.append(("overlength_policy", f"overlength_policy={overlength_policy!r}; "
                         f"valid: {', '.join(POLICIES)}"))
    for arg, files in (("train_files", train_files), ("eval_files", eval_files)):
        for f in ([] if isinstance(files, str) else files):
            try:
                resolve_path(f, arg[:-1].replace("_", " "))
            except ConfigError as e:
                problems.append((arg, str(e.problems[0].message)))
    return problems


def _check(view):
    return data_problems(*(view.get("build_preference_data", a) for a in (
        "train_files", "eval_files", "eval_fraction", "max_length", "overlength_policy")))


@configurable(caller_args=("tokenizer",), check=_check, resume_sensitive=("*",))
def build_preference_data(
    tokenizer: Tokenizer,
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
      eval_files: held-out files. Give these or eval_fraction: exactly one.
      eval_fraction: the fraction (0 <= f < 1) of train rows held out for eval instead, chosen by
        split_seed before tokenization, so the split does not move with max_length.
      split_seed: seeds the eval_fraction split only; the training order uses Trainer.seed.
      max_length: the most tokens in one side of a pair (prompt + response, BOS and EOS included).
      overlength_policy: "truncate", "drop" or "error" for a side longer than max_length (see
        lib/data/encoding.py); counts are logged as data/train/* and data/eval/*.
    """
    problems = data_problems(train_files, eval_files, eval_fraction, max_length,
                             overlength_policy)
    if problems:
        raise ConfigError("; ".join(f"build_preference_data.{m}" for _, m in problems))
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
