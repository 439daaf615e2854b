"""In one process: one async save in flight at most, a W&B failure in the middle of a run that
leaves metrics.jsonl intact, and the pad id the HF export relies on."""

import json

from lib import distributed
from lib.checkpointing import Checkpointer
from lib.models.llama import llama3_model
from lib.optim import build_adamw
from lib.reporting import RunLogger


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
