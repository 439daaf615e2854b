"""Turning preference pairs into token ids, with an explicit over-length policy.

Each side of a pair is `prompt ids + response ids`: BOS starts the prompt and EOS ends the
response, so the reward is read at the EOS token. A side longer than `max_length` is handled by
the policy:
- "error": stop with the row that is too long;
- "drop": drop the pair;
- "truncate": drop the oldest prompt tokens (keeping BOS), and if the response alone still does
  not fit, cut the response's tail (keeping the final EOS).
Pairs whose two sides are identical token for token (before or after truncation) carry no
preference and are dropped. A pair with an empty chosen or rejected reply (blank text, or
messages with blank content) is dropped by default (`empty_policy="drop"`) or stops the run
(`"error"`). Every decision is counted in EncodingStats.
"""

import dataclasses
from typing import List, Optional, Sequence, Tuple

from lib.data.sources import DataError, PreferencePair
from lib.data.tokenizer import TemplateError

POLICIES = ("error", "drop", "truncate")
EMPTY_POLICIES = ("drop", "error")


@dataclasses.dataclass(frozen=True)
class EncodedPair:
    chosen: List[int]
    rejected: List[int]
    margin: Optional[float]
    source: str
    # Leading tokens of each side (chosen, rejected) that are prompt, not response: DPO sums
    # log-probabilities over the rest. Truncation can shorten one side's prompt only.
    prompt_lengths: Tuple[int, int] = (0, 0)


@dataclasses.dataclass
class EncodingStats:
    rows: int = 0
    kept: int = 0
    over_length: int = 0          # pairs with at least one side over max_length
    truncated: int = 0            # ... of which were truncated and kept
    dropped_over_length: int = 0  # ... of which were dropped ("drop" policy)
    dropped_identical: int = 0    # identical sides before truncation (no preference)
    dropped_identical_after_truncation: int = 0
    dropped_empty: int = 0        # an empty chosen or rejected reply ("drop" empty_policy)

    def as_dict(self, prefix: str):
        return {f"{prefix}/{k}": v for k, v in dataclasses.asdict(self).items()}


def is_blank(reply) -> bool:
    """Whether a reply (text, or a list of messages) has no content."""
    if isinstance(reply, str):
        return not reply.strip()
    return all(not m.get("content", "").strip() for m in reply)


def encode_pairs(pairs: Sequence[PreferencePair], tokenizer, max_length: int,
                 overlength_policy: str, empty_policy: str = "drop"):
    """Returns (list of EncodedPair, EncodingStats)."""
    if overlength_policy not in POLICIES:
        raise ValueError(f"overlength_policy={overlength_policy!r}; valid: {', '.join(POLICIES)}")
    if max_length < 4:
        raise ValueError(f"max_length={max_length} is too small to hold BOS, a token and EOS")
    stats, out = EncodingStats(rows=len(pairs)), []
    for pair in pairs:
        empty = [k for k in ("chosen", "rejected") if is_blank(getattr(pair, k))]
        if empty:
            if empty_policy == "error":
                raise DataError(f"{pair.source}: {' and '.join(map(repr, empty))} is empty; "
                                "remove the row, or set empty_policy='drop' to count and drop "
                                "such pairs")
            stats.dropped_empty += 1
            continue
        try:
            prompt, chosen, rejected = _encode_sides(pair, tokenizer)
        except TemplateError as e:
            raise DataError(f"{pair.source}: {e}") from None
        sides = [prompt + chosen, prompt + rejected]
        prompt_lengths = (len(prompt), len(prompt))
        if sides[0] == sides[1]:
            stats.dropped_identical += 1
            continue
        if max(map(len, sides)) > max_length:
            stats.over_length += 1
            if overlength_policy == "error":
                raise DataError(
                    f"{pair.source}: {max(map(len, sides))} tokens is longer than max_length="
                    f"{max_length}; raise max_length or set overlength_policy to 'drop' or "
                    "'truncate'")
            if overlength_policy == "drop":
                stats.dropped_over_length += 1
                continue
            (c, c_prompt), (r, r_prompt) = (truncate(prompt, x, max_length)
                                            for x in (chosen, rejected))
            sides, prompt_lengths = [c, r], (c_prompt, r_prompt)
            if sides[0] == sides[1]:
                stats.dropped_identical_after_truncation += 1
                continue
            stats.truncated += 1
        out.append(EncodedPair(sides[0], sides[1], pair.margin, pair.source, prompt_lengths))
    stats.kept = len(out)
    return out, stats


def _encode_sides(pair: PreferencePair, tokenizer):
    """Returns (prompt ids, chosen response ids, rejected response ids)."""
    if not pair.conversational:
        return (tokenizer.encode(pair.prompt, add_bos=True, add_eos=False),
                tokenizer.encode(pair.chosen, add_bos=False, add_eos=True),
                tokenizer.encode(pair.rejected, add_bos=False, add_eos=True))
    prompt_text = tokenizer.render(pair.prompt) if pair.prompt else ""
    responses = []
    for msgs in (pair.chosen, pair.rejected):
        full = tokenizer.render(pair.prompt + msgs)
        if not full.startswith(prompt_text):
            raise DataError(f"{pair.source}: the chat template renders the prompt differently "
                            "on its own and inside the conversation; cannot split them")
        responses.append(tokenizer.encode(full[len(prompt_text):], add_bos=False, add_eos=True))
    return tokenizer.encode(prompt_text, add_bos=True, add_eos=False), *responses


def truncate(prompt: List[int], response: List[int], max_length: int):
    """(prompt + response cut to max_length, the prompt tokens kept); see the module doc."""
    excess = len(prompt) + len(response) - max_length
    if excess <= 0:
        return prompt + response, len(prompt)
    keep_prompt = max(1, len(prompt) - excess)  # position 0 is BOS
    prompt = prompt[:1] + prompt[len(prompt) - keep_prompt + 1:] if keep_prompt > 1 else prompt[:1]
    room = max_length - len(prompt)
    if len(response) > room:
        response = response[:room - 1] + response[-1:]  # keep EOS last
    return prompt + response, len(prompt)
