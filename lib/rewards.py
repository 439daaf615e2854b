"""Reward functions for tasks that score their own completions (GRPO), listed with weights in gin.

    grpo_task.reward_fns = [@exact_match_reward(), @format_reward()]
    grpo_task.reward_weights = [1.0, 0.1]

Each configurable returns a `RewardFn`: called with the completions' text, their token ids and
their prompts (lib/data/prompt_data.Prompt, whose `fields` hold the row's reference fields), it
returns one float per completion. `verifiable` functions are checked against a reference or a
rule and give 1.0 for a full reward; `eval/pass_at_1` is the share of held-out prompts whose
greedy completion gets the full reward from every verifiable function. `fields` names the row
fields a function reads, which the task checks against the data before training.
"""

import dataclasses
import re
from typing import Callable, List, Sequence, Tuple

import torch

from lib.config.registry import configurable


@dataclasses.dataclass
class RewardFn:
    name: str  # metric key: train/rewards/<name>
    fn: Callable  # (texts, token lists, prompts) -> [float]
    verifiable: bool
    fields: Tuple[str, ...] = ()

    def __call__(self, texts: Sequence[str], tokens: Sequence[List[int]], prompts) -> List[float]:
        return [float(r) for r in self.fn(texts, tokens, prompts)]


def _field(prompt, name: str) -> str:
    return str(prompt.fields[name]).strip()


@configurable()
def exact_match_reward(field: str = "answer", name: str = "exact_match") -> RewardFn:
    """1.0 when the completion, stripped of surrounding whitespace, equals the row's `field`.

    Args:
      field: the row field holding the reference answer.
      name: the metric name (train/rewards/<name>); unique among the task's reward functions.
    """
    return RewardFn(name, lambda texts, _, prompts: [
        text.strip() == _field(p, field) for text, p in zip(texts, prompts)], True, (field,))


def _math_equal(gold: str, text: str) -> bool:
    from math_verify import parse, verify

    parsed = parse(text)
    return bool(parsed) and verify(parse(gold), parsed)


@configurable()
def math_verify_reward(field: str = "answer", name: str = "math_verify") -> RewardFn:
    """1.0 when the completion's final answer is mathematically equal to the row's `field`,
    as Hugging Face's math-verify decides (numbers, fractions, LaTeX, \\boxed{}; "0.5" equals
    "1/2").

    Args:
      field: the row field holding the reference answer.
      name: the metric name (train/rewards/<name>); unique among the task's reward functions.
    """
    return RewardFn(name, lambda texts, _, prompts: [
        _math_equal(_field(p, field), text) for text, p in zip(texts, prompts)], True,
        (field,))


def _check_pattern(view):
    try:
        re.compile(view.get("format_reward", "pattern"))
    except re.error as e:
        return [("pattern", f"pattern={view.get('format_reward', 'pattern')!r} is not a "
                 f"regular expression ({e})")]
    return []


@configurable(check=_check_pattern)
def format_reward(pattern: str = r"-?\d+", name: str = "format") -> RewardFn:
    """1.0 when the whole completion (stripped) matches the regular expression `pattern`.

    Args:
      pattern: a Python regular expression the stripped completion must match in full
        (re.fullmatch); the default is an integer.
      name: the metric name (train/rewards/<name>); unique among the task's reward functions.
    """
    compiled = re.compile(pattern)
    return RewardFn(name, lambda texts, _, __: [
        compiled.fullmatch(text.strip()) is not None for text in texts], True)


def _check_length(view):
    get = lambda arg: view.get("length_penalty", arg)  # noqa: E731
    if get("buffer_tokens") < 1 or get("max_tokens") <= get("buffer_tokens"):
        return [("buffer_tokens", f"need 0 < buffer_tokens ({get('buffer_tokens')}) < "
                 f"max_tokens ({get('max_tokens')})")]
    return []


@configurable(check=_check_length)
def length_penalty(max_tokens: int, buffer_tokens: int, name: str = "length") -> RewardFn:
    """DAPO's overlong shaping (Yu et al., 2025, eq. 13): 0 up to max_tokens - buffer_tokens
    completion tokens, then falling linearly to -1 at max_tokens, and -1 beyond.

    Args:
      max_tokens: the completion length (EOS included) that gets -1; usually the task's
        max_new_tokens.
      buffer_tokens: the length of the linear ramp before max_tokens.
      name: the metric name (train/rewards/<name>); unique among the task's reward functions.
    """
    def score(_, tokens, __):
        return [min(0.0, max(-1.0, (max_tokens - buffer_tokens - len(t)) / buffer_tokens))
                for t in tokens]

    return RewardFn(name, score, False)


_SCORE_BATCH = 16  # completions a reward model scores in one forward


class _RewardModel:
    """A reward model of our own reward task, exported as a Hugging Face directory."""

    def __init__(self, checkpoint_dir: str, model_type: str):
        self.checkpoint_dir, self.model_type = checkpoint_dir, model_type
        self.model = self.tokenizer = None

    def _load(self, device):
        from lib.data.tokenizer import Tokenizer
        from lib.models.hf import _read_config, hf_model

        directory, _ = _read_config(self.checkpoint_dir, self.model_type)
        self.tokenizer = Tokenizer(directory)
        self.model = hf_model.__wrapped__("reward", str(directory), self.model_type)
        self.model.to(device).eval().requires_grad_(False)

    @torch.no_grad()
    def __call__(self, texts, _, prompts):
        device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        if self.model is None:
            self._load(device)
        from lib.models.reward import compute_rewards

        seqs = [self.tokenizer.encode(prompt.text + text, add_bos=True, add_eos=True)
                for text, prompt in zip(texts, prompts)]
        scores = []
        for at in range(0, len(seqs), _SCORE_BATCH):  # right-padded batches, one read back
            batch = seqs[at:at + _SCORE_BATCH]
            tokens = torch.zeros((len(batch), max(map(len, batch))), dtype=torch.long)
            mask = torch.zeros(tokens.shape, dtype=torch.bool)
            for i, ids in enumerate(batch):
                tokens[i, :len(ids)], mask[i, :len(ids)] = torch.tensor(ids), True
            scores.append(compute_rewards(self.model, tokens.to(device), mask.to(device),
                                          right_padded=True))
        return torch.cat(scores).tolist() if scores else []


def _check_reward_model(view):
    from lib.models.hf import directory_problems

    return directory_problems(view, "reward_model_reward")


@configurable(check=_check_reward_model)
def reward_model_reward(checkpoint_dir: str, model_type: str = "llama",
                        name: str = "reward_model") -> RewardFn:
    """The score of a reward model trained by our reward task (gin/reward.gin with
    Trainer.export_hf=True writes it to <run>/hf/), read at the EOS of prompt + completion,
    in fp32, 16 completions to a forward.

    Args:
      checkpoint_dir: the exported directory (config.json, model.safetensors, tokenizer files);
        its own tokenizer encodes the texts.
      model_type: its family ("llama" or "qwen2").
      name: the metric name (train/rewards/<name>); unique among the task's reward functions.
    """
    return RewardFn(name, _RewardModel(checkpoint_dir, model_type), False)
