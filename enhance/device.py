"""Device, dtype and memory budget for one enhance replica.

Ray's fractional GPUs share memory without isolation, so each GPU stage caps itself: given a
fraction, we tell the CUDA caching allocator (set_per_process_memory_fraction) and size tiles and
batches from the same budget.
"""
from __future__ import annotations

import torch

CPU_BUDGET_BYTES = 2 * 1024**3  # working memory we allow ourselves on a CPU replica
GPU_RESERVE_BYTES = 512 * 1024**2  # allocator fragmentation + cuDNN workspaces, kept out of the budget
PRECISIONS = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}


def resolve_device(device: str | torch.device | None) -> torch.device:
    if device is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def pick_dtype(device: torch.device, precision: str | None) -> torch.dtype:
    """fp16 by default on GPU, fp32 on CPU (half precision convs on CPU are slow and lossy)."""
    if precision is not None and precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {sorted(PRECISIONS)}, got {precision!r}")
    if device.type != "cuda":
        return torch.float32
    return PRECISIONS[precision or "fp16"]


def memory_budget(device: torch.device, memory_fraction: float | None, weight_bytes: int) -> int:
    """Bytes left for activations after weights, applying the per-process cap when one is given."""
    if memory_fraction is not None and not 0.0 < memory_fraction <= 1.0:
        raise ValueError(f"memory_fraction must be in (0, 1], got {memory_fraction}")
    if device.type != "cuda":
        return max(CPU_BUDGET_BYTES - weight_bytes, 64 * 1024**2)
    index = device.index if device.index is not None else torch.cuda.current_device()
    if memory_fraction is None:
        # No cap given: size from what is free now (other replicas may share this GPU). Called
        # after the weights are on the device, so they are already out of `free`.
        free, _ = torch.cuda.mem_get_info(index)
        return max(free - GPU_RESERVE_BYTES, 64 * 1024**2)
    # The cap is per process: a replica holding several models should pass one fraction for all.
    torch.cuda.set_per_process_memory_fraction(memory_fraction, index)
    total = int(torch.cuda.get_device_properties(index).total_memory * memory_fraction)
    return max(total - weight_bytes - GPU_RESERVE_BYTES, 64 * 1024**2)


def module_bytes(module: torch.nn.Module) -> int:
    return sum(t.numel() * t.element_size() for t in list(module.parameters()) + list(module.buffers()))


def to_memory_format(module: torch.nn.Module, memory_format: torch.memory_format) -> torch.nn.Module:
    """Re-lay the 4-D weights of `module` (in place); others (e.g. StyleGAN2's 5-D) stay as they are."""
    for param in module.parameters():
        if param.dim() == 4:
            param.data = param.data.contiguous(memory_format=memory_format)
    return module
