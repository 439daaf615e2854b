"""Model FLOPs utilization: the training FLOPs a model needs per token, and the peaks to divide by.

MFU = (model FLOPs per token x tokens/s) / peak FLOP/s, with model FLOPs counted as in PaLM
(Chowdhery et al., 2022, appendix B): 6N for the weight matmuls of forward and backward (N the
non-embedding parameters) plus 12 L d T for attention scores and values (L layers, width d,
sequence length T), recomputation not counted. Two peaks are used: the accelerator's datasheet
figure for dense bf16 where it is known, and a dense matmul measured on the same device (the
only peak there is for a CPU).
"""

import time

import torch

# Dense (no sparsity) bf16 tensor-core TFLOP/s from NVIDIA's datasheets; matched on the device
# name, most specific first.
DATASHEET_BF16_TFLOPS = (("H100 PCIe", 756.0), ("H100 NVL", 835.0), ("H100", 989.4),
                         ("H200", 989.4), ("A100", 312.0), ("L40S", 362.1))


def flops_per_token(non_embedding_params: int, num_layers: int, embed_dim: int,
                    seq_len: float) -> float:
    """Training FLOPs per token (forward and backward), PaLM appendix B."""
    return 6.0 * non_embedding_params + 12.0 * num_layers * embed_dim * seq_len


def datasheet_tflops(device_name: str):
    """The datasheet's dense bf16 TFLOP/s for a known accelerator name, else None."""
    for key, tflops in DATASHEET_BF16_TFLOPS:
        if key in device_name:
            return tflops
    return None


def measured_matmul_tflops(device: torch.device, dtype: torch.dtype, size: int = 4096,
                           seconds: float = 2.0) -> float:
    """TFLOP/s of a square dense matmul repeated for about `seconds` on `device`."""
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    _sync(device)
    torch.matmul(a, b)  # warm-up (kernel selection, allocator)
    _sync(device)
    count, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        torch.matmul(a, b)
        count += 1
        if device.type == "cuda" and count % 10 == 0:
            _sync(device)
    _sync(device)
    return 2.0 * size ** 3 * count / (time.perf_counter() - t0) / 1e12


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
