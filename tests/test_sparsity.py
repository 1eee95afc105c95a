"""Lottery-ticket mechanics (tuneable_gan.sparsity): masks, pruning rounds, rewinding."""

from __future__ import annotations

import copy
import io
from pathlib import Path

import pytest
import torch
from conftest import remaining_after
from torch import nn

from tuneable_gan.config import ModelConfig
from tuneable_gan.models import build_models
from tuneable_gan.models.base import DataSpec
from tuneable_gan.sparsity import (
    MaskSet,
    compute_masks,
    global_magnitude_masks,
    measured_sparsity,
    prunable,
    prune_count,
    rounds_for,
    snapshot,
)
from tuneable_gan.trainer import GANTrainer, update_ema

SPEC = DataSpec((1, 16, 16), 10)


def dcgan(conditional: bool = False, seed: int = 0) -> tuple[nn.Module, nn.Module]:
    torch.manual_seed(seed)
    return build_models(ModelConfig(arch="dcgan", z_dim=8, g_ch=8, d_ch=8,
                                    conditional=conditional), SPEC)


def prune_to(G: nn.Module, rounds: int, per_round: float = 0.2) -> MaskSet:
    masks = None
    for _ in range(rounds):
        masks = compute_masks(G, None, "g", masks, per_round)
        masks.apply_(G)
    return masks if masks is not None else MaskSet.dense(G)


def n_prunable(G: nn.Module) -> int:
    return sum(p.numel() for _, p in prunable(G))


# -- rounds and counts ----------------------------------------------------------------------------

def test_rounds_for_values() -> None:
    assert rounds_for(0.0) == 0
    assert rounds_for(0.2) == 1
    assert rounds_for(0.36) == 2
    assert rounds_for(0.488) == 3          # density 0.512
    assert rounds_for(0.738) == 6          # 1 - 0.8^6 = 0.737856
    assert rounds_for(0.5) == 4            # 0.488 is not enough
    assert rounds_for(0.866) == 9
    assert rounds_for(0.8926) == 10
    assert rounds_for(0.75, per_round=0.5) == 2
    with pytest.raises(ValueError):
        rounds_for(1.0)


@pytest.mark.parametrize("level", [0.2, 0.488, 0.738, 0.866])
def test_measured_density_is_exact_after_k_rounds(level: float) -> None:
    G, _ = dcgan()
    N = n_prunable(G)
    k = rounds_for(level)
    masks = prune_to(G, k)
    zeros = sum(int((p == 0).sum()) for _, p in prunable(G))
    assert zeros == N - remaining_after(N, k)
    assert int(sum(m.sum() for m in masks.masks.values())) == remaining_after(N, k)
    assert measured_sparsity(G) == (N - remaining_after(N, k)) / N
    assert abs((1 - measured_sparsity(G)) - 0.8 ** k) <= k / N
    assert masks.density() == remaining_after(N, k) / N


def test_each_round_prunes_a_share_of_the_remaining_weights() -> None:
    G, _ = dcgan()
    N = n_prunable(G)
    alive = [N]
    masks = None
    for _ in range(3):
        masks = compute_masks(G, None, "g", masks, 0.2)
        masks.apply_(G)
        alive.append(int(sum(m.sum() for m in masks.masks.values())))
    for before, after in zip(alive, alive[1:]):
        assert before - after == prune_count(before, 0.2)
    # 20% of the original count each round would leave 40% pruned after 2 rounds, not 36%.
    assert alive[2] == N - prune_count(N, 0.2) - prune_count(N - prune_count(N, 0.2), 0.2)
    assert abs(alive[2] / N - 0.64) < 2 / N


def test_global_not_layerwise() -> None:
    weights = {"small": torch.linspace(0.01, 0.05, 10), "large": torch.linspace(1.0, 10.0, 10)}
    masks = global_magnitude_masks(weights, None, per_round=0.5)
    # A layer-wise rule would prune 5 of each; the global threshold takes all of "small".
    assert not masks["small"].any()
    assert masks["large"].all()


def test_already_pruned_stay_pruned_and_ties_are_deterministic() -> None:
    w = {"a": torch.ones(10), "b": torch.ones(10)}
    m1 = global_magnitude_masks(w, None, 0.2)
    # All ties: the stable order prunes the first 4 entries of the concatenation.
    assert m1["a"].tolist() == [False] * 4 + [True] * 6 and m1["b"].all()
    w["a"][0] = 100.0  # a pruned weight that grew back must not be revived
    m2 = global_magnitude_masks(w, m1, 0.2)
    assert not m2["a"][0]
    assert sum(int(m.sum()) for m in m2.values()) == 16 - prune_count(16, 0.2)
    assert all((m2[k] <= m1[k]).all() for k in w)


def test_only_generator_conv_weights_are_pruned() -> None:
    G, D = dcgan(conditional=True)
    names = {k for k, _ in prunable(G)}
    assert names == {"blocks.0.conv.weight", "blocks.1.conv.weight", "out_conv.weight"}
    before = snapshot(G)
    prune_to(G, rounds_for(0.738))
    for k, v in G.state_dict().items():
        if k in names:
            assert (v == 0).any()
        else:  # Linear, conditional-BN embeddings, BN, biases, buffers
            assert torch.equal(v, before[k]), k
    # Spectral-normed convs expose the raw weight (D here; BigGAN's G has SN convs too).
    d_names = [k for k, _ in prunable(D)]
    assert d_names and all(k.endswith("parametrizations.weight.original") for k in d_names)


def test_dense_generator_and_toy() -> None:
    G, _ = dcgan()
    assert measured_sparsity(G) == 0.0
    assert MaskSet.dense(G).density() == 1.0
    toy_G, _ = build_models(ModelConfig(arch="toy"), DataSpec((1,), 0))
    assert prunable(toy_G) == [] and measured_sparsity(toy_G) == 0.0
    with pytest.raises(ValueError, match="no prunable"):
        compute_masks(toy_G, None, "g", None, 0.2)


# -- keeping pruned weights at zero ---------------------------------------------------------------

def pruned_values(G: nn.Module, masks: MaskSet) -> torch.Tensor:
    return torch.cat([G.get_parameter(k).detach()[~m] for k, m in masks.masks.items()])


def random_grads(G: nn.Module, gen: torch.Generator) -> None:
    for p in G.parameters():
        p.grad = torch.randn(p.shape, generator=gen)


def test_pruned_weights_stay_zero_through_adam_with_a_fresh_optimizer(tiny, tmp_path: Path) -> None:
    t = GANTrainer(tiny(sparsity__level=0.2, sparsity__round_steps=3, train__steps=1,
                        optim__g_lr=1e-2), tickets=tmp_path)
    for _ in range(3):  # the dense round: non-zero exp_avg / exp_avg_sq everywhere
        t.train_step()
    dense_opt = t.opt_g
    assert all(dense_opt.state[p]["exp_avg_sq"].ne(0).any() for _, p in prunable(t.G))
    t.phase.before_step()  # prune and rewind: every phase starts with fresh optimizers
    G, opt, masks, phase = t.G, t.opt_g, t.phase.masks, t.phase
    assert opt is not dense_opt and not opt.state and 0 < masks.density() < 1
    assert (pruned_values(G, masks) == 0).all()
    gen = torch.Generator().manual_seed(1)
    for _ in range(5):
        random_grads(G, gen)
        phase.constrain_grads(G)
        opt.step()
        # Exact without the post-step re-apply: zero grad and fresh state move nothing.
        assert (pruned_values(G, masks) == 0).all()
        phase.constrain_weights(G)
    # A real forward/backward as well (BN, conv and linear grads).
    G(torch.randn(4, 8)).square().mean().backward()
    phase.constrain_grads(G)
    opt.step()
    phase.constrain_weights(G)
    assert (pruned_values(G, masks) == 0).all()
    t.close()


def test_without_state_masking_adam_momentum_regrows_pruned_weights() -> None:
    G, _ = dcgan()
    gen = torch.Generator().manual_seed(2)
    opt = torch.optim.Adam(G.parameters(), lr=1e-2)
    random_grads(G, gen)
    opt.step()
    masks = prune_to(G, 1)
    random_grads(G, gen)
    masks.mask_grads_(G)
    opt.step()
    assert (pruned_values(G, masks) != 0).any()  # the pitfall re-apply / fresh optimizers fix
    masks.apply_(G)
    assert (pruned_values(G, masks) == 0).all()


def test_spectral_norm_generator_grads_are_masked() -> None:
    torch.manual_seed(0)
    G, _ = build_models(ModelConfig(arch="biggan", z_dim=8, g_ch=4, d_ch=4, conditional=False),
                        DataSpec((3, 32, 32), 10))
    masks = prune_to(G, 2)
    opt = torch.optim.Adam(G.parameters(), lr=1e-2)
    G(torch.randn(4, 8)).mean().backward()
    k, m = next(iter(masks.masks.items()))
    assert "parametrizations.weight.original" in k
    assert (G.get_parameter(k).grad[~m] != 0).any()  # SN gives pruned raw weights a gradient
    masks.mask_grads_(G)
    opt.step()
    assert (pruned_values(G, masks) == 0).all()
    assert measured_sparsity(G) == pytest.approx(1 - masks.density(), abs=1e-12)


def test_pruned_weights_stay_zero_through_ema_and_state_dict() -> None:
    G, _ = dcgan()
    masks = prune_to(G, 3)
    G_ema = copy.deepcopy(G).requires_grad_(False)
    masks.apply_(G_ema)
    gen = torch.Generator().manual_seed(3)
    opt = torch.optim.Adam(G.parameters(), lr=1e-2)
    for _ in range(4):
        random_grads(G, gen)
        masks.mask_grads_(G)
        opt.step()
        masks.apply_(G)
        update_ema(G_ema, G, 0.9)  # the trainer's lerp over the full state
        assert (pruned_values(G_ema, masks) == 0).all()  # lerp of 0 towards 0
        masks.apply_(G_ema)
    buf = io.BytesIO()
    torch.save({"G": G.state_dict(), "G_ema": G_ema.state_dict(), "masks": masks.state_dict(),
                "opt": opt.state_dict()}, buf)
    buf.seek(0)
    state = torch.load(buf, weights_only=True)
    G2, _ = dcgan(seed=5)
    G2.load_state_dict(state["G"])
    m2 = MaskSet(state["masks"])
    assert all(torch.equal(m2.masks[k], masks.masks[k]) for k in masks.masks)
    assert all(v.dtype == torch.bool for v in state["masks"].values())
    assert (pruned_values(G2, m2) == 0).all()
    assert measured_sparsity(G2) == measured_sparsity(G)


def test_rewind_restores_init_of_survivors_and_dense_d(tiny, tmp_path: Path) -> None:
    """Through the lottery phase: the end of round 1 prunes, and the host's ``restart_phase``
    rewinds G to init * mask (buffers too) and D to its init, dense."""
    t = GANTrainer(tiny(model__conditional=True, sparsity__level=0.2, sparsity__round_steps=1,
                        sparsity__mask_from="g", train__steps=1), tickets=tmp_path)
    G, D = t.G, t.D
    init_G, init_D = snapshot(G), snapshot(D)
    t.train_step()  # round 1: one G step
    gen = torch.Generator().manual_seed(4)
    with torch.no_grad():  # stand-in for more of a round's training
        for p in list(G.parameters()) + list(D.parameters()):
            p.add_(torch.randn(p.shape, generator=gen))
        G(torch.randn(4, 8), torch.arange(4))  # moves BN running stats
    masks = compute_masks(G, None, "g", None, 0.2)
    t.phase.before_step()  # what the next train_step does first: prune, store, rewind
    assert t.phase.stage == "train" and t.phase.masks.masks.keys() == masks.masks.keys()
    assert all(torch.equal(t.phase.masks.masks[k], masks.masks[k]) for k in masks.masks)
    for k, v in G.state_dict().items():
        if k in masks.masks:
            m = masks.masks[k]
            assert torch.equal(v[m], init_G[k][m]) and (v[~m] == 0).all()
        else:
            assert torch.equal(v, init_G[k]), k
    for k, v in D.state_dict().items():
        assert torch.equal(v, init_D[k]), k
    t.close()


def test_mask_from_g_ema_one_mask_for_both() -> None:
    G, _ = dcgan()
    G_ema = copy.deepcopy(G)
    with torch.no_grad():
        for _, p in prunable(G_ema):
            p.copy_(torch.randn(p.shape))
    from_g = compute_masks(G, G_ema, "g", None, 0.2)
    from_ema = compute_masks(G, G_ema, "g_ema", None, 0.2)
    names = [k for k, _ in prunable(G)]
    expect = global_magnitude_masks({k: G_ema.get_parameter(k) for k in names}, None, 0.2)
    assert all(torch.equal(from_ema.masks[k], expect[k]) for k in names)
    assert any(not torch.equal(from_ema.masks[k], from_g.masks[k]) for k in names)
    from_ema.apply_(G)
    from_ema.apply_(G_ema)
    assert measured_sparsity(G) == measured_sparsity(G_ema) == pytest.approx(
        1 - from_ema.density(), abs=1e-12)
