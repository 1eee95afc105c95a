"""tuneable-gan: hyperparameter and ablation sweeps for data-efficient GAN training."""

__version__ = "0.1.0"
