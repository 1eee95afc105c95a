"""Shared helpers of the ADA tests: seeded generators, a generator's clone (to replay its
draws as an oracle), seeded images in [-1, 1] and scripted real logits."""

from __future__ import annotations

import torch


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def clone(g: torch.Generator) -> torch.Generator:
    """A generator that will produce exactly the draws `g` is about to produce."""
    c = torch.Generator()
    c.set_state(g.get_state())
    return c


def images(b: int = 8, c: int = 3, h: int = 32, w: int | None = None, seed: int = 1):
    return torch.rand(b, c, h, h if w is None else w, generator=gen(seed)) * 2 - 1


def logits(pos: int, neg: int, zero: int = 0) -> torch.Tensor:
    """Real logits with ``pos`` positive, ``neg`` negative and ``zero`` zero signs."""
    return torch.cat([torch.full((pos, 1), 2.5), torch.full((neg, 1), -0.7),
                      torch.zeros(zero, 1)])
