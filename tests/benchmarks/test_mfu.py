"""The MFU numerator: the PaLM FLOPs formula against torch's own count of the model's work."""

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from benchmarks import mfu
from lib.models.llama import llama3_model


@pytest.mark.parametrize("seq_len", [64, 256])
def test_flops_per_token_matches_counted_forward_and_backward(seq_len):
    layers, dim, vocab = 2, 128, 512
    model = llama3_model(head="reward", vocab_size=vocab, num_layers=layers, num_heads=4,
                                num_kv_heads=4, embed_dim=dim, intermediate_dim=344,
                                max_seq_len=seq_len)
    non_embedding = sum(p.numel() for p in model.parameters()) - vocab * dim
    tokens = torch.randint(0, vocab, (4, seq_len))
    # The math attention backend runs as matmuls the counter sees (CPU flash attention is not
    # counted); like the formula, it computes every score, the causally masked ones included.
    with FlopCounterMode(display=False) as counter, sdpa_kernel(SDPBackend.MATH):
        model(tokens).sum().backward()
    counted = counter.get_total_flops() / tokens.numel()
    # The formula leaves out norms, softmax and activations, which are not matmuls.
    assert mfu.flops_per_token(non_embedding, layers, dim, seq_len) == pytest.approx(
        counted, rel=0.01)


def test_datasheet_peaks_match_the_most_specific_name():
    assert mfu.datasheet_tflops("NVIDIA H100 PCIe") == 756.0
    assert mfu.datasheet_tflops("NVIDIA H100 80GB HBM3") == 989.4
    assert mfu.datasheet_tflops("NVIDIA H200") == 989.4
    assert mfu.datasheet_tflops("cpu") is None


def test_measured_matmul_peak_is_positive_on_cpu():
    assert mfu.measured_matmul_tflops(torch.device("cpu"), torch.float32, size=256,
                                      seconds=0.1) > 0
