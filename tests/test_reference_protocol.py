"""The reference recipes: presets against the reference scripts' settings (written out here from
the scripts, not from the package), and the settings the presets need: a separate G batch, a
linear learning-rate decay, a parameters-only G EMA, the first-k subset, the extractor that
follows the dataset, and the penalty logged only on the D steps that carry it."""

from __future__ import annotations

import copy
import math
import subprocess
import sys

import numpy as np
import pytest
import torch
from conftest import tiny_config

from tuneable_gan.config import from_dict
from tuneable_gan.data import fraction_indices
from tuneable_gan.errors import ConfigError
from tuneable_gan.models import DataSpec
from tuneable_gan.resolve import resolve
from tuneable_gan.trainer import GANTrainer, update_ema

CIFAR = DataSpec((3, 32, 32), 10)

# AilsaF/DigGAN DiffAugment-biggan-cifar/scripts/*.sh and utils.py defaults: --batch_size 50,
# --num_D_steps 4, --ema_start 1000, --mirror_augment, --num_inception_images 10000, G_lr/D_lr
# 2e-4, G_B1/D_B1 0, G_B2/D_B2 0.999, ema_decay 0.9999, dim_z 128, G_ch/D_ch 64, hinge; FID
# against the test-set moments; G_ema sampled in train mode, G_batch_size (= batch_size) at a time.
BIGGAN_REFERENCE = {
    "model.arch": "biggan", "model.z_dim": 128, "model.g_ch": 64, "model.d_ch": 64,
    "model.conditional": True, "loss.name": "hinge", "optim.name": "adam",
    "optim.g_lr": 2e-4, "optim.d_lr": 2e-4, "optim.betas": [0.0, 0.999],
    "optim.batch_size": 50, "optim.g_batch_size": 50, "optim.d_steps": 4,
    "optim.g_ema": 0.9999, "optim.g_ema_start": 1000, "optim.g_ema_buffers": True,
    "optim.lr_schedule": "constant", "data.flip": True, "data.resolution": 32,
    "eval.extractor": "inception", "eval.num_samples": 10000, "eval.reference": "test",
    "eval.is": True, "eval.g_mode": "train", "eval.g_batch_size": 50,
    "augment.advaug_form": "biggan", "train.steps": 250000,
}
# VITA-Group/Ultra-Data-Efficient-GAN-Training SNGAN/exps/sngan_cifar10.sh and cfg.py:
# -gen_bs 128 -dis_bs 64 --max_iter 50000 --latent_dim 128 --gf_dim 256 --df_dim 128 --g_lr/d_lr
# 2e-4 --beta1 0 --beta2 0.9 --n_critic 5; EMA 0.999 of the parameters; LinearLrDecay to 0;
# validate() samples with gen_net.eval().
SNGAN_REFERENCE = {
    "model.arch": "sngan", "model.z_dim": 128, "model.g_ch": 64, "model.d_ch": 64,
    "model.conditional": False, "loss.name": "hinge", "optim.g_lr": 2e-4, "optim.d_lr": 2e-4,
    "optim.betas": [0.0, 0.9], "optim.batch_size": 64, "optim.g_batch_size": 128,
    "optim.d_steps": 5, "optim.g_ema": 0.999, "optim.g_ema_start": 0,
    "optim.g_ema_buffers": False, "optim.lr_schedule": "linear", "train.steps": 50000,
    "eval.g_mode": "eval", "augment.advaug_form": "sngan",
}


@pytest.mark.parametrize("preset, reference", [("biggan_cifar", BIGGAN_REFERENCE),
                                               ("sngan_cifar", SNGAN_REFERENCE)])
def test_a_bare_preset_run_resolves_to_the_reference_settings(preset, reference):
    cfg = resolve(from_dict({"preset": preset, "data.name": "cifar10"}), CIFAR).flat()
    assert {k: cfg[k] for k in reference} == reference


def test_explicit_keys_override_the_preset():
    cfg = from_dict({"preset": "biggan_cifar", "optim.d_steps": 2, "data.name": "cifar10"})
    assert cfg.optim.d_steps == 2 and cfg.optim.batch_size == 50


def test_unknown_preset_is_one_line_naming_the_valid_ones():
    with pytest.raises(ConfigError) as e:
        from_dict({"preset": "biggan"})
    assert e.value.problems == ["preset must be one of biggan_cifar, sngan_cifar, "
                                "stylegan2_lowshot, stylegan2_cifar; got 'biggan'"]


def test_validate_says_which_values_came_from_the_preset(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("preset: biggan_cifar\ndata: {name: cifar10}\noptim: {d_steps: 2}\n")
    out = subprocess.run([sys.executable, "-m", "tuneable_gan.cli", "validate", str(path)],
                         capture_output=True, text=True, check=True)
    assert "# optim.batch_size: 50 from preset biggan_cifar" in out.stderr
    assert "optim.d_steps" not in out.stderr  # explicit, not from the preset
    assert "d_steps: 2" in out.stdout


def test_the_extractor_follows_the_dataset():
    def extractor(name: str, spec: DataSpec) -> str:
        return resolve(from_dict({"data.name": name, "model.arch": "dcgan"}), spec).eval.extractor

    assert extractor("digits", DataSpec((1, 16, 16), 10)) == "digits"
    assert extractor("cifar10", CIFAR) == "inception"
    assert extractor("faces100", DataSpec((3, 16, 16), 0)) == "inception"
    toy = from_dict({"data.name": "toy2pt", "model.arch": "toy"})
    assert resolve(toy, DataSpec((1,), 0)).eval.extractor == "toy"


def test_the_g_update_uses_its_own_batch_size():
    t = GANTrainer(tiny_config(optim__g_batch_size=5, optim__d_steps=2))
    drawn = []
    sample_z = t.G.sample_z
    t.G.sample_z = lambda n, gen, device: drawn.append(n) or sample_z(n, gen, device)
    t.train_step()
    assert drawn == [8, 8, 5]  # two D steps on the D batch, then the G batch
    assert t.images_seen == 16  # reals seen by D


def test_linear_lr_decays_to_zero_over_the_run_and_resumes():
    steps = 5
    t = GANTrainer(tiny_config(optim__lr_schedule="linear", train__steps=steps,
                               optim__g_lr=1e-3, optim__d_lr=4e-3))
    lrs = []
    for _ in range(steps):
        t.train_step()
        lrs.append((t.opt_g.param_groups[0]["lr"], t.opt_d.param_groups[0]["lr"]))
    # The lr of iteration k (0-based) is base * (1 - k / steps), set before its updates.
    assert lrs == [(1e-3 * (1 - k / steps), 4e-3 * (1 - k / steps)) for k in range(steps)]
    constant = GANTrainer(tiny_config())
    constant.train_step()
    assert constant.opt_g.param_groups[0]["lr"] == 2e-4


def test_parameters_only_ema_copies_the_buffers():
    G = GANTrainer(tiny_config()).G
    G_ema = copy.deepcopy(G)
    with torch.no_grad():
        for p in G.parameters():
            p.add_(1.0)
        for b in G.buffers():
            if b.is_floating_point():
                b.add_(3.0)
    before = {k: v.clone() for k, v in G_ema.state_dict().items()}
    update_ema(G_ema, G, 0.9, buffers=False)
    params = dict(G.named_parameters())
    for k, v in G_ema.state_dict().items():
        src = G.state_dict()[k]
        if k in params:
            torch.testing.assert_close(v, 0.9 * before[k] + 0.1 * src, rtol=1e-6, atol=1e-6)
        else:
            assert torch.equal(v, src), k  # BN statistics (and any other buffer): G's own


def test_first_k_subset_is_the_first_images():
    assert fraction_indices(50, 0.1, seed=3, how="first").tolist() == [0, 1, 2, 3, 4]
    random = fraction_indices(50, 0.1, seed=3)
    assert sorted(random.tolist()) == sorted(np.random.RandomState(3).choice(50, 5, False))
    t = GANTrainer(tiny_config(data__subset="first"))
    full = GANTrainer(tiny_config(data__fraction=1.0))
    k = int(len(full.data) * 0.1)
    assert torch.equal(t.data.images, full.data.images[:k])


def test_reg_loss_is_the_penalty_of_the_d_step_that_carries_it():
    t = GANTrainer(tiny_config(optim__d_steps=4))
    carried = []
    penalty = t.reg.penalty
    t.reg.penalty = lambda batch: carried.append(penalty(batch)) or carried[-1]
    m = t.train_step()
    assert len(carried) == 1  # DigGAN: the first of the 4 D steps
    assert m["reg_loss"] == carried[0].item() and m["reg_loss"] > 0
    assert math.isfinite(m["d_loss"])
