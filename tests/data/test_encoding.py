"""Tokenizing pairs with the real demo tokenizer, and the over-length policies' counts."""

import pytest

from lib.data.encoding import encode_pairs
from lib.data.sources import DataError, PreferencePair


def _pair(prompt, chosen, rejected, margin=None, n=1):
    return PreferencePair(prompt, chosen, rejected, margin, f"f.jsonl:{n}")


def test_each_side_is_bos_prompt_response_eos(demo_tokenizer):
    tok = demo_tokenizer
    (enc,), stats = encode_pairs([_pair("Any advice on cooking?", "Sure!", "No.")], tok, 64,
                                 "error")
    prompt = tok.encode("Any advice on cooking?", add_bos=True, add_eos=False)
    assert enc.chosen == prompt + tok.encode("Sure!", add_bos=False, add_eos=True)
    assert enc.chosen[0] == tok.bos_id and enc.chosen[-1] == tok.eos_id
    assert stats.kept == 1 and stats.over_length == 0


def test_conversational_pairs_use_the_chat_template(demo_tokenizer):
    tok = demo_tokenizer
    pair = _pair([{"role": "user", "content": "Any advice on sleep?"}],
                 [{"role": "assistant", "content": "Keep the bedroom dark."}],
                 [{"role": "assistant", "content": "Who knows."}])
    (enc,), _ = encode_pairs([pair], tok, 128, "error")
    text = tok._tt.tokenizer.decode(enc.chosen, skip_special_tokens=False)
    assert text == ("<|begin_of_text|><|user|>\nAny advice on sleep?\n<|assistant|>\n"
                    "Keep the bedroom dark.\n<|end_of_text|>")


LONG_PROMPT = "How do I get better at gardening? " * 20


def test_overlength_error_names_the_row(demo_tokenizer):
    with pytest.raises(DataError, match=r"f.jsonl:7: \d+ tokens is longer than max_length=32"):
        encode_pairs([_pair(LONG_PROMPT, "Sure!", "No.", n=7)], demo_tokenizer, 32, "error")


def test_overlength_drop_counts(demo_tokenizer):
    pairs = [_pair(LONG_PROMPT, "Sure!", "No."), _pair("Hi?", "Sure!", "No.")]
    kept, stats = encode_pairs(pairs, demo_tokenizer, 32, "drop")
    assert len(kept) == 1 and stats.dropped_over_length == 1 and stats.over_length == 1


def test_truncate_keeps_bos_response_and_eos(demo_tokenizer):
    tok = demo_tokenizer
    (enc,), stats = encode_pairs([_pair(LONG_PROMPT, "Sure!", "No.")], tok, 32, "truncate")
    assert stats.truncated == 1
    for side, response in ((enc.chosen, "Sure!"), (enc.rejected, "No.")):
        ids = tok.encode(response, add_bos=False, add_eos=True)
        assert len(side) == 32 and side[0] == tok.bos_id and side[-len(ids):] == ids


def test_pairs_identical_after_truncation_are_dropped_and_counted(demo_tokenizer):
    # The two responses differ only after the 20th token, which truncation cuts away.
    shared = "save a part of every paycheck " * 5
    pairs = [_pair("Hi?", shared + "and relax.", shared + "and panic."),
             _pair("Hi?", "same", "same")]
    kept, stats = encode_pairs(pairs, demo_tokenizer, 20, "truncate")
    assert kept == []
    assert stats.dropped_identical_after_truncation == 1 and stats.dropped_identical == 1


def test_unknown_policy_is_refused(demo_tokenizer):
    with pytest.raises(ValueError, match="valid: error, drop, truncate"):
        encode_pairs([], demo_tokenizer, 32, "chop")
