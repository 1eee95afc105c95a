"""Lottery-ticket mechanics for the generator (docs/methods.md 3.1, pitfall 7).

What is pruned: the weights of every Conv2d / ConvTranspose2d of G, nothing else (Linear layers,
embeddings, BN and all biases stay dense; D is never pruned). With spectral norm the weight that
is pruned is the raw one, ``parametrizations.weight.original``.

How: global, unstructured, by magnitude. Round r removes ``per_round`` of the weights still alive
(not of the original count), with one threshold over all prunable weights pooled together.

Keeping pruned weights exactly 0 (``MaskSet``):
- at rewind: ``apply_`` on G (and on the fresh G_ema copy);
- after every G backward: ``mask_grads_`` (spectral norm gives pruned raw weights a gradient);
- after every G optimizer step: ``apply_`` again (belt and braces against weight decay; every
  phase starts with fresh optimizers, so no momentum from a dense phase is carried over);
- after every G EMA update: ``apply_`` on G_ema (lerp of 0 towards 0 stays 0, but a G_ema not
  zeroed at rewind would otherwise keep decaying, never reaching 0).
Masks are bool tensors keyed by parameter name (= the state_dict key), so they go into
checkpoints as they are and load with ``torch.load(weights_only=True)``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping

import torch
from torch import nn
from torch.nn.utils import parametrize

Tensor = torch.Tensor

PRUNABLE_TYPES: tuple[type[nn.Module], ...] = (nn.Conv2d, nn.ConvTranspose2d)

# Levels are usually written rounded (0.738 for 1 - 0.8^6 = 0.737856): a level at most this far
# above an achievable sparsity maps to that round instead of one round more.
LEVEL_TOL = 1e-3


def prunable(G: nn.Module) -> list[tuple[str, nn.Parameter]]:
    """(name, parameter) of the weight of every Conv2d/ConvTranspose2d in ``G``, in module order.

    For a spectral-normed conv the parameter is the raw ``parametrizations.weight.original`` (the
    forward weight is computed from it). Names equal the parameters' state_dict keys.
    """
    out: list[tuple[str, nn.Parameter]] = []
    for mod_name, m in G.named_modules():
        if not isinstance(m, PRUNABLE_TYPES):
            continue
        prefix = f"{mod_name}." if mod_name else ""
        if parametrize.is_parametrized(m, "weight"):
            out.append((f"{prefix}parametrizations.weight.original",
                        m.parametrizations.weight.original))
        else:
            out.append((f"{prefix}weight", m.weight))
    return out


def rounds_for(level: float, per_round: float = 0.2, tol: float = LEVEL_TOL) -> int:
    """The number of pruning rounds for a sparsity ``level``.

    The smallest k with ``1 - (1 - per_round)^k >= level - tol``; level 0 -> 0. With the default
    ``tol`` a level written to three decimals maps to the round it names: 0.2 -> 1, 0.488 -> 3,
    0.738 -> 6 (sparsity 0.737856), 0.866 -> 9, 0.893 -> 10.
    """
    if not 0.0 <= level < 1.0:
        raise ValueError(f"sparsity level must be in [0, 1), got {level}")
    if not 0.0 < per_round < 1.0:
        raise ValueError(f"per_round must be in (0, 1), got {per_round}")
    k = 0
    while 1.0 - (1.0 - per_round) ** k < level - tol:
        k += 1
    return k


def prune_count(n_remaining: int, per_round: float) -> int:
    """How many of ``n_remaining`` live weights one round prunes: ``floor(per_round * n + 0.5)``
    (round half up, in float64)."""
    return int(math.floor(per_round * n_remaining + 0.5))


def global_magnitude_masks(weights: Mapping[str, Tensor],
                           masks: Mapping[str, Tensor] | None = None,
                           per_round: float = 0.2) -> dict[str, Tensor]:
    """One pruning round: new bool masks (True = kept) over ``weights`` pooled globally.

    Of the n entries still alive (mask True; all when ``masks`` is None), exactly
    ``prune_count(n, per_round)`` with the smallest |w| are pruned; already-pruned entries stay
    pruned whatever their value. Ties are broken by a stable sort over the weights flattened and
    concatenated in ``weights``' order (earlier entries go first), so the result is deterministic
    and the count exact.
    """
    names = list(weights)
    if not names:
        raise ValueError("no prunable weights (the generator has no conv layers)")
    flat_w = [weights[k].detach().reshape(-1) for k in names]
    device = flat_w[0].device
    if masks is None:
        alive = [torch.ones(w.numel(), dtype=torch.bool, device=device) for w in flat_w]
    else:
        missing = set(names) - set(masks)
        if missing:
            raise KeyError(f"masks lack weights {sorted(missing)}")
        alive = [masks[k].detach().reshape(-1).to(device=device, dtype=torch.bool)
                 for k in names]
    mag = torch.cat([w.to(device).abs().float() for w in flat_w])
    live = torch.cat(alive)
    live_idx = live.nonzero().squeeze(1)
    n_prune = prune_count(live_idx.numel(), per_round)
    # Sort only the live entries: a threshold value could not prune an exact count under ties.
    order = torch.sort(mag[live_idx], stable=True).indices
    keep = live.clone()
    keep[live_idx[order[:n_prune]]] = False
    out, start = {}, 0
    for k, w in zip(names, flat_w):
        out[k] = keep[start:start + w.numel()].view(weights[k].shape)
        start += w.numel()
    return out


def module_weights(module: nn.Module, names: Iterable[str]) -> dict[str, Tensor]:
    """The named parameters of ``module`` (e.g. G or G_ema), detached."""
    return {k: module.get_parameter(k).detach() for k in names}


class MaskSet:
    """G's pruning masks (bool, True = kept) by parameter name, and the ops that enforce them."""

    def __init__(self, masks: Mapping[str, Tensor]) -> None:
        self.masks: dict[str, Tensor] = {k: v.detach().to(torch.bool) for k, v in masks.items()}

    @classmethod
    def dense(cls, G: nn.Module) -> MaskSet:
        """All-True masks over ``prunable(G)`` (round 0)."""
        return cls({k: torch.ones_like(p, dtype=torch.bool) for k, p in prunable(G)})

    def __len__(self) -> int:
        return len(self.masks)

    def _pairs(self, module: nn.Module) -> Iterable[tuple[Tensor, Tensor]]:
        for k, m in self.masks.items():
            p = module.get_parameter(k)
            yield p, m.to(p.device)

    @torch.no_grad()
    def apply_(self, module: nn.Module) -> None:
        """Set the pruned weights of ``module`` (G or G_ema) to exactly 0."""
        # masked_fill rather than mul: gives +0 even where a weight is inf/nan.
        for p, m in self._pairs(module):
            p.masked_fill_(~m, 0.0)

    @torch.no_grad()
    def mask_grads_(self, module: nn.Module) -> None:
        """Zero the gradients of pruned weights; call after backward, before the optimizer step."""
        for p, m in self._pairs(module):
            if p.grad is not None:
                p.grad.masked_fill_(~m, 0.0)

    def density(self) -> float:
        """Fraction of kept entries over all masked weights."""
        total = sum(m.numel() for m in self.masks.values())
        return sum(int(m.sum()) for m in self.masks.values()) / max(total, 1)

    def state_dict(self) -> dict[str, Tensor]:
        """The masks as CPU bool tensors (checkpoint-safe)."""
        return {k: m.cpu().clone() for k, m in self.masks.items()}

def compute_masks(G: nn.Module, G_ema: nn.Module | None, mask_from: str,
                  prev: MaskSet | None, per_round: float) -> MaskSet:
    """One IMP round: masks from the magnitudes of ``G`` (``mask_from="g"``) or ``G_ema``
    (``"g_ema"``), pruning ``per_round`` of what ``prev`` keeps. One mask for both nets."""
    if mask_from not in ("g", "g_ema"):
        raise ValueError(f"mask_from must be g or g_ema, got {mask_from!r}")
    src = G if mask_from == "g" else G_ema
    if src is None:
        raise ValueError("mask_from=g_ema needs G_ema")
    names = [k for k, _ in prunable(G)]
    return MaskSet(global_magnitude_masks(module_weights(src, names),
                                          prev.masks if prev is not None else None, per_round))


def measured_sparsity(G: nn.Module) -> float:
    """Fraction of exact zeros over G's prunable weights (0.0 when G has none)."""
    ws = [p.detach() for _, p in prunable(G)]
    total = sum(w.numel() for w in ws)
    if total == 0:
        return 0.0
    return sum(int((w == 0).sum()) for w in ws) / total


def snapshot(module: nn.Module) -> dict[str, Tensor]:
    """A detached CPU copy of ``module``'s state_dict (the init to rewind to)."""
    return {k: v.detach().cpu().clone() for k, v in module.state_dict().items()}
