"""Regenerates the shipped demo preference data and tokenizer, byte for byte.

    python assets/demo/make_demo.py [OUT_DIR]

Writes train.jsonl, eval.jsonl, tokenizer.json and tokenizer_config.json (default: this
folder). Everything is derived from SEED, so running it again reproduces the committed files;
tests/test_demo_assets.py checks that.

The task: a user asks a question about one of a few topics; the chosen reply is on topic and
helpful, the rejected reply is one of three kinds of bad answer (dismissive, vague, or helpful
but about another topic), in proportions 5:3:2. Dismissive and vague answers are recognisable
from the reply alone; off-topic ones need the reply to be compared with the prompt, so a model
that only looks at the reply tops out near 0.90 pairwise accuracy.
"""

import json
import pathlib
import random
import sys

SEED = 1234
NUM_TRAIN = 3000
NUM_EVAL = 400
VOCAB_SIZE = 512
BOS, EOS, PAD = "<|begin_of_text|>", "<|end_of_text|>", "<|pad|>"
CHAT_TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}\n{% endfor %}"
)

TOPICS = {
    "gardening": ["water the tomatoes early in the morning", "add compost to the soil",
                  "prune the roses after they bloom", "plant the seeds a finger deep"],
    "cooking": ["salt the pasta water well", "rest the meat before slicing",
                "toast the spices in a dry pan", "taste the sauce before serving"],
    "cycling": ["check the tire pressure weekly", "oil the chain after rain",
                "lower the saddle a little", "shift gears before the hill"],
    "astronomy": ["let your eyes adapt to the dark", "find the pole star first",
                  "use a red light to read the map", "watch the moon at first quarter"],
    "finance": ["save a part of every paycheck", "pay the card balance in full",
                "keep an emergency fund", "compare the fees before investing"],
    "sleep": ["keep the bedroom cool and dark", "stop screens an hour before bed",
              "wake up at the same time daily", "avoid coffee after noon"],
}
QUESTIONS = ["How do I get better at {t}?", "Any advice on {t}?", "What should I know about {t}?",
             "I am new to {t}. Where do I start?", "Can you give me a tip for {t}?"]
OPENERS = ["Sure!", "Good question.", "Happy to help.", "Here is a tip:", "Great idea."]
CLOSERS = ["Good luck!", "Hope that helps.", "Enjoy it.", "Let me know how it goes.", ""]
DISMISSIVE = ["I do not care about {t}.", "Figure it out yourself.", "That is a boring question.",
              "Ask someone else.", "Why would anyone ask that?", "Stop wasting my time."]
VAGUE = ["It depends.", "Maybe.", "Hard to say.", "There are many ways.", "Who knows."]


def _helpful(rng, topic):
    tips = rng.sample(TOPICS[topic], k=rng.randint(1, 2))
    body = " and ".join(tips)
    return " ".join(s for s in [rng.choice(OPENERS), f"For {topic}, {body}.",
                                rng.choice(CLOSERS)] if s)


def _rejected(rng, topic):
    kind = rng.choices(["dismissive", "vague", "off_topic"], weights=[5, 3, 2])[0]
    if kind == "dismissive":
        lines = rng.sample(DISMISSIVE, k=rng.randint(1, 2))
        return " ".join(lines).format(t=topic)
    if kind == "vague":
        return " ".join(rng.sample(VAGUE, k=rng.randint(1, 3)))
    other = rng.choice([t for t in TOPICS if t != topic])
    return _helpful(rng, other)


def make_pairs(rng, n):
    rows = []
    for _ in range(n):
        topic = rng.choice(sorted(TOPICS))
        prompt = rng.choice(QUESTIONS).format(t=topic)
        rows.append({"prompt": prompt, "chosen": _helpful(rng, topic),
                     "rejected": _rejected(rng, topic)})
    return rows


def train_tokenizer(texts):
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE, special_tokens=[BOS, EOS, PAD, "<|user|>", "<|assistant|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tokenizer.train_from_iterator(texts, trainer=trainer)
    return tokenizer


def main(out_dir):
    out = pathlib.Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rng = random.Random(SEED)
    train, held_out = make_pairs(rng, NUM_TRAIN), make_pairs(rng, NUM_EVAL)
    for name, rows in [("train.jsonl", train), ("eval.jsonl", held_out)]:
        with open(out / name, "w") as f:
            f.writelines(json.dumps(r, sort_keys=True) + "\n" for r in rows)
    texts = [r[k] for r in train for k in ("prompt", "chosen", "rejected")]
    train_tokenizer(texts).save(str(out / "tokenizer.json"))
    config = {"bos_token": BOS, "eos_token": EOS, "pad_token": PAD,
              "chat_template": CHAT_TEMPLATE, "model_max_length": 128}
    (out / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else pathlib.Path(__file__).parent)
