"""The HF export of a trained run scores like the run's own checkpoint, in transformers too."""

import json

import pytest
import torch
from torch.distributed.checkpoint.format_utils import dcp_to_torch_save

from lib.models.hf import hf_model
from lib.models.llama import convert, llama3_model
from lib.models.reward import compute_rewards
from tests.conftest import demo_batch, run_launcher

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("export") / "w"
    proc = run_launcher(["--gin_file=gin/reward.gin", "--gin_file=gin/debug/smoke.gin",
                         "--gin_bindings=Trainer.export_hf=True",
                         "--gin_bindings=RunLogger.use_wandb=False", f"--workdir={workdir}"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    return workdir


@torch.no_grad()
def test_export_scores_like_the_final_checkpoint(exported, tmp_path):
    hf_dir = exported / "hf"
    config = json.loads((hf_dir / "config.json").read_text())
    assert config["architectures"] == ["LlamaForSequenceClassification"]
    assert config["num_labels"] == 1 and config["pad_token_id"] == 2
    assert sorted(p.name for p in hf_dir.iterdir()) == [
        "config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"]
    dcp_to_torch_save(str(exported / "checkpoints" / "step_4"), str(tmp_path / "c.pt"))
    trained = llama3_model.__wrapped__("reward", **convert.architecture_from_hf(config))
    trained.load_state_dict(torch.load(tmp_path / "c.pt", weights_only=False)["model"])
    tokens, mask = demo_batch(hf_dir)
    want = compute_rewards(trained.eval(), tokens, mask, right_padded=True)
    ours = compute_rewards(hf_model.__wrapped__("reward", str(hf_dir), "llama").eval(), tokens,
                           mask, right_padded=True)
    torch.testing.assert_close(ours, want)

    transformers = pytest.importorskip("transformers")
    hf = transformers.AutoModelForSequenceClassification.from_pretrained(str(hf_dir)).eval()
    theirs = hf(input_ids=tokens, attention_mask=mask.long()).logits[:, 0]
    torch.testing.assert_close(theirs, want, atol=1e-5, rtol=1e-5)
