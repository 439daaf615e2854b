"""Reading preference pairs from local JSONL and Parquet files.

Two row forms are accepted (other columns are ignored):
- text: {"prompt": str, "chosen": str, "rejected": str}
- conversational: {"prompt": [messages] (optional), "chosen": [messages], "rejected": [messages]},
  each message {"role": "system" | "user" | "assistant", "content": str}.
Either form may carry "margin": a finite number that the Bradley-Terry loss subtracts from the
reward difference. A malformed row raises DataError naming the file and its 1-based row.
"""

import dataclasses
import json
import math
import pathlib
from typing import List, Optional, Union

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


def read_pairs(path: pathlib.Path) -> List[PreferencePair]:
    """Reads every row of a .jsonl or .parquet file into PreferencePairs."""
    path = pathlib.Path(path)
    if path.suffix in (".jsonl", ".json"):
        rows = _jsonl_rows(path)
    elif path.suffix == ".parquet":
        rows = _parquet_rows(path)
    else:
        raise DataError(f"{path}: unsupported file type {path.suffix!r}; use .jsonl or .parquet")
    pairs = [_to_pair(row, f"{path}:{n}") for n, row in rows]
    if not pairs:
        raise DataError(f"{path}: no rows")
    return pairs


def _jsonl_rows(path):
    with open(path, encoding="utf-8") as f:
        for n, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                yield n, json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{path}:{n}: not valid JSON ({e.msg} at column {e.colno})") from e


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
        prompt = [] if prompt is None else prompt
        for key, msgs in (("prompt", prompt), ("chosen", chosen), ("rejected", rejected)):
            _check_messages(msgs, f"{where}: {key!r}")
        if not chosen or not rejected:
            raise DataError(f"{where}: 'chosen' and 'rejected' need at least one message")
    else:
        raise DataError(f"{where}: 'chosen' and 'rejected' must both be strings (text form) or "
                        f"both be lists of {{role, content}} messages (conversational form); got "
                        f"{type(chosen).__name__} and {type(rejected).__name__}")
    return PreferencePair(prompt, chosen, rejected, _margin(row.get("margin"), where), where)


def _check_messages(msgs, where):
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
