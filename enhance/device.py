"""Device, dtype and memory budget for one enhance replica.

Ray's fractional GPUs share memory without isolation, so each GPU stage caps itself: the fraction
(Settings.gpu_memory_fraction; a Serve replica sets it to its GPU reservation, see
deployments/common.py) is told to the CUDA caching allocator once per process
(set_per_process_memory_fraction), and tiles and batches are sized to fit it.
"""
from __future__ import annotations

import logging

import torch

log = logging.getLogger("personaforge.enhance")

CPU_BUDGET_BYTES = 2 * 1024**3  # working memory we allow ourselves on a CPU replica
GPU_RESERVE_BYTES = 512 * 1024**2  # allocator fragmentation + cuDNN workspaces, kept out of the budget
PRECISIONS = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}
# What a CUDA process holds outside PyTorch's caching allocator (its context and loaded kernel
# modules: 0.3-0.6 GiB on Hopper with lazy loading), which the allocator's cap does not count.
# A replica's share of the card must hold both, so the allocator gets the share less this.
CONTEXT_RESERVE_BYTES = 768 * 1024**2
_process_caps: dict[int, float] = {}  # GPU index -> the share this process is capped at


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


def allocator_fraction(share: float, total_bytes: int) -> float:
    """The caching allocator's cap for a process whose share of the card is `share`: the share
    less the context it holds outside the allocator (CONTEXT_RESERVE_BYTES), so the whole process
    stays inside its share as nvidia-smi counts it; never below half the share. A whole card
    (share 1) is not capped lower: nothing else shares it."""
    if share >= 1.0:
        return share
    return max(share - CONTEXT_RESERVE_BYTES / total_bytes, share / 2)


def cap_process_memory(index: int, fraction: float) -> float:
    """Keep this process on GPU `index` inside `fraction` of its memory (the allocator capped at
    allocator_fraction), once: every model of a process lives under the one cap, so the first
    fraction set stays (a different later one is logged and ignored). Returns the fraction (the
    share) in force."""
    if index not in _process_caps:
        total = torch.cuda.get_device_properties(index).total_memory
        torch.cuda.set_per_process_memory_fraction(allocator_fraction(fraction, total), index)
        _process_caps[index] = fraction
    elif _process_caps[index] != fraction:
        log.warning("GPU %d memory is already capped at %.3f for this process; ignoring %.3f",
                    index, _process_caps[index], fraction)
    return _process_caps[index]


def memory_budget(device: torch.device, memory_fraction: float | None, weight_bytes: int) -> int:
    """Bytes left for activations, applying the per-process cap when one is given.

    Called after the model's weights are on the device: on a GPU they (and every other model
    this process already holds) are counted as allocated; on the CPU `weight_bytes` is taken off.
    """
    if memory_fraction is not None and not 0.0 < memory_fraction <= 1.0:
        raise ValueError(f"memory_fraction must be in (0, 1], got {memory_fraction}")
    if device.type != "cuda":
        return max(CPU_BUDGET_BYTES - weight_bytes, 64 * 1024**2)
    index = device.index if device.index is not None else torch.cuda.current_device()
    if memory_fraction is None:
        # No cap given: size from what is free now (other replicas may share this GPU).
        free, _ = torch.cuda.mem_get_info(index)
        return max(free - GPU_RESERVE_BYTES, 64 * 1024**2)
    fraction = cap_process_memory(index, memory_fraction)
    total = torch.cuda.get_device_properties(index).total_memory
    cap = int(total * allocator_fraction(fraction, total))
    return max(cap - torch.cuda.memory_allocated(index) - GPU_RESERVE_BYTES, 64 * 1024**2)


def module_bytes(module: torch.nn.Module) -> int:
    return sum(t.numel() * t.element_size() for t in list(module.parameters()) + list(module.buffers()))


def to_memory_format(module: torch.nn.Module, memory_format: torch.memory_format) -> torch.nn.Module:
    """Re-lay the 4-D weights of `module` (in place); others (e.g. StyleGAN2's 5-D) stay as they are."""
    for param in module.parameters():
        if param.dim() == 4:
            param.data = param.data.contiguous(memory_format=memory_format)
    return module
