"""Reading finished runs back: their configs, metrics and provenance, for tables and diffs.

A run directory holds `operative_config.gin` and `metrics.jsonl` (and `run_info.json`); a
checkpoint directory holds `operative_config.gin`. The same records can be read from W&B:
offline run folders (`wandb/offline-run-*`) or the W&B API, through the flat config keys the
launcher logs (`build_adamw/lr`, `lr`, ...).
"""

import csv
import dataclasses
import difflib
import io
import json
import math
import pathlib
import struct
import tokenize
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

from gin import config_parser

from lib.config.sources import _Delegate
from lib.config.values import Macro

CONFIG_FILE = "operative_config.gin"
# Which direction is better, for "best" columns.
HIGHER_IS_BETTER = ("accuracy", "margin", "tokens_per_s")


@dataclasses.dataclass
class RunRecord:
    name: str
    path: str
    config: Dict[str, Any]  # 'lr', 'Trainer.num_steps', ...: macros, and literal parameters
    provenance: Dict[str, str]
    final: Dict[str, float]  # the last value of each metric
    best: Dict[str, float]  # the best value of each metric over the run
    steps: int


def read_config(text: str, source: str = "the config") -> Tuple[Dict[str, Any],
                                                                  Dict[str, str]]:
    """({key: value}, {key: provenance}) of a saved config. Parameters bound to a %macro are
    represented by the macro's key (e.g. `lr`), so a value appears once. A text gin cannot
    parse raises ValueError naming `source`."""
    try:
        return _read_config(text)
    except (SyntaxError, tokenize.TokenError, ValueError) as e:
        raise ValueError(f"{source}: not a saved gin config ({type(e).__name__}: "
                         f"{e.args[0] if e.args else e})") from None


def _read_config(text: str):
    values, where = {}, {}
    for st in config_parser.ConfigParser(text, _Delegate()):
        if not isinstance(st, config_parser.BindingStatement) or isinstance(st.value, Macro):
            continue
        lhs = f"{st.scope}/{st.selector}" if st.scope else st.selector
        key = f"{lhs}.{st.arg_name}" if st.arg_name else lhs
        values[key] = st.value
        line = st.location.line_content or ""
        where[key] = line.split("  # ", 1)[1].strip() if "  # " in line else ""
    return values, where


def is_run_dir(path: pathlib.Path) -> bool:
    return (path / CONFIG_FILE).is_file() and (path / "metrics.jsonl").is_file()


def find_runs(paths: Iterable[str]) -> List[pathlib.Path]:
    """Run directories among `paths`, or directly inside them, sorted by name."""
    found = []
    for p in map(pathlib.Path, paths):
        if is_run_dir(p):
            found.append(p)
        elif p.is_dir():
            found += sorted(c for c in p.iterdir() if c.is_dir() and is_run_dir(c))
        else:
            raise FileNotFoundError(f"{p}: not a run directory (no {CONFIG_FILE} and "
                                    "metrics.jsonl) nor a folder of them")
    return found


def read_text(path: pathlib.Path) -> str:
    """The file's text; ValueError naming it if it is not UTF-8."""
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as e:
        raise ValueError(f"{path}: not valid UTF-8 (byte 0x{e.object[e.start]:02x} at offset "
                         f"{e.start})") from None


def read_metrics(path: pathlib.Path) -> List[dict]:
    """The records of a metrics.jsonl. A cut-off last line (a run killed while writing it) is
    left out; a bad line before it raises ValueError naming the file and line."""
    lines = read_text(path).splitlines()
    records = []
    for n, line in enumerate(lines, start=1):
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            if n == len(lines):
                break
            raise ValueError(f"{path}:{n}: not valid JSON ({e.msg})") from None
        if not isinstance(record, dict) or not isinstance(record.get("step"), int):
            raise ValueError(f"{path}:{n}: not a metrics record (an object with a step)")
        records.append(record)
    return records


def from_run_dir(path: pathlib.Path) -> RunRecord:
    config, provenance = read_config(read_text(path / CONFIG_FILE), str(path / CONFIG_FILE))
    history = read_metrics(path / "metrics.jsonl")
    final, best = _summaries(history)
    steps = max((r["step"] for r in history), default=0)
    return RunRecord(path.name, str(path), config, provenance, final, best, steps)


def find_wandb_offline(paths: Iterable[str]) -> List[pathlib.Path]:
    """The offline W&B run folders given, or found under the folders given (a run folder's
    wandb/offline-run-*); FileNotFoundError naming the paths when there are none."""
    found = []
    for p in map(pathlib.Path, paths):
        if p.name.startswith("offline-run-") and p.is_dir():
            found.append(p)
        else:
            found += sorted(d for d in p.rglob("offline-run-*") if d.is_dir())
    if not found:
        raise FileNotFoundError(
            f"no offline W&B run folder (offline-run-*/ holding a run-*.wandb file) in "
            f"{', '.join(map(str, paths))}; give run folders recorded with WANDB_MODE=offline, "
            "or leave out --wandb_offline to read the run folders themselves")
    return found


def from_wandb_offline(run_dir: pathlib.Path) -> RunRecord:
    """A RunRecord from an offline W&B run folder (`wandb/offline-run-*`)."""
    from wandb.proto import wandb_internal_pb2 as pb

    record_files = sorted(run_dir.glob("run-*.wandb"))
    if len(record_files) != 1:
        raise FileNotFoundError(f"{run_dir}: expected one run-*.wandb record file, found "
                                f"{len(record_files)}")
    (record_file,) = record_files
    config, history, name = {}, [], run_dir.name
    for data in _wandb_records(record_file):
        record = pb.Record()
        record.ParseFromString(data)
        kind = record.WhichOneof("record_type")
        if kind == "run":
            name = record.run.display_name or record.run.run_id
            config.update(_items(record.run.config.update))
        elif kind == "config":
            config.update(_items(record.config.update))
        elif kind == "history":
            row = _items(record.history.item)
            row["step"] = row.pop("_step", record.history.step.num)
            history.append(row)
    final, best = _summaries(history)
    steps = max((r["step"] for r in history), default=0)
    return RunRecord(name, str(run_dir), _from_flat(config), {}, final, best, steps)


def from_wandb_api(path: str) -> List[RunRecord]:
    """RunRecords of a W&B project ('entity/project'), online, through wandb.Api."""
    import wandb

    records = []
    for run in wandb.Api().runs(path):
        config = _from_flat(run.config)
        history = [dict(r, step=r.get("_step", 0)) for r in run.scan_history()]
        final, best = _summaries(history)
        records.append(RunRecord(run.name, run.url, config, {}, final, best,
                                 max((r["step"] for r in history), default=0)))
    return records


def table(records: Sequence[RunRecord], metrics: Sequence[str],
          where: Sequence[Tuple[str, Any]] = (), sort: Optional[str] = None):
    """(header, rows): one row per run; columns are the run, the config keys whose values
    differ between the runs, then final/best of each metric."""
    for key, _ in where:
        if records and not any(key in r.config for r in records):
            close = difflib.get_close_matches(key, sorted({k for r in records for k in r.config}))
            raise ValueError(f"--where {key}=...: no run's config has {key}"
                             + (f"; did you mean {', '.join(close)}?" if close else ""))
    records = [r for r in records if all(r.config.get(k) == v for k, v in where)]
    keys = sorted({k for r in records for k in r.config})
    differing = [k for k in keys if len({repr(r.config.get(k)) for r in records}) > 1]
    header = ["run", *differing, "steps"]
    for m in metrics:
        header += [f"final {m}", f"best {m}"]
    rows = []
    for r in records:
        row = [r.name, *(r.config.get(k) for k in differing), r.steps]
        for m in metrics:
            row += [r.final.get(m), r.best.get(m)]
        rows.append(row)
    if sort:
        descending = sort.startswith("-")
        column = sort.lstrip("-")
        if column not in header and f"final {column}" not in header:
            raise ValueError(f"--sort={sort}: no such column; sort by one of "
                             f"{', '.join(c for c in header if not c.startswith('best '))}")
        index = header.index(column if column in header else f"final {column}")
        present = sorted((row for row in rows if row[index] is not None),
                         key=lambda row: row[index], reverse=descending)
        rows = present + [row for row in rows if row[index] is None]
    return header, rows


def format_table(header, rows) -> str:
    cells = [header] + [[_cell(v) for v in row] for row in rows]
    widths = [max(len(str(row[i])) for row in cells) for i in range(len(header))]
    lines = ["  ".join(str(v).ljust(w) for v, w in zip(row, widths)).rstrip() for row in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def to_csv(header, rows) -> str:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow(header)
    writer.writerows([[("" if v is None else v) for v in row] for row in rows])
    return out.getvalue()


def _summaries(history):
    final, best = {}, {}
    for row in sorted(history, key=lambda r: r["step"]):
        for k, v in row.items():
            if k in ("step", "time") or not isinstance(v, (int, float)) or isinstance(v, bool):
                continue
            if isinstance(v, float) and math.isnan(v):
                continue
            final[k] = v
            higher = any(k.endswith(h) for h in HIGHER_IS_BETTER)
            best[k] = v if k not in best else (max if higher else min)(best[k], v)
    return final, best


def _cell(v):
    if isinstance(v, float):
        return f"{v:.4g}"
    return "" if v is None else v


def _items(items) -> Dict[str, Any]:
    return {i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in items}


def _from_flat(flat: Dict[str, Any]) -> Dict[str, Any]:
    """The launcher's flat W&B config back in gin names, without the parameters that only
    name a macro (the macro's own key holds the value), as read_config does."""
    return {_gin_key(k): v for k, v in flat.items()
            if not k.startswith("_") and not (isinstance(v, str) and v.startswith("%"))}


def _gin_key(flat_key: str) -> str:
    """'build_adamw/lr' (the flat W&B key) -> 'build_adamw.lr'; a macro key stays."""
    parts = flat_key.split("/")
    return flat_key if len(parts) == 1 else "/".join(parts[:-2] + [".".join(parts[-2:])])


def _wandb_records(path: pathlib.Path):
    """The raw records of a .wandb file: W&B's LevelDB-style log (a 7-byte header, then
    32 KiB blocks of records, each with a CRC32, a length and a FULL/FIRST/MIDDLE/LAST type)."""
    data = path.read_bytes()
    if data[:4] != b":W&B":
        raise ValueError(f"{path}: not a W&B record file")
    block, pos, pending = 32768, 7, b""
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # the tail of a block too small for a header is padding
            pos += block - pos % block
            continue
        _, length, kind = struct.unpack("<IHB", data[pos:pos + 7])
        chunk, pos = data[pos + 7:pos + 7 + length], pos + 7 + length
        if kind == 1:
            yield chunk
        elif kind == 2:
            pending = chunk
        elif kind == 3:
            pending += chunk
        elif kind == 4:
            yield pending + chunk
        elif kind == 0 and length == 0:
            pos += block - pos % block  # zero padding to the end of the block
