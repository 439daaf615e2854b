"""What a data builder reads: the checks of its file settings, and the held-out split.

Shared by the data builders of every task (preference pairs, SFT examples, prompts), so a source
(lib/data/sources.py) and `train_files` / `eval_files` / `eval_fraction` mean the same
everywhere.
"""

import pathlib
import random

from lib.config import ConfigError, resolve_path
from lib.data.encoding import POLICIES
from lib.data.sources import FILE_TYPES, is_dataset_spec


def source_problems(train_files, eval_files, eval_fraction):
    """[(parameter, message)] for the sources and the held-out split; resolves the paths but
    reads no data."""
    problems = []
    if not train_files or isinstance(train_files, str):
        problems.append(("train_files", "train_files must be a non-empty list of sources "
                         "(.jsonl, .parquet, a save_to_disk folder, hf:NAME:SPLIT), got "
                         f"{train_files!r}"))
    if isinstance(eval_files, str):
        problems.append(("eval_files", f"eval_files must be a list of sources, got "
                         f"{eval_files!r}"))
    if bool(eval_files) == bool(eval_fraction):
        problems.append(("eval_files", "give exactly one held-out source: eval_files "
                         f"(now {list(eval_files)!r}) or eval_fraction (now {eval_fraction})"))
    if not 0.0 <= eval_fraction < 1.0:
        problems.append(("eval_fraction", f"eval_fraction={eval_fraction} must be in [0, 1)"))
    for arg, files in (("train_files", train_files), ("eval_files", eval_files)):
        for f in ([] if isinstance(files, str) else files):
            try:
                resolved = resolve_source(f, arg[:-1].replace("_", " "))
            except ConfigError as e:
                problems.append((arg, str(e.problems[0].message)))
                continue
            path = pathlib.Path(resolved)
            if path.is_file() and path.suffix not in FILE_TYPES:
                problems.append((arg, f"{path}: unsupported file type {path.suffix!r}; use "
                                 f"{', '.join(FILE_TYPES)} files, a save_to_disk folder or "
                                 "hf:NAME:SPLIT"))
    return problems


def data_problems(train_files, eval_files, eval_fraction, max_length, overlength_policy):
    """[(parameter, message)] for a data config that cannot work; reads no data."""
    problems = []
    if max_length < 4:
        problems.append(("max_length", f"max_length={max_length} cannot hold BOS, a prompt "
                         "token, a response token and EOS"))
    if overlength_policy not in POLICIES:
        problems.append(("overlength_policy", f"overlength_policy={overlength_policy!r}; "
                         f"valid: {', '.join(POLICIES)}"))
    return source_problems(train_files, eval_files, eval_fraction) + problems


def resolve_source(source: str, what: str) -> str:
    """A source with its path resolved against the search roots; 'folder:split' keeps its
    split, and hf:NAME:SPLIT is left as it is."""
    if is_dataset_spec(source):
        return source
    try:
        return str(resolve_path(source, what))
    except ConfigError:
        head, sep, split = str(source).rpartition(":")
        if not (sep and head and split):
            raise
        try:
            folder = resolve_path(head, what)
        except ConfigError:
            raise ConfigError(f"{what} {source!r} not found (nor a folder {head!r} with a "
                              f"split {split!r})") from None
        if not folder.is_dir():
            raise ConfigError(f"{what} {source!r}: {folder} is not a save_to_disk folder")
        return f"{folder}:{split}"


def read_split(train_files, eval_files, eval_fraction, split_seed, read_fn):
    """(train rows, eval rows) read with read_fn(resolved source); with eval_fraction, the
    held-out rows are chosen by split_seed before tokenization, so the split does not move
    with max_length."""
    train = [r for f in train_files for r in read_fn(resolve_source(f, "train file"))]
    held = [r for f in eval_files for r in read_fn(resolve_source(f, "eval file"))]
    if eval_fraction:
        order = list(range(len(train)))
        random.Random(split_seed).shuffle(order)
        cut = set(order[:round(len(order) * eval_fraction)])
        held = [r for i, r in enumerate(train) if i in cut]
        train = [r for i, r in enumerate(train) if i not in cut]
    return train, held
