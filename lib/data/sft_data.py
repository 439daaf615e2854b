"""Supervised fine-tuning data: prompt-completion examples from any source, tokenized.

Rows (from the sources of lib/data/sources.py, with the same `columns` mapping) come in three
forms, other columns ignored:
- text: {"prompt": str, "completion": str}
- conversational: {"messages": [messages]}: the last assistant message is the completion and
  everything before it the prompt;
- conversational prompt-completion: {"prompt": [messages], "completion": [messages]}.
Conversations are rendered with the tokenizer's chat template. An example is
`BOS prompt completion EOS`; the loss is on the completion and EOS (or on every token with
sft_task.train_on_prompt). Over-length policy ("truncate" by default): drop the oldest prompt
tokens (keeping BOS), then the end of the completion, without EOS: a cut completion is not a
finished answer, so the model is not taught to stop there. An example with an empty
completion is counted and dropped (`empty_policy="drop"`, the default) or stops the run
(`"error"`).
"""

import dataclasses
from typing import Dict, List, Optional, Sequence

from lib.config import ConfigError
from lib.config.registry import configurable
from lib.data.encoding import EMPTY_POLICIES
from lib.data.files import data_problems, read_split
from lib.data.sources import DataError, check_messages, kind_of, read_rows
from lib.data.tokenizer import TemplateError, Tokenizer


@dataclasses.dataclass(frozen=True)
class SFTExample:
    tokens: List[int]
    prompt_length: int  # leading tokens that are prompt (BOS included)
    source: str


@dataclasses.dataclass
class SFTStats:
    rows: int = 0
    kept: int = 0
    over_length: int = 0
    truncated: int = 0
    dropped_over_length: int = 0
    dropped_empty_completion: int = 0

    def as_dict(self, prefix: str):
        return {f"{prefix}/{k}": v for k, v in dataclasses.asdict(self).items()}


@dataclasses.dataclass
class SFTData:
    train: List[SFTExample]
    eval: List[SFTExample]
    train_stats: SFTStats
    eval_stats: SFTStats

    def stats(self) -> dict:
        return {**self.train_stats.as_dict("data/train"), **self.eval_stats.as_dict("data/eval")}


def parse_row(row, where):
    """(prompt, completion): both strings, or both lists of messages."""
    if not isinstance(row, dict):
        raise DataError(f"{where}: expected an object with prompt/completion or messages, got "
                        f"{type(row).__name__}")
    if "messages" in row and row["messages"] is not None:
        msgs = row["messages"]
        check_messages(msgs, f"{where}: 'messages'")
        last = max((i for i, m in enumerate(msgs) if m["role"] == "assistant"), default=None)
        if last is None:
            raise DataError(f"{where}: 'messages' has no assistant message to learn")
        return msgs[:last], msgs[last:last + 1]
    prompt, completion = row.get("prompt"), row.get("completion")
    if isinstance(prompt, str) and isinstance(completion, str):
        return prompt, completion
    if isinstance(prompt, list) and isinstance(completion, list):
        check_messages(prompt, f"{where}: 'prompt'")
        check_messages(completion, f"{where}: 'completion'")
        return prompt, completion
    got = (f"'prompt' is {kind_of(prompt)} and 'completion' is {kind_of(completion)}"
           if "prompt" in row and "completion" in row
           else f"the fields {', '.join(sorted(row))}" if row else "no fields")
    raise DataError(f"{where}: expected 'prompt' and 'completion' (both strings, or both lists "
                    f"of {{role, content}} messages) or 'messages'; got {got}")


def encode_example(prompt, completion, tokenizer: Tokenizer):
    """(prompt ids with BOS, completion ids with EOS)."""
    if isinstance(prompt, str):
        return (tokenizer.encode(prompt, add_bos=True, add_eos=False),
                tokenizer.encode(completion, add_bos=False, add_eos=True) if completion else [])
    prompt_text = tokenizer.render(prompt) if prompt else ""
    full = tokenizer.render(prompt + completion)
    reply = full[len(prompt_text):]
    # Empty when the assistant said nothing: the template's own markup around it is no reply.
    said = any(str(m.get("content") or "").strip() for m in completion)
    return (tokenizer.encode(prompt_text, add_bos=True, add_eos=False),
            tokenizer.encode(reply, add_bos=False, add_eos=True) if said else [])


def encode_examples(rows, tokenizer, max_length: int, overlength_policy: str,
                    empty_policy: str = "drop"):
    """[(prompt, completion, where)] -> (list of SFTExample, SFTStats)."""
    stats, out = SFTStats(rows=len(rows)), []
    for prompt, completion, where in rows:
        try:
            p, c = encode_example(prompt, completion, tokenizer)
        except TemplateError as e:
            raise DataError(f"{where}: {e}") from None
        if not c:
            if empty_policy == "error":
                raise DataError(f"{where}: the completion is empty; remove the row, or set "
                                "empty_policy='drop' to count and drop such examples")
            stats.dropped_empty_completion += 1
            continue
        if len(p) + len(c) > max_length:
            stats.over_length += 1
            if overlength_policy == "error":
                raise DataError(f"{where}: {len(p) + len(c)} tokens is longer than max_length="
                                f"{max_length}; raise max_length or set overlength_policy to "
                                "'drop' or 'truncate'")
            if overlength_policy == "drop":
                stats.dropped_over_length += 1
                continue
            excess = len(p) + len(c) - max_length
            cut = min(excess, len(p) - 1)  # the oldest prompt tokens after BOS go first
            p = p[:1] + p[1 + cut:]
            c = c[:max_length - len(p)]  # then the completion's end, EOS included
            stats.truncated += 1
        out.append(SFTExample(p + c, len(p), where))
    stats.kept = len(out)
    return out, stats


def _check(view):
    empty = view.get("build_sft_data", "empty_policy")
    bad = [] if empty in EMPTY_POLICIES else [("empty_policy", (
        f"empty_policy={empty!r}; valid: {', '.join(EMPTY_POLICIES)}"))]
    return bad + data_problems(*(view.get("build_sft_data", a) for a in (
        "train_files", "eval_files", "eval_fraction", "max_length", "overlength_policy")))


@configurable(caller_args=("tokenizer",), check=_check, resume_sensitive=("*",))
def build_sft_data(
    tokenizer: Tokenizer,
    train_files: Sequence[str] = (),
    eval_files: Sequence[str] = (),
    eval_fraction: float = 0.0,
    split_seed: int = 0,
    max_length: int = 512,
    overlength_policy: str = "truncate",
    columns: Optional[Dict[str, str]] = None,
    empty_policy: str = "drop",
) -> SFTData:
    """Reads, validates and tokenizes prompt-completion examples.

    Args:
      tokenizer: passed by the Trainer (from its tokenizer_fn).
      train_files: sources read in order: .jsonl or .parquet files, datasets save_to_disk
        folders ('folder:split' for a DatasetDict), or 'hf:NAME:SPLIT' from the local HF
        cache; relative paths resolve against the search roots.
      eval_files: held-out sources. Give these or eval_fraction: exactly one.
      eval_fraction: the fraction (0 <= f < 1) of train rows held out for eval instead, chosen
        by split_seed before tokenization.
      split_seed: seeds the eval_fraction split only; the training order uses Trainer.seed.
      max_length: the most tokens in one example (BOS, prompt, completion, EOS).
      overlength_policy: "truncate", "drop" or "error" for a longer example (see the module
        doc); counts are logged as data/train/* and data/eval/*.
      columns: {our field: the source's column}, e.g. {"prompt": "instruction", "completion":
        "output"}; None reads prompt/completion or messages as they are.
      empty_policy: "drop" (count as data/*/dropped_empty_completion and drop) or "error" for
        an example whose completion is empty.
    """
    problems = data_problems(train_files, eval_files, eval_fraction,
                             max_length, overlength_policy)
    if problems:
        raise ConfigError("; ".join(f"build_sft_data.{m}" for _, m in problems))

    def read(source):
        return [(*parse_row(row, where), where) for row, where in read_rows(source, columns)]

    train_rows, eval_rows = read_split(train_files, eval_files, eval_fraction, split_seed, read)
    train, train_stats = encode_examples(train_rows, tokenizer, max_length, overlength_policy,
                                         empty_policy)
    held_out, eval_stats = encode_examples(eval_rows, tokenizer, max_length, overlength_policy,
                                           empty_policy)
    return SFTData(train, held_out, train_stats, eval_stats)
