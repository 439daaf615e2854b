"""In one process: one async save in flight at most, a W&B failure in the middle of a run that
leaves metrics.jsonl intact, the pad id the HF export relies on, and BOS/EOS from a real
model's tokenizer files."""

import json

import pytest

from lib import distributed
from lib.checkpointing import Checkpointer
from lib.models.llama import llama3_model
from lib.optim import build_adamw
from lib.reporting import RunLogger
from tests.conftest import DEMO as DEMO_DIR


def test_an_async_save_completes_before_the_next_one_starts(tmp_path):
    distributed.init()
    try:
        model = llama3_model.__wrapped__("reward", vocab_size=32, num_layers=1, num_heads=2,
                                         num_kv_heads=1, embed_dim=16, intermediate_dim=32,
                                         max_seq_len=16)
        optimizer = build_adamw.__wrapped__(model, lr=1e-3)
        checkpointer = Checkpointer(str(tmp_path), async_save=True, keep_last=0)
        checkpointer.save(1, model, optimizer, {"step": 1}, "x = 1\n")
        assert checkpointer._pending is not None  # step 1 is still being written
        checkpointer.save(2, model, optimizer, {"step": 2}, "x = 1\n")
        # starting step 2 first finished step 1: never two in flight
        assert checkpointer.complete_steps() == [1]
        checkpointer.wait()
        assert checkpointer.complete_steps() == [1, 2] and checkpointer._pending is None
    finally:
        distributed.shutdown()


def test_a_wandb_failure_mid_run_disables_wandb_and_keeps_the_metrics(tmp_path, monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "offline")
    (tmp_path / "operative_config.gin").write_text("x = 1\n")
    logger = RunLogger(str(tmp_path), enabled=True)
    logger.start("run", {"x": 1})
    logger.log(1, {"train/loss": 0.5})
    logger._run.finish()  # the W&B run goes away under the logger, as a crashed service would
    logger.log(2, {"train/loss": 0.4})
    logger.summary({"final/loss": 0.4})
    logger.finish()
    assert logger._run is None
    steps = [json.loads(line)["step"] for line in (tmp_path / "metrics.jsonl").read_text()
             .splitlines()]
    assert steps == [1, 2]
    assert json.loads((tmp_path / "summary.json").read_text())["final/loss"] == 0.4


def _tokenizer_dir(tmp_path, pad_token, rename_pad=False):
    """The demo tokenizer with another pad_token setting, and optionally no <|pad|> token."""
    from tests.conftest import DEMO

    d = tmp_path / "tok"
    d.mkdir(parents=True)
    text = (DEMO / "tokenizer.json").read_text()
    (d / "tokenizer.json").write_text(text.replace("<|pad|>", "<|spare|>") if rename_pad
                                      else text)
    config = json.loads((DEMO / "tokenizer_config.json").read_text())
    config["pad_token"] = pad_token
    (d / "tokenizer_config.json").write_text(json.dumps(config))
    return d


def test_the_pad_id_falls_back_to_a_reserved_pad_token_then_to_eos(tmp_path):
    from lib.data.tokenizer import Tokenizer

    eos_as_pad = Tokenizer(_tokenizer_dir(tmp_path / "a", "<|end_of_text|>"))
    assert eos_as_pad.pad_id != eos_as_pad.eos_id
    assert eos_as_pad.pad_id == eos_as_pad._tt.tokenizer.token_to_id("<|pad|>")
    nothing = Tokenizer(_tokenizer_dir(tmp_path / "b", None, rename_pad=True))
    assert nothing.pad_id == nothing.eos_id


def test_a_null_bos_token_takes_the_generation_configs_and_bad_files_are_named(tmp_path):
    """Qwen2.5 ships tokenizer_config.json with "bos_token": null and its BOS id in
    generation_config.json; torchtune 0.6.1 alone refuses that directory."""
    from lib.data.tokenizer import Tokenizer

    d = _tokenizer_dir(tmp_path / "qwen", "<|pad|>")
    config = json.loads((d / "tokenizer_config.json").read_text())
    (d / "tokenizer_config.json").write_text(json.dumps({**config, "bos_token": None}))
    bos = Tokenizer(DEMO_DIR).bos_id
    (d / "generation_config.json").write_text(json.dumps({"bos_token_id": bos,
                                                          "eos_token_id": [7, 8]}))
    tok = Tokenizer(d)
    assert (tok.bos_id, tok.eos_id) == (bos, Tokenizer(DEMO_DIR).eos_id)
    assert tok.encode("hi", add_bos=True, add_eos=False)[0] == bos
    (d / "generation_config.json").unlink()
    with pytest.raises(ValueError, match=rf"^{d}: neither tokenizer_config.json .* names one "
                       r"BOS token the tokenizer knows \(found None\)$"):
        Tokenizer(d)
    (d / "tokenizer_config.json").write_text("{bad")
    with pytest.raises(ValueError, match=rf"^{d}: its tokenizer files cannot be read: "):
        Tokenizer(d)
    (d / "tokenizer_config.json").unlink()
    with pytest.raises(FileNotFoundError, match=rf"^{d}: no tokenizer_config.json"):
        Tokenizer(d)


def test_a_chat_template_renders_as_transformers_does_and_its_failures_name_the_row(tmp_path):
    """raise_exception and loop controls, as HF templates use them; a syntax error is found
    at config-check time, a refusal names the data row."""
    from lib.data.encoding import encode_pairs
    from lib.data.sources import DataError, PreferencePair
    from lib.data.tokenizer import Tokenizer, _check

    d = _tokenizer_dir(tmp_path / "t", "<|pad|>")
    config = json.loads((d / "tokenizer_config.json").read_text())
    config["chat_template"] = (
        "{% for m in messages %}{% if m['role'] == 'system' %}"
        "{{ raise_exception('System roles are not supported') }}{% endif %}"
        "{% if loop.index > 9 %}{% break %}{% endif %}<|{{ m['role'] }}|>{{ m['content'] }}"
        "{% endfor %}")
    (d / "tokenizer_config.json").write_text(json.dumps(config))
    tok = Tokenizer(d)
    assert tok.render([{"role": "user", "content": "hi"}]) == "<|user|>hi"
    pair = PreferencePair([{"role": "system", "content": "be brief"}],
                          [{"role": "assistant", "content": "a"}],
                          [{"role": "assistant", "content": "b"}], None, "f.jsonl:7")
    with pytest.raises(DataError, match=rf"^f.jsonl:7: the chat template of {d}/"
                       "tokenizer_config.json failed on this conversation: System roles are "
                       "not supported$"):
        encode_pairs([pair], tok, 128, "truncate")

    class View:
        @staticmethod
        def get(name, arg):
            return str(d)

    assert _check(View) == []
    config["chat_template"] = "{% for m in messages %}{{ m.content }"
    (d / "tokenizer_config.json").write_text(json.dumps(config))
    assert _check(View) == [("path", f"{d}/tokenizer_config.json: its chat_template is not "
                                     "valid jinja2 (line 1: unexpected '}')")]
