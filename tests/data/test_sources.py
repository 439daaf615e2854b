"""Reading preference files: both row forms, Parquet, and malformed rows named by file and row."""

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from lib.data.sources import DataError, read_pairs


def _write_jsonl(path, rows):
    path.write_text("".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))
    return path


def test_text_rows_with_optional_margin(tmp_path):
    f = _write_jsonl(tmp_path / "p.jsonl", [
        {"prompt": "Q", "chosen": "good", "rejected": "bad", "extra": 1},
        {"prompt": "Q2", "chosen": "yes", "rejected": "no", "margin": 2},
    ])
    pairs = read_pairs(f)
    assert [(p.prompt, p.chosen, p.rejected, p.margin) for p in pairs] == [
        ("Q", "good", "bad", None), ("Q2", "yes", "no", 2.0)]
    assert pairs[1].source == f"{f}:2"


def test_conversational_rows(tmp_path):
    row = {"prompt": [{"role": "user", "content": "hi"}],
           "chosen": [{"role": "assistant", "content": "hello!"}],
           "rejected": [{"role": "assistant", "content": "go away"}]}
    (pair,) = read_pairs(_write_jsonl(tmp_path / "c.jsonl", [row]))
    assert pair.conversational and pair.prompt == row["prompt"]


def test_parquet_rows(tmp_path):
    f = tmp_path / "p.parquet"
    pq.write_table(pa.table({"prompt": ["a", "b"], "chosen": ["x", "y"],
                             "rejected": ["z", "w"], "margin": [0.5, None]}), f)
    pairs = read_pairs(f)
    assert [(p.prompt, p.margin) for p in pairs] == [("a", 0.5), ("b", None)]
    assert pairs[0].source == f"{f}:1"


@pytest.mark.parametrize("bad_row, message", [
    ('{"prompt": "Q", "chosen": "a", ', "not valid JSON"),
    ({"prompt": "Q", "chosen": "a"}, "missing 'rejected'"),
    ({"prompt": 3, "chosen": "a", "rejected": "b"}, "text rows need 'prompt' as a string"),
    ({"prompt": "Q", "chosen": "a", "rejected": [{"role": "assistant", "content": "b"}]},
     "must both be strings"),
    ({"chosen": [{"role": "bot", "content": "a"}], "rejected": [{"role": "assistant",
                                                                "content": "b"}]},
     "role 'bot'; valid roles: system, user, assistant"),
    ({"prompt": "Q", "chosen": "a", "rejected": "b", "margin": "big"},
     "'margin' must be a finite number"),
    ('[1, 2]', "expected an object"),
])
def test_malformed_row_is_reported_with_file_and_row(tmp_path, bad_row, message):
    good = {"prompt": "Q", "chosen": "a", "rejected": "b"}
    f = _write_jsonl(tmp_path / "bad.jsonl", [good, good, bad_row])
    with pytest.raises(DataError) as err:
        read_pairs(f)
    assert f"{f}:3" in str(err.value)
    assert message in str(err.value)


def test_unknown_file_type_and_empty_file(tmp_path):
    with pytest.raises(DataError, match="unsupported file type '.csv'"):
        read_pairs(tmp_path / "x.csv")
    with pytest.raises(DataError, match="no rows"):
        read_pairs(_write_jsonl(tmp_path / "empty.jsonl", []))
