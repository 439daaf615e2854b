"""Reading rows from local data: JSONL, Parquet, and Hugging Face `datasets` datasets.

A source is one of:
- a `.jsonl` (or `.json` lines) or `.parquet` file;
- a folder written by `datasets.Dataset.save_to_disk` (a `DatasetDict` folder needs its split:
  `folder:train`);
- `hf:NAME:SPLIT`, a dataset already in the local Hugging Face cache (read offline; nothing is
  downloaded).
`columns` maps our field names to a source's own ({"prompt": "instruction"}); other columns
are ignored. A malformed row raises DataError naming the source and its 1-based row.

Preference pairs come in two forms:
- text: {"prompt": str, "chosen": str, "rejected": str}
- conversational: "chosen" and "rejected" as lists of messages
  {"role": "system" | "user" | "assistant", "content": str}, with the prompt either a list of
  messages, absent (HH style: the messages both conversations share are the prompt), or a
  string equal to the last shared user turn (UltraFeedback-binarized style).
Either form may carry "margin": a finite number that the Bradley-Terry loss subtracts from the
reward difference.
"""

import dataclasses
import json
import math
import pathlib
import re
from typing import Dict, List, Optional, Union

Messages = List[dict]
ROLES = ("system", "user", "assistant")


class DataError(ValueError):
    """A data file or row that cannot be used; the message names the file and row."""


@dataclasses.dataclass(frozen=True)
class PreferencePair:
    prompt: Union[str, Messages]
    chosen: Union[str, Messages]
    rejected: Union[str, Messages]
    margin: Optional[float]
    source: str  # "path:row", for error messages and counts

    @property
    def conversational(self) -> bool:
        return isinstance(self.chosen, list)


def read_pairs(source, columns: Optional[Dict[str, str]] = None) -> List[PreferencePair]:
    """Reads every row of a source (see the module doc) into PreferencePairs."""
    return [_to_pair(row, where) for row, where in read_rows(source, columns)]


HF_PREFIX = "hf:"


def is_dataset_spec(source: str) -> bool:
    """Whether `source` names a cached Hugging Face dataset rather than a path."""
    return str(source).startswith(HF_PREFIX)


FILE_TYPES = (".jsonl", ".json", ".parquet")  # the files read_rows reads


def read_rows(source, columns: Optional[Dict[str, str]] = None):
    """[(row as a dict with our field names, "source:row")] of a source; DataError if empty."""
    text = str(source)
    if is_dataset_spec(text):
        rows = _cached_dataset_rows(text)
    else:
        path, split = _split_spec(pathlib.Path(text))
        if path.is_dir():
            rows = _saved_dataset_rows(path, split)
        elif path.suffix in (".jsonl", ".json"):
            rows = _jsonl_rows(path)
        elif path.suffix == ".parquet":
            rows = _parquet_rows(path)
        else:
            raise DataError(f"{path}: unsupported file type {path.suffix!r}; use .jsonl, "
                            ".parquet, a datasets save_to_disk folder, or hf:NAME:SPLIT")
    out = [(_rename_columns(row, columns, f"{text}:{n}"), f"{text}:{n}") for n, row in rows]
    if not out:
        raise DataError(f"{text}: no rows")
    return out


def _split_spec(path: pathlib.Path):
    """(folder, split) for 'folder:split' naming a DatasetDict split, else (path, None)."""
    if not path.exists() and ":" in path.name:
        folder, split = str(path).rsplit(":", 1)
        if pathlib.Path(folder).is_dir():
            return pathlib.Path(folder), split
    return path, None


def _rename_columns(row, columns, where):
    if not columns or not isinstance(row, dict):
        return row
    missing = [theirs for theirs in columns.values() if theirs not in row]
    if missing:
        raise DataError(f"{where}: no column {missing[0]!r} (mapped by columns={columns}); "
                        f"the row has {', '.join(sorted(row))}")
    renamed = {k: v for k, v in row.items() if k not in columns.values()}
    renamed.update({ours: row[theirs] for ours, theirs in columns.items()})
    return renamed


def _saved_dataset_rows(path: pathlib.Path, split: Optional[str]):
    import datasets

    try:
        data = datasets.load_from_disk(str(path))
    except Exception as e:
        raise DataError(f"{path}: not a folder written by datasets' save_to_disk ({e})") from e
    if isinstance(data, datasets.DatasetDict):
        if split not in data:
            raise DataError(f"{path} holds the splits {', '.join(data)}; name one as "
                            f"'{path}:{next(iter(data))}'")
        data = data[split]
    yield from enumerate(data, start=1)


def _cached_dataset_rows(spec: str):
    import os

    parts = spec[len(HF_PREFIX):].rsplit(":", 1)
    if len(parts) != 2 or not all(parts):
        raise DataError(f"{spec}: write a cached Hugging Face dataset as hf:NAME:SPLIT, e.g. "
                        "hf:trl-lib/ultrafeedback_binarized:train")
    os.environ["HF_DATASETS_OFFLINE"] = os.environ["HF_HUB_OFFLINE"] = "1"
    import datasets
    import huggingface_hub.constants

    # Nothing is downloaded at run time; the flags are also read at import, which may have
    # happened before this call.
    datasets.config.HF_DATASETS_OFFLINE = datasets.config.HF_HUB_OFFLINE = True
    huggingface_hub.constants.HF_HUB_OFFLINE = True

    try:
        data = datasets.load_dataset(parts[0], split=parts[1])
    except Exception as e:
        raise DataError(f"{spec}: not in the local Hugging Face cache, or no split "
                        f"{parts[1]!r} ({type(e).__name__}: {e}); datasets are read offline: "
                        "download it once with datasets.load_dataset on a machine with "
                        "network, or save_to_disk and give the folder") from e
    yield from enumerate(data, start=1)


def _jsonl_rows(path):
    with open(path, "rb") as f:
        for n, raw in enumerate(f, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise DataError(f"{path}:{n}: not valid UTF-8 (byte 0x{raw[e.start]:02x} at "
                                f"column {e.start + 1}); save the file as UTF-8") from None
            if not line.strip():
                continue
            if n == 1 and line.startswith("\ufeff"):
                raise DataError(f"{path}:1: starts with a byte order mark (BOM); save the file "
                                "as UTF-8 without BOM")
            line = line.rstrip("\r\n")
            try:
                row = json.loads(line)
            except json.JSONDecodeError as e:
                hint = (f" (a {path.suffix} file is read as JSON Lines: one object per line)"
                        if n == 1 and line.strip() in ("[", "{") else "")
                raise DataError(f"{path}:{n}: not valid JSON ({e.msg} at column "
                                f"{e.colno}){hint}") from None
            except RecursionError:
                raise DataError(f"{path}:{n}: nested too deeply to read") from None
            if _LONE_SURROGATE.search(raw) and _has_lone_surrogate(row):
                raise DataError(f"{path}:{n}: a string holds a lone UTF-16 surrogate escape "
                                "(\\ud800-\\udfff without its pair), which is no character; "
                                "fix the row") from None
            yield n, row


_LONE_SURROGATE = re.compile(rb"\\u[dD][89a-fA-F]")  # where one may be: a cheap pre-check


def _has_lone_surrogate(value) -> bool:
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            return True
        return False
    if isinstance(value, dict):
        return any(_has_lone_surrogate(k) or _has_lone_surrogate(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_lone_surrogate(v) for v in value)
    return False


def _parquet_rows(path):
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(path)
    except Exception as e:
        raise DataError(f"{path}: cannot read as Parquet ({e})") from e
    for n, row in enumerate(table.to_pylist(), start=1):
        yield n, row


def _to_pair(row, where) -> PreferencePair:
    if not isinstance(row, dict):
        raise DataError(f"{where}: expected an object with prompt/chosen/rejected, "
                        f"got {type(row).__name__}")
    for key in ("chosen", "rejected"):
        if key not in row or row[key] is None:
            raise DataError(f"{where}: missing {key!r}; every row needs 'chosen' and 'rejected'")
    chosen, rejected, prompt = row["chosen"], row["rejected"], row.get("prompt")
    if isinstance(chosen, str) and isinstance(rejected, str):
        if not isinstance(prompt, str):
            raise DataError(f"{where}: text rows need 'prompt' as a string, got "
                            f"{type(prompt).__name__}")
    elif isinstance(chosen, list) and isinstance(rejected, list):
        for key, msgs in (("chosen", chosen), ("rejected", rejected)):
            check_messages(msgs, f"{where}: {key!r}")
        if not chosen or not rejected:
            raise DataError(f"{where}: 'chosen' and 'rejected' need at least one message")
        if prompt is None or isinstance(prompt, str):
            prompt, chosen, rejected = _split_shared_prompt(prompt, chosen, rejected, where)
        check_messages(prompt, f"{where}: 'prompt'")
    else:
        raise DataError(f"{where}: 'chosen' and 'rejected' must both be strings (text form) or "
                        f"both be lists of {{role, content}} messages (conversational form); got "
                        f"{type(chosen).__name__} and {type(rejected).__name__}")
    return PreferencePair(prompt, chosen, rejected, _margin(row.get("margin"), where), where)


def _split_shared_prompt(prompt, chosen, rejected, where):
    """(prompt messages, chosen reply, rejected reply) when the conversations carry the prompt.

    The messages both conversations share are the prompt (HH style). A string prompt
    (UltraFeedback-binarized style) must be the content of the last shared user turn.
    """
    shared = 0
    while (shared < min(len(chosen), len(rejected)) - 1
           and chosen[shared] == rejected[shared]):
        shared += 1
    if prompt is None:
        return chosen[:shared], chosen[shared:], rejected[shared:]
    users = [i for i in range(shared) if chosen[i]["role"] == "user"]
    if not users:
        raise DataError(f"{where}: 'prompt' is a string but the conversations share no user "
                        "turn to match it; give 'prompt' as a list of messages, or put the "
                        "user turn in both conversations")
    last = users[-1]
    if chosen[last]["content"].strip() != prompt.strip():
        raise DataError(f"{where}: 'prompt' differs from the conversations' user turn "
                        f"(message {last}): {prompt[:60]!r} vs "
                        f"{chosen[last]['content'][:60]!r}; they must be the same text")
    return chosen[:shared], chosen[shared:], rejected[shared:]


def check_messages(msgs, where):
    if not isinstance(msgs, list):
        raise DataError(f"{where} must be a list of messages, got {type(msgs).__name__}")
    for i, m in enumerate(msgs):
        if not isinstance(m, dict) or set(m) - {"role", "content"} or "role" not in m:
            raise DataError(f"{where}[{i}] must be {{'role': ..., 'content': ...}}, got {m!r}")
        if m["role"] not in ROLES:
            raise DataError(f"{where}[{i}] has role {m['role']!r}; valid roles: {', '.join(ROLES)}")
        if not isinstance(m.get("content"), str):
            raise DataError(f"{where}[{i}] content must be a string")


def _margin(value, where) -> Optional[float]:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise DataError(f"{where}: 'margin' must be a finite number, got {value!r}")
    return float(value)


def kind_of(value) -> str:
    """How a JSON value is named in a message: 'null', 'a list', 'an object', 'true'."""
    if value is None or isinstance(value, bool):
        return json.dumps(value)
    return {list: "a list", dict: "an object"}.get(type(value), type(value).__name__)
