"""What G and D are conditioned on: nothing, class labels, or data instance priors.

One object per run answers the four questions the trainer and the evaluator ask, so neither
branches on the kind of conditioning:

* ``real(idx, flip)``: the conditioning of the real images ``idx`` of a D batch (their labels,
  or their own priors; a flipped image its flipped image's prior when those are stored);
* ``train_fakes(n, gen)``: the fakes' conditioning in a training step (uniform classes, or the
  priors of uniformly drawn training images, as IC-GAN trains);
* ``eval_fakes(n, gen)``: the fakes' conditioning for evaluation (uniform classes, or draws
  from the density fitted to the stored priors: ``prior.sampler``), on the CPU;
* ``grid(n, gen)``: the conditioning of a sample grid (classes in order, or fitted draws).

The priors are computed once from the clean training images (``prior.bank``) and never from a
fake or an augmented image; docs/methods.md section 9.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import torch

from tuneable_gan.config import Config
from tuneable_gan.datasets import RealData
from tuneable_gan.models import DataSpec
from tuneable_gan.prior.bank import PriorBank, prior_bank
from tuneable_gan.prior.samplers import FittedSampler, fit_sampler

Tensor = torch.Tensor


class Conditioning:
    """No conditioning: every answer is None (the unconditional GAN)."""

    kind = "none"
    protocol = ""  # what ``eval_protocol`` adds: how evaluation's conditioning was drawn

    def real(self, idx: Tensor, flip: Tensor | None) -> Tensor | None:
        """Conditioning of the real images ``idx`` (``flip``: which of them are flipped)."""
        return None

    def train_fakes(self, n: int, generator: torch.Generator) -> Tensor | None:
        """Conditioning of ``n`` fakes of a training step, drawn from ``generator``."""
        return None

    def eval_fakes(self, n: int, generator: torch.Generator) -> Tensor | None:
        """Conditioning of ``n`` evaluated fakes, on the CPU, drawn from ``generator``."""
        return None

    def grid(self, n: int, generator: torch.Generator) -> Tensor | None:
        """Conditioning of an ``n``-image sample grid, on the run's device."""
        return None


class ClassConditioning(Conditioning):
    """Class labels: the real images' own, uniform classes for fakes, classes in order in a
    grid. The draws are those the class-conditional runs always made (golden runs hold them)."""

    kind = "class"

    def __init__(self, labels: Tensor, num_classes: int, device: torch.device) -> None:
        self.labels, self.num_classes, self.device = labels.to(device), num_classes, device

    def real(self, idx: Tensor, flip: Tensor | None) -> Tensor:
        return self.labels[idx]

    def train_fakes(self, n: int, generator: torch.Generator) -> Tensor:
        return torch.randint(0, self.num_classes, (n,), generator=generator, device=self.device)

    def eval_fakes(self, n: int, generator: torch.Generator) -> Tensor:
        return torch.randint(0, self.num_classes, (n,), generator=generator)

    def grid(self, n: int, generator: torch.Generator) -> Tensor:
        return torch.arange(n, device=self.device) % self.num_classes


class PriorConditioning(Conditioning):
    """Data instance priors: a real image is scored with its own prior, a training fake gets
    the prior of a uniformly drawn training image, evaluation and grids draw from the fitted
    density (``prior.sampler``)."""

    kind = "prior"

    def __init__(self, bank: PriorBank, sampler: FittedSampler, device: torch.device) -> None:
        self.features = bank.features.to(device)
        self.flipped = bank.flipped.to(device) if bank.flipped is not None else None
        self.sampler, self.device = sampler, device
        self.protocol = f"prior={bank.network},sampler={sampler.description}"

    def real(self, idx: Tensor, flip: Tensor | None) -> Tensor:
        p = self.features[idx]
        if flip is None or self.flipped is None:
            return p
        return torch.where(flip[:, None], self.flipped[idx], p)

    def train_fakes(self, n: int, generator: torch.Generator) -> Tensor:
        idx = torch.randint(0, len(self.features), (n,), generator=generator, device=self.device)
        return self.features[idx]

    def eval_fakes(self, n: int, generator: torch.Generator) -> Tensor:
        return self.sampler.sample(n, generator)

    def grid(self, n: int, generator: torch.Generator) -> Tensor:
        return self.sampler.sample(n, generator).to(self.device)


def data_key(cfg: Config) -> str:
    """The training set's identity for the prior cache: data set, size and subset."""
    d = cfg.data
    return (f"{d.name}:{d.root or ''}:res{d.resolution}:frac{d.fraction!r}:"
            f"{d.subset}:{d.subset_seed}")


def instance_priors(cfg: Config, data: RealData, device: torch.device | str = "cpu",
                    cache_dir: str | Path | None = None) -> PriorBank | None:
    """The stored priors of ``data`` (the run's clean training images) for ``prior.network``,
    computed once on ``device`` and cached (on the CPU); None when ``prior.network`` is none."""
    if cfg.prior.network == "none":
        return None
    flip = cfg.data.flip and cfg.prior.flip_features
    # On the run's device: a ResNet-50 over thousands of 224 px images is a GPU job.
    bank = prior_bank(data.images.to(device), data_key(cfg), cfg.prior, flip,
                      Path(cache_dir) if cache_dir is not None else None)
    flipped = bank.flipped.cpu() if bank.flipped is not None else None
    return dataclasses.replace(bank, features=bank.features.cpu(), flipped=flipped)


def data_spec(data: RealData, bank: PriorBank | None) -> DataSpec:
    """What the models are built for: the data's shape and classes, and the prior's size."""
    return DataSpec(data.shape, data.num_classes, bank.dim if bank is not None else 0)


def build_conditioning(cfg: Config, data: RealData, bank: PriorBank | None,
                       device: torch.device) -> Conditioning:
    """The run's conditioning for its resolved config (``model.conditional`` resolved)."""
    if bank is not None:
        return PriorConditioning(bank, fit_sampler(bank.features, cfg.prior), device)
    if cfg.model.conditional:
        return ClassConditioning(data.labels, data.num_classes, device)
    return Conditioning()


__all__ = ["ClassConditioning", "Conditioning", "PriorConditioning", "build_conditioning",
           "data_key", "data_spec", "instance_priors"]
