"""Data instance priors (docs/methods.md 9): the frozen prior networks (``networks``), the
cached bank of each training image's prior (``bank``) and the densities evaluation draws
priors from (``samplers``)."""

from __future__ import annotations

from tuneable_gan.prior.bank import PriorBank, prior_bank
from tuneable_gan.prior.networks import (
    PRIOR_NETWORKS,
    PriorNet,
    build_prior_network,
    network_tag,
)
from tuneable_gan.prior.samplers import PRIOR_SAMPLERS, FittedSampler, fit_sampler

__all__ = ["PRIOR_NETWORKS", "PRIOR_SAMPLERS", "FittedSampler", "PriorBank", "PriorNet",
           "build_prior_network", "fit_sampler", "network_tag", "prior_bank"]
