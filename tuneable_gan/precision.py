"""Training precision (``train.precision``), the device, and the CUDA throughput settings of a
training step.

``PRECISIONS`` maps ``train.precision`` to the context a step's forwards and losses run in:

* ``fp32``: no context at all, so an fp32 run computes exactly what it did before precisions
  existed (the golden runs hold it to that bit for bit);
* ``bf16``: ``torch.autocast(dtype=bfloat16)`` on the trainer's device (CPU autocast exists, so
  the CPU tests exercise it). Weights, optimizer state, the G EMA, BatchNorm statistics and
  spectral-norm vectors stay fp32 (autocast only casts the inputs of its listed ops); every
  network hands back fp32 (``models``), so losses, logged values, DiffAugment's random draws and
  the input-gradient norms of DigGAN / R1 / R2 / GP / DRAGAN are fp32 whatever ran inside.

Input gradients are taken with autocast switched off (``input_grad``), the pattern of PyTorch's
AMP notes for gradient penalties: the graph they differentiate was built under autocast and
keeps its dtypes; only the ops of the gradient computation itself are not re-cast.

``speed_settings`` is what a trainer on CUDA runs each G iteration in: TF32 matmuls and
convolutions and the cuDNN autotuner. ``channels_last`` is applied to the nets and the real
images on CUDA only (and ``tuneable_gan.optim`` picks the fused Adam there). None of this touches
a CPU run.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager as ContextManager
from typing import Any

import torch

from tuneable_gan.errors import ConfigError
from tuneable_gan.registry import Registry

Tensor = torch.Tensor

PRECISIONS: Registry[Callable[[torch.device], ContextManager[Any]]] = Registry("precision")


@PRECISIONS.register("fp32")
def fp32(device: torch.device) -> ContextManager[Any]:
    """No autocast: every op in the dtype of its inputs (fp32)."""
    return contextlib.nullcontext()


@PRECISIONS.register("bf16")
def bf16(device: torch.device) -> ContextManager[Any]:
    """bfloat16 autocast on ``device``'s type (its range is fp32's, so no loss scaling)."""
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


def no_autocast(device: torch.device | str) -> ContextManager[Any]:
    """A block with autocast off on ``device``'s type; nothing at all where it is already off,
    so fp32 code paths stay exactly as they were."""
    kind = torch.device(device).type
    if torch.is_autocast_enabled(kind):
        return torch.autocast(device_type=kind, enabled=False)
    return contextlib.nullcontext()


def input_grad(output: Tensor, inputs: Tensor, *, create_graph: bool,
               retain_graph: bool | None = None) -> Tensor:
    """d(output)/d(inputs) (``torch.autograd.grad`` of a scalar) with autocast off: the gradient
    of an fp32 input is fp32, and penalties on it are accumulated in fp32."""
    with no_autocast(inputs.device):
        (grad,) = torch.autograd.grad(output, inputs, create_graph=create_graph,
                                      retain_graph=retain_graph)
    return grad


def resolve_device(name: str) -> torch.device:
    """``auto`` -> cuda when available, else cpu; ``cuda`` without a GPU is a user error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError("train.device=cuda but no CUDA device is visible; use auto or cpu")
    return torch.device(name)


@contextlib.contextmanager
def _tf32_and_autotuning() -> Iterator[None]:
    flags = (torch.backends.cuda.matmul, "allow_tf32"), (torch.backends.cudnn, "allow_tf32"), (
        torch.backends.cudnn, "benchmark")
    saved = [getattr(obj, name) for obj, name in flags]
    for obj, name in flags:
        setattr(obj, name, True)
    try:
        yield
    finally:
        for (obj, name), value in zip(flags, saved):
            setattr(obj, name, value)


def speed_settings(device: torch.device) -> ContextManager[Any]:
    """The context of a whole G iteration (forwards and backwards): on CUDA, TF32 matmuls and
    convolutions and the cuDNN autotuner, restored afterwards so evaluation keeps torch's
    defaults (fp32 matmuls); nothing for any other ``device``.

    TF32 keeps fp32's range with a 10-bit mantissa in matmul inputs (torch already runs
    convolutions so by default); fp32 on a GPU was never bitwise reproducible across kernels,
    so the CPU is where runs are compared bit for bit.
    """
    return _tf32_and_autotuning() if device.type == "cuda" else contextlib.nullcontext()


def to_channels_last(modules: Sequence[torch.nn.Module], device: torch.device) -> None:
    """Convert the 4-D weights of ``modules`` to channels_last on CUDA (cuDNN's fast layout for
    convolutions, Tensor Cores included); a no-op elsewhere and for nets without 4-D weights."""
    if device.type == "cuda":
        for m in modules:
            m.to(memory_format=torch.channels_last)


def images_to(images: Tensor, device: torch.device) -> Tensor:
    """The real images on ``device``, channels_last on CUDA when they are (N, C, H, W)."""
    if device.type == "cuda" and images.dim() == 4:
        return images.to(device, memory_format=torch.channels_last)
    return images.to(device)


def indices_to(idx: Tensor, device: torch.device) -> Tensor:
    """A batch's CPU indices on ``device``: through pinned memory without blocking on CUDA (a
    copy from pageable memory would wait for the stream), a plain move elsewhere."""
    if device.type == "cuda":
        return idx.pin_memory().to(device, non_blocking=True)
    return idx.to(device)
