"""Deterministic benchmark data in the demo vocabulary, with token lengths as stated.

Preference pairs: each side (prompt + response, BOS and EOS included, as lib/data/encoding.py
encodes it with the demo tokenizer) is drawn uniformly from min_tokens..max_tokens, chosen and
rejected independently; the prompt, shared by both sides, is a quarter to a half of the shorter
side. SFT examples: prompt + completion drawn the same way. Lengths are hit exactly: text is
built word by word and the last word is replaced by shorter ones until the count is right.
`length_report` gives the distribution that came out, which the benchmarks print.
"""

import json
import pathlib
import random
import statistics

DEMO = pathlib.Path(__file__).resolve().parent.parent / "assets" / "demo"


class _Writer:
    def __init__(self, seed: int):
        from lib.data.tokenizer import Tokenizer

        self.tok = Tokenizer(DEMO)
        rows = [json.loads(line) for line in (DEMO / "train.jsonl").read_text().splitlines()]
        self.words = sorted({w for r in rows for k in ("prompt", "chosen", "rejected")
                             for w in r[k].split()})
        self.cost = {w: len(self.tok.encode(" " + w, False, False)) for w in self.words}
        # Words of one token (with a leading space) let any length be hit exactly.
        self.short = [w for w in self.words if self.cost[w] == 1]
        self.rng = random.Random(seed)

    def text(self, num_tokens: int, bos: bool, eos: bool) -> str:
        """Text that encodes to exactly num_tokens (with the given BOS/EOS)."""
        out, estimate = [], int(bos) + int(eos)
        while estimate < num_tokens - 4:
            out.append(self.rng.choice(self.words))
            estimate += self.cost[out[-1]]
        for _ in range(100):
            n = len(self.tok.encode(" ".join(out), bos, eos))
            if n == num_tokens:
                return " ".join(out)
            if n < num_tokens:
                out.extend(self.rng.choice(self.short) for _ in range(num_tokens - n))
            else:
                out.pop()
        raise RuntimeError(f"could not build a text of {num_tokens} tokens")


def _write(path: pathlib.Path, count: int, seed: int, row) -> pathlib.Path:
    """Writes `count` rows, each `row(writer)`, as JSON lines to path; returns path."""
    w = _Writer(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        for _ in range(count):
            f.write(json.dumps(row(w)) + "\n")
    return path


def make(out_dir: pathlib.Path, num_pairs: int, min_tokens: int = 64, max_tokens: int = 256,
         seed: int = 0) -> pathlib.Path:
    """Writes out_dir/pairs.jsonl (preference pairs; see the module doc); returns the file."""
    def pair(w):
        chosen_len = w.rng.randint(min_tokens, max_tokens)
        rejected_len = w.rng.randint(min_tokens, max_tokens)
        shorter = min(chosen_len, rejected_len)
        prompt_len = w.rng.randint(max(2, shorter // 4), max(2, shorter // 2))
        prompt = w.text(prompt_len, bos=True, eos=False)
        return {"prompt": prompt,
                "chosen": w.text(chosen_len - prompt_len, bos=False, eos=True),
                "rejected": w.text(rejected_len - prompt_len, bos=False, eos=True)}

    return _write(out_dir / "pairs.jsonl", num_pairs, seed, pair)


def make_sft(out_dir: pathlib.Path, num_examples: int, min_tokens: int = 64,
             max_tokens: int = 512, seed: int = 0) -> pathlib.Path:
    """Writes out_dir/sft.jsonl: prompt + completion of min..max tokens, the prompt a tenth
    to a half of it; returns the file."""
    def example(w):
        total = w.rng.randint(min_tokens, max_tokens)
        prompt_len = w.rng.randint(max(2, total // 10), max(2, total // 2))
        return {"prompt": w.text(prompt_len, bos=True, eos=False),
                "completion": w.text(total - prompt_len, bos=False, eos=True)}

    return _write(out_dir / "sft.jsonl", num_examples, seed, example)


def length_report(lengths_a, lengths_b=None) -> dict:
    """min, quartiles, max and mean of token lengths; with a second list (rejected sides), the
    share of pairs whose sides differ in length and the correlation of the two."""
    allv = list(lengths_a) + list(lengths_b or [])
    q = statistics.quantiles(allv, n=4)
    out = {"n": len(allv), "min": min(allv), "p25": q[0], "median": q[1], "p75": q[2],
           "max": max(allv), "mean": round(statistics.fmean(allv), 1)}
    if lengths_b:
        out["pairs_with_unequal_sides"] = round(
            sum(a != b for a, b in zip(lengths_a, lengths_b)) / len(lengths_a), 3)
        out["chosen_rejected_correlation"] = round(
            statistics.correlation(list(lengths_a), list(lengths_b)), 3)
    return out
