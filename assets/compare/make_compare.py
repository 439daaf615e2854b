"""Regenerates the shipped comparison data (the GRPO demo's task), byte for byte.

    python assets/compare/make_compare.py [OUT_DIR]

Writes train.jsonl and eval.jsonl (default: this folder) from SEED; tests/test_demo_assets.py
checks that running it again reproduces the committed files. Rows are
{"prompt": "Which is larger, 37 or 52?", "answer": "52", "teacher": "37"}: two different
numbers from 0 to 99, the eval pairs disjoint from the training pairs. `answer` is right;
`teacher` is what a teacher with a position bias answered: the second number whenever the
second is larger, and also in TEACHER_BIAS of the rows where the first is larger. The SFT
stage of the GRPO demo imitates the teacher; GRPO, rewarded against `answer`, corrects it.
The demo tokenizer (assets/demo/) reads each digit as one token.
"""

import json
import pathlib
import random
import sys

SEED = 4321
NUM_TRAIN = 4000
NUM_EVAL = 200
TEACHER_BIAS = 0.6


def row(rng, a, b):
    teacher = b if b > a or rng.random() < TEACHER_BIAS else a
    return {"prompt": f"Which is larger, {a} or {b}?", "answer": str(max(a, b)),
            "teacher": str(teacher)}


def main(out: pathlib.Path) -> None:
    rng = random.Random(SEED)
    pairs = [(a, b) for a in range(100) for b in range(100) if a != b]
    rng.shuffle(pairs)
    splits = {"eval": pairs[:NUM_EVAL], "train": pairs[NUM_EVAL:NUM_EVAL + NUM_TRAIN]}
    for name, split in splits.items():
        with open(out / f"{name}.jsonl", "w") as f:
            for a, b in split:
                f.write(json.dumps(row(rng, a, b), sort_keys=True) + "\n")


if __name__ == "__main__":
    main(pathlib.Path(sys.argv[1]) if len(sys.argv) > 1 else pathlib.Path(__file__).parent)
