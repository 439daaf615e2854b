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


def _msgs(*pairs):
    return [{"role": role, "content": content} for role, content in pairs]


def test_ultrafeedback_binarized_rows_split_at_the_user_turn(tmp_path):
    """A string prompt plus conversations that already hold the user turn."""
    f = _write_jsonl(tmp_path / "uf.jsonl", [{
        "prompt": "What is 2+2?",
        "chosen": _msgs(("user", "What is 2+2?"), ("assistant", "4")),
        "rejected": _msgs(("user", "What is 2+2?"), ("assistant", "5")),
        "score_chosen": 9.0}])
    (pair,) = read_pairs(f)
    assert pair.prompt == _msgs(("user", "What is 2+2?"))
    assert pair.chosen == _msgs(("assistant", "4")) and pair.rejected == _msgs(("assistant", "5"))


def test_hh_rows_take_the_shared_turns_as_the_prompt(tmp_path):
    shared = [("user", "hi"), ("assistant", "hello"), ("user", "tell me a joke")]
    f = _write_jsonl(tmp_path / "hh.jsonl", [{
        "chosen": _msgs(*shared, ("assistant", "a good joke")),
        "rejected": _msgs(*shared, ("assistant", "no"))}])
    (pair,) = read_pairs(f)
    assert pair.prompt == _msgs(*shared)
    assert pair.chosen == _msgs(("assistant", "a good joke"))


def test_a_string_prompt_that_is_not_the_user_turn_is_refused_with_both_texts(tmp_path):
    f = _write_jsonl(tmp_path / "bad.jsonl", [{
        "prompt": "What is 3+3?",
        "chosen": _msgs(("user", "What is 2+2?"), ("assistant", "4")),
        "rejected": _msgs(("user", "What is 2+2?"), ("assistant", "5"))}])
    with pytest.raises(DataError, match=r"bad.jsonl:1: 'prompt' differs from the conversations' "
                       r"user turn \(message 0\): 'What is 3\+3\?' vs 'What is 2\+2\?'"):
        read_pairs(f)


def test_each_layout_reads_from_parquet_and_a_saved_dataset(tmp_path):
    datasets = pytest.importorskip("datasets")
    rows = [{"question": "Q", "good": "yes", "bad": "no"}]
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "p.parquet")
    datasets.Dataset.from_list(rows).save_to_disk(tmp_path / "saved")
    columns = {"prompt": "question", "chosen": "good", "rejected": "bad"}
    for source in (tmp_path / "p.parquet", tmp_path / "saved"):
        (pair,) = read_pairs(source, columns)
        assert (pair.prompt, pair.chosen, pair.rejected) == ("Q", "yes", "no")


JSONL_CASES = {
    "cut_short": (b'{"prompt": "hi", "chosen": "a", "rejected": "b"\n',
                  "x.jsonl:1: not valid JSON (Expecting ',' delimiter at column 48)"),
    "json_array": (b'[\n  {"prompt": "a"}\n]\n', "x.json:1: not valid JSON (Expecting value at "
                   "column 2) (a .json file is read as JSON Lines: one object per line)"),
    "bom": (b'\xef\xbb\xbf{"prompt": "a", "chosen": "b", "rejected": "c"}\n',
            "x.jsonl:1: starts with a byte order mark (BOM); save the file as UTF-8 without BOM"),
    "lone_surrogate": (b'{"prompt": "ok \\ud83d\\ude00", "chosen": "a", "rejected": "b"}\n'
                       b'{"prompt": "hi \\ud800", "chosen": "a", "rejected": "b"}\n',
                       "x.jsonl:2: a string holds a lone UTF-16 surrogate escape"),
    "nested_too_deeply": (b"[" * 100_000 + b"]" * 100_000 + b"\n",
                          "x.jsonl:1: nested too deeply to read"),
}


@pytest.mark.parametrize("case", sorted(JSONL_CASES))
def test_a_jsonl_row_python_cannot_take_is_named_by_row(tmp_path, case):
    data, message = JSONL_CASES[case]
    path = tmp_path / ("x.json" if case == "json_array" else "x.jsonl")
    path.write_bytes(data)
    with pytest.raises(DataError) as info:
        read_pairs(path)
    assert str(info.value).startswith(f"{tmp_path}/{message}"), str(info.value)


def test_a_surrogate_pair_is_one_character(tmp_path):
    path = tmp_path / "x.jsonl"
    path.write_bytes(b'{"prompt": "ok \\ud83d\\ude00", "chosen": "a", "rejected": "b"}\n')
    assert read_pairs(path)[0].prompt == "ok \U0001f600"
