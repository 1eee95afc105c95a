"""Shared fixtures (no tests/__init__.py: torch-fidelity installs a top-level `tests`)."""

from __future__ import annotations

import pytest
import torch

from tuneable_gan.config import Config, from_dict

TINY = {
    "data.name": "digits", "data.fraction": 0.1, "data.resolution": 8,
    "model.arch": "dcgan", "model.z_dim": 8, "model.g_ch": 8, "model.d_ch": 8,
    "optim.batch_size": 8, "optim.d_steps": 2, "optim.g_ema": 0.9, "optim.g_ema_start": 2,
    "regularizer.name": "diggan", "regularizer.weight": 10.0,
    "augment.diffaugment": "color,translation,cutout",
    "train.steps": 6, "train.eval_every": 3, "train.checkpoint_every": 3, "train.log_every": 1,
    "train.device": "cpu",
}


def tiny_config(**dotted: object) -> Config:
    """A CPU-second-sized digits config; keyword keys use '__' for '.'."""
    return from_dict(TINY | {k.replace("__", "."): v for k, v in dotted.items()})


@pytest.fixture(autouse=True)
def _few_threads():
    torch.set_num_threads(1)
    yield


@pytest.fixture
def tiny():
    return tiny_config
