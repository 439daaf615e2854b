"""Prompts with reference fields, for tasks that generate their own completions (GRPO).

Rows come from the sources of lib/data/sources.py (same `columns` mapping). A row's prompt is
`template` filled from the row's fields (`str.format` placeholders, e.g. "Question: {question}
Answer:"); every other field (e.g. `answer`) is kept for the reward functions. A template's
placeholders are checked at config time against the first row of each local .jsonl source, and
every row is checked when read, before any model is built: a missing field names its file and
row. Prompts longer than `max_prompt_length` tokens lose their oldest tokens after BOS (left
truncation: the end of a prompt, where the question usually is, is kept) and are counted.
"""

import dataclasses
import json
import string
from typing import Dict, List, Optional, Sequence

from lib.config import ConfigError
from lib.config.registry import configurable
from lib.data.files import read_split, resolve_source, source_problems
from lib.data.sources import DataError, kind_of, read_rows
from lib.data.tokenizer import Tokenizer


@dataclasses.dataclass(frozen=True)
class Prompt:
    tokens: List[int]  # BOS included
    fields: Dict[str, object]  # the row's fields, for the reward functions
    source: str  # "file:row"
    text: str  # the rendered template


@dataclasses.dataclass
class PromptData:
    train: List[Prompt]
    eval: List[Prompt]
    truncated: Dict[str, int]

    def stats(self) -> dict:
        return {"data/train/prompts": len(self.train), "data/eval/prompts": len(self.eval),
                "data/train/truncated": self.truncated["train"],
                "data/eval/truncated": self.truncated["eval"]}


def placeholders(template: str) -> List[str]:
    """The field names `template` reads; ValueError if it is not a valid format string."""
    names = []
    for _, name, spec, conversion in string.Formatter().parse(template):
        if name is None:
            continue
        if not name.isidentifier():
            raise ValueError(f"template={template!r}: placeholder {{{name}}} is not a field "
                             "name (write {field}; a literal brace is {{ or }})")
        names.append(name)
    return names


def _first_row_fields(source: str, columns) -> Optional[set]:
    """The fields of a local .jsonl source's first row, or None where that is not cheap."""
    if not str(source).endswith(".jsonl"):
        return None
    try:
        path = resolve_source(source, "prompt file")
        with open(path, encoding="utf-8") as f:
            line = next((line for line in f if line.strip()), None)
        row = json.loads(line) if line else None
    except (ConfigError, OSError, ValueError):
        return None  # the data check reports an unreadable source
    if not isinstance(row, dict):
        return None
    fields = set(row) - set((columns or {}).values()) | set(columns or {})
    return fields


def template_problems(template: str, sources: Sequence[str], columns,
                      needed: Sequence[str] = ()):
    """[(parameter, message)]: a malformed template, or a placeholder (or a field a reward
    function needs, `needed`) that the first row of a source lacks."""
    try:
        names = placeholders(template)
    except ValueError as e:
        return [("template", str(e))]
    problems = []
    for source in sources:
        fields = _first_row_fields(source, columns)
        if fields is None:
            continue
        for name in [*names, *needed]:
            if name not in fields:
                what = "template" if name in names else "reward functions"
                problems.append(("template" if what == "template" else "train_files", (
                    f"the {what} read{'s' if what == 'template' else ''} the field {name!r}, "
                    f"but the first row of {source} has only {', '.join(sorted(fields))}; "
                    "map a column to it with columns={...}")))
                break
    return problems


def encode_prompts(rows, tokenizer: Tokenizer, template: str, max_prompt_length: int):
    """[(row, where)] -> ([Prompt], number left-truncated)."""
    names = placeholders(template)
    out, truncated = [], 0
    for row, where in rows:
        if not isinstance(row, dict):
            raise DataError(f"{where}: expected an object with the fields {', '.join(names)}")
        missing = [n for n in names if n not in row]
        if missing:
            raise DataError(f"{where}: no field {missing[0]!r}, which the template "
                            f"{template!r} reads; the row has {', '.join(sorted(row))}")
        for n in names:
            if not isinstance(row[n], (str, int, float)) or isinstance(row[n], bool):
                raise DataError(
                    f"{where}: the field {n!r}, which the template {template!r} reads, is "
                    f"{kind_of(row[n])}; give a string (prompts are plain text here: a list of "
                    "messages is not rendered with a chat template)")
        text = template.format(**{n: row[n] for n in names})
        if not text.strip():
            raise DataError(f"{where}: the prompt is empty (the template {template!r} gives "
                            f"{text!r}); remove the row")
        tokens = tokenizer.encode(text, add_bos=True, add_eos=False)
        if len(tokens) > max_prompt_length:
            tokens = tokens[:1] + tokens[len(tokens) - max_prompt_length + 1:]
            truncated += 1
        out.append(Prompt(tokens, dict(row), where, text))
    return out, truncated


def _arg_problems(train, held, eval_fraction, template, max_prompt_length):
    """[(parameter, message)] for arguments that cannot work; reads no data."""
    problems = source_problems(train, held, eval_fraction)
    if max_prompt_length < 2:
        problems.append(("max_prompt_length", f"max_prompt_length={max_prompt_length} cannot "
                         "hold BOS and a prompt token"))
    try:
        placeholders(template)
    except ValueError as e:
        problems.append(("template", str(e)))
    return problems


def _check(view):
    get = lambda arg: view.get("build_prompt_data", arg)  # noqa: E731
    train, held = get("train_files"), get("eval_files")
    problems = _arg_problems(train, held, get("eval_fraction"), get("template"),
                             get("max_prompt_length"))
    if problems:
        return problems
    return template_problems(get("template"), [*train, *held], get("columns"))


@configurable(caller_args=("tokenizer",), check=_check, resume_sensitive=("*",))
def build_prompt_data(
    tokenizer: Tokenizer,
    train_files: Sequence[str] = (),
    eval_files: Sequence[str] = (),
    eval_fraction: float = 0.0,
    split_seed: int = 0,
    template: str = "{prompt}",
    max_prompt_length: int = 256,
    columns: Optional[Dict[str, str]] = None,
) -> PromptData:
    """Reads prompts and their reference fields, and tokenizes the rendered prompts.

    Args:
      tokenizer: passed by the Trainer (from its tokenizer_fn).
      train_files: sources read in order (.jsonl, .parquet, save_to_disk folders, hf:NAME:SPLIT);
        relative paths resolve against the search roots.
      eval_files: held-out sources (eval/pass_at_1 is measured on them). Give these or
        eval_fraction: exactly one.
      eval_fraction: the fraction (0 <= f < 1) of train rows held out instead, chosen by
        split_seed.
      split_seed: seeds the eval_fraction split only.
      template: the prompt text, a str.format string over the row's fields (e.g.
        "Question: {question}\\nAnswer:"); the default is the row's `prompt` field as it is.
        The rendered text is encoded with BOS and no EOS.
      max_prompt_length: the most prompt tokens (BOS included); longer prompts lose their
        oldest tokens after BOS (counted as data/*/truncated).
      columns: {our field: the source's column}, e.g. {"prompt": "question"}; None reads the
        rows' fields as they are.
    """
    problems = _arg_problems(train_files, eval_files, eval_fraction, template,
                             max_prompt_length)
    if problems:
        raise ConfigError("; ".join(f"build_prompt_data.{m}" for _, m in problems))

    def read(source):
        return read_rows(source, columns)

    train_rows, eval_rows = read_split(train_files, eval_files, eval_fraction, split_seed, read)
    train, cut_train = encode_prompts(train_rows, tokenizer, template, max_prompt_length)
    held_out, cut_eval = encode_prompts(eval_rows, tokenizer, template, max_prompt_length)
    return PromptData(train, held_out, {"train": cut_train, "eval": cut_eval})

