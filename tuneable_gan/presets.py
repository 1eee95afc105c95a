"""Named presets: the reference recipes, as dotted config values that explicit keys override.

A run config or a sweep's base may say ``preset: biggan_cifar``; ``config.from_dict`` expands it
under the explicit keys (``tuneable-gan validate`` prints which values came from the preset).
Each value is the reference's own setting, with the file it comes from (docs/methods.md 6.1,
6.2, 3.4). Run lengths are per cell in the reference scripts; a preset sets the most common one
and the paper spaces set each cell's (``search_spaces/cifar10_table1.yaml``).
"""

from __future__ import annotations

from typing import Any

# AilsaF/DigGAN DiffAugment-biggan-cifar/scripts/*.sh and utils.py (the DiffAugment and LeCam
# BigGAN-CIFAR scripts use the same settings): docs/methods.md 6.1.
BIGGAN_CIFAR: dict[str, Any] = {
    "data.resolution": 32,
    "data.flip": True,                  # --mirror_augment
    "model.arch": "biggan",
    "model.z_dim": 128,                 # dim_z
    "model.g_ch": 64, "model.d_ch": 64,  # G_ch / D_ch 64: 256 channels in arch[32]
    "loss.name": "hinge",
    "optim.name": "adam",
    "optim.g_lr": 2e-4, "optim.d_lr": 2e-4,
    "optim.betas": [0.0, 0.999],
    "optim.batch_size": 50,             # --batch_size 50, a new real chunk per D step
    "optim.g_batch_size": 50,           # G_batch_size defaults to batch_size
    "optim.d_steps": 4,                 # --num_D_steps 4
    "optim.g_ema": 0.9999, "optim.g_ema_start": 1000,  # --ema_decay, --ema_start 1000
    "augment.advaug_form": "biggan",
    "train.steps": 250_000,             # 10000 epochs at 10%, 1000 at 100%: 250k G iterations
    "train.eval_every": 4000, "train.checkpoint_every": 4000,  # --test_every 2000-4000
    "eval.extractor": "inception",
    "eval.num_samples": 10_000,         # --num_inception_images 10000 (DigGAN scripts)
    "eval.reference": "test",           # reference moments computed with train=False
    "eval.is": True,
    "eval.g_mode": "train",             # G_ema.train() every iteration, no --G_eval_mode
    "eval.g_batch_size": 50,            # samples drawn G_batch_size at a time
}

# VITA-Group/Ultra-Data-Efficient-GAN-Training SNGAN/cfg.py, SNGAN/exps/sngan_cifar10.sh,
# SNGAN/functions.py (the lottery-ticket paper's recipe; DigGAN's SNGAN "follows Miyato et al.",
# whose recipe is the same with a linear learning-rate decay): docs/methods.md 3.4 and 6.2.
SNGAN_CIFAR: dict[str, Any] = {
    "data.resolution": 32,
    "model.arch": "sngan",
    "model.z_dim": 128,                 # latent_dim
    "model.g_ch": 64, "model.d_ch": 64,  # gf_dim 256, df_dim 128
    "loss.name": "hinge",
    "optim.name": "adam",
    "optim.g_lr": 2e-4, "optim.d_lr": 2e-4,
    "optim.betas": [0.0, 0.9],          # beta1 0.0, beta2 0.9
    "optim.batch_size": 64,             # -dis_bs 64
    "optim.g_batch_size": 128,          # -gen_bs 128
    "optim.d_steps": 5,                 # n_critic 5
    "optim.g_ema": 0.999, "optim.g_ema_start": 0,
    "optim.g_ema_buffers": False,       # avg_p.mul_(0.999).add_(0.001, p) over parameters only
    "optim.lr_schedule": "linear",      # LinearLrDecay to 0 over max_iter (--lr_decay)
    "train.steps": 50_000,              # --max_iter 50000 G iterations
    "train.eval_every": 5000, "train.checkpoint_every": 5000,
    # DigGAN's Table 1 compares every cell on the BigGAN-CIFAR protocol (docs/methods.md 5).
    "eval.extractor": "inception",
    "eval.num_samples": 10_000,
    "eval.reference": "test",
    "eval.is": True,
    "eval.g_mode": "eval",              # validate(): gen_net.eval()
}

# mit-han-lab/data-efficient-gans DiffAugment-stylegan2-pytorch/train.py, cfg 'low_shot' (the
# 100-shot runs: kimg 300, mb 8, mbstd 4, fmaps 1, lrate 0.002, gamma 10, ema 10, ramp None,
# map 2) with training/loss.py's defaults (pl_weight 2, style mixing 0.9) and
# training_loop.py's lazy intervals (G 4, D 16); DiffAugment color,translation,cutout is its
# default. One process holds the whole batch of 8 (the reference's one-GPU run).
STYLEGAN2_LOWSHOT: dict[str, Any] = {
    "model.arch": "stylegan2",
    "model.z_dim": 512, "model.w_dim": 512,      # G_kwargs z_dim = w_dim = 512
    "model.fmaps": 1.0, "model.channel_max": 512,  # channel_base = fmaps * 32768, max 512
    "model.mapping_layers": 2,                   # map=2
    "model.mbstd_group": 4, "model.mbstd_channels": 1,
    "model.style_mixing": 0.9,
    "model.d_architecture": "resnet",
    "model.conditional": False,
    "loss.name": "ns",                           # softplus: the non-saturating logistic loss
    "loss.r1_gamma": 10.0, "loss.r1_interval": 16,
    "loss.pl_weight": 2.0, "loss.pl_interval": 4, "loss.pl_decay": 0.01,
    "loss.pl_batch_shrink": 2,
    "optim.name": "adam",
    "optim.g_lr": 0.002, "optim.d_lr": 0.002,     # lrate (x 16/17 and 4/5: lazy rescaling)
    "optim.betas": [0.0, 0.99],
    "optim.batch_size": 8, "optim.g_batch_size": 8, "optim.d_steps": 1,
    "optim.g_ema_kimg": 10.0,                    # ema=10, ramp=None
    "optim.g_ema_buffers": False,                # buffers (w_avg, noise_const) copied from G
    "augment.diffaugment": "color,translation,cutout",
    "train.steps": 37_500,                       # 300 kimg at batch 8
    "train.eval_every": 5_000, "train.checkpoint_every": 5_000,  # snap 10 ticks of 4 kimg
    "eval.extractor": "inception",
    "eval.num_samples": 50_000,                  # fid50k_full: against all training images
    "eval.reference": "train",
    "eval.is": False,
}

# NVlabs/stylegan2-ada-pytorch train.py, cfg 'cifar' (the same in DiffAugment's port): 32 px,
# kimg 100000, mb 64, mbstd 32, fmaps 1, lrate 0.0025, gamma 0.01, ema 500, ramp 0.05, map 2,
# with pl_weight 0, style mixing 0 and D architecture 'orig'; --cond=1 for CIFAR-10 and ADA
# (bgc, target 0.6) as its default augmentation. Not the reference: with pl_weight 0 this
# system has no G lazy update, so G's Adam is not rescaled (the reference still scales lr by
# 4/5 and betas to the power 4/5 for G): g_lr is set to 0.0025 * 4/5; betas are shared with D.
STYLEGAN2_CIFAR: dict[str, Any] = {
    "data.resolution": 32,
    "data.flip": False,
    "model.arch": "stylegan2",
    "model.z_dim": 512, "model.w_dim": 512,
    "model.fmaps": 1.0, "model.channel_max": 512,
    "model.mapping_layers": 2,
    "model.mbstd_group": 32, "model.mbstd_channels": 1,
    "model.style_mixing": 0.0,
    "model.d_architecture": "orig",
    "loss.name": "ns",
    "loss.r1_gamma": 0.01, "loss.r1_interval": 16,
    "loss.pl_weight": 0.0,
    "optim.name": "adam",
    "optim.g_lr": 0.002, "optim.d_lr": 0.0025,
    "optim.betas": [0.0, 0.99],
    "optim.batch_size": 64, "optim.g_batch_size": 64, "optim.d_steps": 1,
    "optim.g_ema_kimg": 500.0, "optim.g_ema_rampup": 0.05,
    "optim.g_ema_buffers": False,
    "augment.ada": "bgc", "augment.ada_target": 0.6, "augment.ada_interval": 4,
    "augment.ada_kimg": 500.0,
    "train.steps": 1_562_500,                    # 100000 kimg at batch 64
    "train.eval_every": 31_250, "train.checkpoint_every": 31_250,  # 50 ticks of 4 kimg
    "eval.extractor": "inception",
    "eval.num_samples": 50_000,                  # fid50k_full
    "eval.reference": "train",
    "eval.is": False,
}

PRESETS: dict[str, dict[str, Any]] = {
    "biggan_cifar": BIGGAN_CIFAR,
    "sngan_cifar": SNGAN_CIFAR,
    "stylegan2_lowshot": STYLEGAN2_LOWSHOT,
    "stylegan2_cifar": STYLEGAN2_CIFAR,
}
