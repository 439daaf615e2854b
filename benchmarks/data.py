"""Deterministic benchmark preference data: demo-vocabulary text, 64 to 256 tokens a side."""

import json
import pathlib
import random

DEMO = pathlib.Path(__file__).resolve().parent.parent / "assets" / "demo"


def make(out_dir: pathlib.Path, num_pairs: int, min_words: int = 40, max_words: int = 170,
         seed: int = 0) -> pathlib.Path:
    """Writes out_dir/pairs.jsonl; a side (prompt + response) is min..max words, which the
    demo tokenizer turns into roughly 64 to 256 tokens. Returns the file."""
    rows = [json.loads(line) for line in (DEMO / "train.jsonl").read_text().splitlines()]
    words = sorted({w for r in rows for k in ("prompt", "chosen", "rejected")
                    for w in r[k].split()})
    rng = random.Random(seed)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "pairs.jsonl"
    with open(path, "w") as f:
        for _ in range(num_pairs):
            total = rng.randint(min_words, max_words)
            prompt_words = total // 3
            text = lambda n: " ".join(rng.choice(words) for _ in range(n))  # noqa: E731
            f.write(json.dumps({"prompt": text(prompt_words),
                                "chosen": text(total - prompt_words),
                                "rejected": text(total - prompt_words)}) + "\n")
    return path
