"""The reward is read at the last real token, whatever the padding and the batch neighbours."""

import pytest
import torch

from lib.models.llama import llama3_model
from lib.models.qwen2 import qwen2_model

ARCH = dict(vocab_size=64, num_layers=2, num_heads=4, num_kv_heads=2, embed_dim=32,
            intermediate_dim=64, max_seq_len=64)


def _batch(seqs, pad_id, side):
    longest = max(map(len, seqs))
    tokens = torch.full((len(seqs), longest), pad_id)
    mask = torch.zeros((len(seqs), longest), dtype=torch.bool)
    for i, s in enumerate(seqs):
        sl = slice(0, len(s)) if side == "right" else slice(longest - len(s), longest)
        tokens[i, sl], mask[i, sl] = torch.tensor(s), True
    return tokens, mask


@pytest.fixture(params=["llama3", "qwen2"])
def model(request):
    torch.manual_seed(0)
    build = llama3_model if request.param == "llama3" else qwen2_model
    return build.__wrapped__("reward", **ARCH).eval()


@torch.no_grad()
def test_reward_read_at_last_real_token_is_padding_invariant(model):
    from lib.models.reward import compute_rewards

    target = [1, 5, 9, 13, 17, 21, 2]
    neighbour = list(range(3, 40))
    alone = compute_rewards(model, *_batch([target], 0, "right"), right_padded=True)
    right = compute_rewards(model, *_batch([target, neighbour], 0, "right"), right_padded=True)
    left = compute_rewards(model, *_batch([target, neighbour], 0, "left"), right_padded=False)
    other_pad = compute_rewards(model, *_batch([target, neighbour], 7, "right"),
                                right_padded=True)
    assert right[0].item() == pytest.approx(alone[0].item(), abs=1e-5)
    assert left[0].item() == pytest.approx(alone[0].item(), abs=1e-5)
    assert other_pad[0].item() == pytest.approx(alone[0].item(), abs=1e-5)
    assert left[1].item() == pytest.approx(right[1].item(), abs=1e-5)


@torch.no_grad()
def test_reward_depends_on_the_last_real_token(model):
    from lib.models.reward import compute_rewards

    a = compute_rewards(model, *_batch([[1, 5, 9, 2], [1, 5, 9, 3]], 0, "right"),
                        right_padded=True)
    assert a[0].item() != pytest.approx(a[1].item(), abs=1e-6)


def test_dropout_is_off_by_default(model):
    assert all(layer.attn.attn_dropout == 0.0 for layer in model.layers)
    assert model.output.out_features == 1 and model.output.bias is None


@pytest.mark.parametrize("head", ["reward", "lm"])
def test_under_bf16_a_scalar_head_computes_in_fp32_and_an_lm_head_in_bf16(head):
    """FSDP2 with bf16 compute, in one process: the reward head's input is cast up and its
    matmul runs in fp32 (a bf16 reward would make close pairs ties); the vocabulary projection
    stays in bf16."""
    from lib import distributed
    from lib.parallel import fsdp

    torch.manual_seed(0)
    model = fsdp.__wrapped__(llama3_model.__wrapped__(head, **ARCH), distributed.init(),
                             param_dtype="bfloat16")
    seen = []
    model.output.register_forward_hook(lambda m, args, out: seen.append(
        (args[0].dtype, out.dtype)))
    with torch.no_grad():
        out = model(torch.randint(0, ARCH["vocab_size"], (4, 16)))
    want = torch.float32 if head == "reward" else torch.bfloat16
    assert seen == [(want, want)]
    assert out.dtype == torch.float32  # the decoder casts its output up either way
    rounded = out.to(torch.bfloat16).float()
    assert (not torch.equal(rounded, out)) == (head == "reward")
