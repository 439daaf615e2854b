"""The committed demo data and tokenizer are exactly what assets/demo/make_demo.py produces."""

import subprocess
import sys

from tests.conftest import DEMO

FILES = ("train.jsonl", "eval.jsonl", "tokenizer.json", "tokenizer_config.json")


def test_demo_assets_regenerate_byte_for_byte(tmp_path):
    subprocess.run([sys.executable, str(DEMO / "make_demo.py"), str(tmp_path)], check=True)
    for name in FILES:
        assert (tmp_path / name).read_bytes() == (DEMO / name).read_bytes(), name


def test_the_compare_data_regenerates_byte_for_byte(tmp_path):
    compare = DEMO.parent / "compare"
    subprocess.run([sys.executable, str(compare / "make_compare.py"), str(tmp_path)],
                   check=True)
    for name in ("train.jsonl", "eval.jsonl"):
        assert (tmp_path / name).read_bytes() == (compare / name).read_bytes(), name


def test_demo_tokenizer_covers_the_tiny_model_vocab(demo_tokenizer):
    assert demo_tokenizer.vocab_size == 512
    assert demo_tokenizer.pad_id not in (demo_tokenizer.bos_id, demo_tokenizer.eos_id)
