"""The benchmark data has the token lengths its docs state (issue: 48% of sides used to come out
longer than 256 tokens and be truncated, and both sides of a pair were always equally long)."""

from benchmarks import data
from lib.data.encoding import encode_pairs
from lib.data.sft_data import build_sft_data
from lib.data.sources import read_pairs


def test_pair_sides_hit_their_drawn_lengths_independently(tmp_path, demo_tokenizer):
    path = data.make(tmp_path, 60, 64, 256, seed=3)
    pairs, stats = encode_pairs(read_pairs(path), demo_tokenizer, 256, "error")
    assert stats.kept == 60 and stats.over_length == 0
    chosen, rejected = [len(p.chosen) for p in pairs], [len(p.rejected) for p in pairs]
    assert all(64 <= n <= 256 for n in chosen + rejected)
    report = data.length_report(chosen, rejected)
    assert report["pairs_with_unequal_sides"] > 0.9
    assert abs(report["chosen_rejected_correlation"]) < 0.5


def test_sft_examples_hit_their_drawn_lengths(tmp_path, demo_tokenizer):
    path = data.make_sft(tmp_path, 40, 32, 512, seed=4)
    examples = build_sft_data(demo_tokenizer, train_files=[str(path)], eval_files=[str(path)],
                              max_length=512, overlength_policy="error").train
    lengths = [len(e.tokens) for e in examples]
    assert len(lengths) == 40 and all(32 <= n <= 512 for n in lengths)
    assert max(lengths) - min(lengths) > 200  # a spread, not one length
