"""The 1-D two-point toy models (docs/methods.md 5.1, after ``AilsaF/RS-GAN: GAN2_2Cluster.py``).

G = Linear(1,5)-tanh-Linear(5,5)-tanh-Linear(5,1); D = Linear(1,10)-sigmoid-Linear(10,10)-
sigmoid-Linear(10,1). PyTorch default init, no spectral norm, unconditional only.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from tuneable_gan.config import ModelConfig
from tuneable_gan.errors import ConfigError
from tuneable_gan.models.base import MODELS, DataSpec, Discriminator, Generator

# The reference draws z ~ U(-5, 5).
Z_LOW, Z_HIGH = -5.0, 5.0


class ToyGenerator(Generator):
    """1-D generator; z_dim is always 1. ``stem`` is its first linear layer."""

    def __init__(self, hidden: int = 5) -> None:
        super().__init__()
        self.z_dim = 1
        self.conditional = False
        self.num_classes = 0
        self.fc1 = nn.Linear(1, hidden)
        self.body = nn.Sequential(nn.Tanh(), nn.Linear(hidden, hidden), nn.Tanh(),
                                  nn.Linear(hidden, 1))

    def sample_z(self, n: int, generator: torch.Generator, device: torch.device | str) -> Tensor:
        """Uniform on [-5, 5), shape (n, 1)."""
        # Draw on the generator's own device, then move: the same seed gives the same z anywhere.
        z = torch.rand(n, 1, generator=generator, device=generator.device)
        return (z * (Z_HIGH - Z_LOW) + Z_LOW).to(device)

    def stem(self, z: Tensor, y: Tensor | None = None) -> Tensor:
        """First linear layer: (n, 1) -> (n, hidden)."""
        return self.fc1(z).float()

    def rest(self, u: Tensor, y: Tensor | None = None) -> Tensor:
        """tanh-Linear-tanh-Linear: (n, hidden) -> (n, 1), no output activation."""
        return self.body(u).float()


class ToyDiscriminator(Discriminator):
    """1-D discriminator with sigmoid hidden units and a raw-logit output."""

    def __init__(self, hidden: int = 10) -> None:
        super().__init__()
        self.conditional = False
        self.num_classes = 0
        self.body = nn.Sequential(nn.Linear(1, hidden), nn.Sigmoid(), nn.Linear(hidden, hidden),
                                  nn.Sigmoid())
        self.fc_out = nn.Linear(hidden, 1)

    def trunk(self, x: Tensor) -> Tensor:
        """Everything up to the last linear: (n, 1) -> (n, hidden)."""
        return self.body(x).float()

    def head(self, h: Tensor, y: Tensor | None = None) -> Tensor:
        """Last linear: (n, hidden) -> (n,). ``y`` is ignored."""
        return self.fc_out(h).squeeze(1).float()


@MODELS.register("toy")
def build_toy(cfg: ModelConfig, spec: DataSpec) -> tuple[ToyGenerator, ToyDiscriminator]:
    """(G, D) for the 1-D toy; cfg.z_dim, g_ch and d_ch are ignored (the sizes are the paper's)."""
    if tuple(spec.shape) != (1,):
        raise ConfigError(f"model.arch=toy needs the 1-D toy data (data.name=toy2pt, sample shape "
                          f"(1,)); got sample shape {tuple(spec.shape)}")
    if cfg.conditional:
        raise ConfigError("model.conditional must be false for model.arch=toy; got true")
    return ToyGenerator(), ToyDiscriminator()
