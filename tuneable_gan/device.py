"""Per-process limits on a shared CUDA device (pure torch; no Ray).

A sweep that gives each trial a fraction of a GPU (``tune.resources.gpu: 0.25``) makes Ray pack
several trials onto one device. Ray only counts the fractions: it does not stop one trial's
caching allocator from taking the whole device, after which the others fail with out-of-memory.
``cap_memory`` caps the process at its share with ``torch.cuda.set_per_process_memory_fraction``,
so four packed trials of ``gpu: 0.25`` each keep to a quarter of the memory and an oversized
trial fails alone, with its own out-of-memory error.

The cap covers what PyTorch's allocator hands out (tensors and its cache); each process's CUDA
context (a few hundred MB) lies outside it.
"""

from __future__ import annotations

import torch


def memory_share(gpu: float) -> float | None:
    """The share of one device's memory a process given ``gpu`` GPUs may allocate: ``gpu``
    itself when it is a fraction (0 < gpu < 1), else None (no GPU, or whole GPUs, which Ray
    never shares between trials)."""
    return float(gpu) if 0.0 < gpu < 1.0 else None


def cap_memory(device: torch.device | str, gpu: float) -> float | None:
    """Cap this process's CUDA allocations on ``device`` at ``memory_share(gpu)`` of the
    device's memory; returns the share set, or None when nothing is capped (a CPU device, or
    ``gpu`` not a fraction). Call it before the first allocation on the device."""
    device = torch.device(device)
    share = memory_share(gpu)
    if device.type != "cuda" or share is None:
        return None
    torch.cuda.set_per_process_memory_fraction(share, device)
    return share
