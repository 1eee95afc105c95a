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

PRESETS: dict[str, dict[str, Any]] = {
    "biggan_cifar": BIGGAN_CIFAR,
    "sngan_cifar": SNGAN_CIFAR,
}
