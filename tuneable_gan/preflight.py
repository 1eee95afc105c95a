"""What ``tuneable-gan train`` checks before its first step, run without training or writing.

``tuneable-gan validate`` runs it on a run config and on each cell of a search space, so a
config that validates does not fail when its run starts. The checks are the trainer's own
calls, in its order (``GANTrainer.__init__``, then ``run_dir.train``): the device, the data,
the resolved config, G and D (built on the CPU and dropped), the loss, the DiffAugment policy,
the regularizer (GP refuses a conditional D), the AdvAug terms and the evaluator; with an
instance prior, its network (a weights file is read and loaded into the architecture) and the
number of mixture components against the training images; ``model.init_from``'s checkpoint
against the built models. A lottery
phase adds no check the schema has not made (its rounds and ticket key follow from valid
values), and the sampler cannot fail on data that loaded.

What this machine cannot tell is a note, not an error, because a sweep is often validated on a
laptop and run on a cluster: data that is not here (CIFAR's shape and classes are known, so its
models and regularizer are still checked), Inception weights that are not here, no GPU for
``train.device=cuda``, and the digits classifier when it is not trained yet (``train`` trains it
in seconds on first use; validating must not).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path

import torch

from tuneable_gan.advaug import advaug_terms
from tuneable_gan.augment import parse_policy
from tuneable_gan.checkpoint import load_init_weights
from tuneable_gan.config import Config, DataConfig, EvalConfig, ModelConfig, PriorConfig
from tuneable_gan.data import fraction_indices, load_data
from tuneable_gan.digits_cnn import digits_classifier_path
from tuneable_gan.errors import ConfigError, DataError, UserError
from tuneable_gan.extractors import inception_weights
from tuneable_gan.losses import LOSSES
from tuneable_gan.metrics import Evaluator, cache_root, check_compatible
from tuneable_gan.models import DataSpec, build_models
from tuneable_gan.prior.networks import PRIOR_NETWORKS, build_prior_network, weights_path
from tuneable_gan.prior.samplers import check_components
from tuneable_gan.reads import READERS
from tuneable_gan.regularizers import REGULARIZERS
from tuneable_gan.resolve import resolve
from tuneable_gan.trainer import resolve_device

# (channels, classes) of the datasets whose files have a fixed format, for when they are not on
# this machine: enough to build the models and the regularizer at ``data.resolution``.
KNOWN_SHAPES: dict[str, tuple[int, int]] = {"cifar10": (3, 10), "cifar100": (3, 100)}


def _digits_missing(eval_cfg: EvalConfig, cache: Path) -> str | None:
    path = digits_classifier_path(cache)
    return None if path.is_file() else (
        f"the evaluator (the digits classifier is not trained yet; train trains it on first use, "
        f"in seconds, into {path})")


def _inception_missing(eval_cfg: EvalConfig, cache: Path) -> str | None:
    try:
        inception_weights(eval_cfg)
    except UserError as e:
        return f"the evaluator ({e.problems[0]})"
    return None


# Why an extractor cannot be prepared here without a side effect; extractors not listed
# (toy) prepare for free.
NOT_READY: dict[str, Callable[[EvalConfig, Path], str | None]] = {
    "digits": _digits_missing,
    "inception": _inception_missing,
}


class Preflight:
    """Runs the checks on one config after another, loading each data set, building each pair
    of models and each evaluator once (a sweep's cells share them)."""

    def __init__(self) -> None:
        self._specs: dict[DataConfig, tuple[DataSpec | None, list[str]]] = {}
        self._sizes: dict[DataConfig, int] = {}  # train split sizes of the data that loaded
        self._priors: dict[PriorConfig, int] = {}
        self._models: dict[tuple[ModelConfig, DataSpec], list[str]] = {}
        self._evaluators: dict[tuple[EvalConfig, DataConfig], tuple[list[str], list[str]]] = {}

    def check(self, cfg: Config) -> list[str]:
        """Notes on what could not be checked here; UserError for what ``train`` would refuse
        before its first step."""
        notes = []
        try:
            resolve_device(cfg.train.device)
        except ConfigError as e:
            notes.append(f"not checked here: {e.problems[0]}")
        spec, data_notes = self._spec(cfg.data)
        notes += data_notes
        if spec is None:
            return notes
        prior_dim, prior_notes = self._prior_dim(cfg.prior)
        notes += prior_notes
        spec = dataclasses.replace(spec, prior_dim=prior_dim)
        self._check_components(cfg)
        cfg = resolve(cfg, spec)
        problems = self._build(cfg.model, spec)
        if problems:
            raise ConfigError(problems)
        LOSSES.get(cfg.loss.name)
        parse_policy(cfg.augment.diffaugment)
        REGULARIZERS.get(cfg.regularizer.name)(cfg)
        advaug_terms(cfg.augment)
        if data_notes:  # the evaluator needs the reference images
            return notes + ["not checked here: the evaluator (needs the data)"]
        return notes + self._evaluator(cfg)

    def _spec(self, data: DataConfig) -> tuple[DataSpec | None, list[str]]:
        # Shape and classes do not depend on the subset: one load serves every fraction.
        key = dataclasses.replace(data, fraction=1.0, subset="random", subset_seed=0)
        if key not in self._specs:
            try:
                real = load_data(key, "train")
                self._specs[key] = DataSpec(real.shape, real.num_classes), []
                self._sizes[key] = len(real)
            except DataError as e:
                known = KNOWN_SHAPES.get(data.name)
                if known is None:
                    self._specs[key] = None, [f"not checked here: {e.problems[0]} (the models, "
                                              "regularizer and evaluator need the data)"]
                else:
                    c, k = known
                    shape = (c, data.resolution, data.resolution)
                    self._specs[key] = DataSpec(shape, k), [
                        f"data not checked here: {e.problems[0]}; the models and regularizer "
                        f"were checked with {data.name}'s shape {shape} and {k} classes"]
        return self._specs[key]

    def _prior_dim(self, prior: PriorConfig) -> tuple[int, list[str]]:
        """(the prior's feature size, notes). A network that loads a weights file is built
        once, so a file of another architecture is refused here; a file that is not on this
        machine is a note, as Inception weights are (a sweep is validated where it is written,
        run where the files are). The digits classifier is not trained here."""
        if prior.network == "none":
            return 0, []
        dim = PRIOR_NETWORKS.get(prior.network).dim
        if not READERS["prior.weights"].reads(prior.network):
            return dim, []
        if prior not in self._priors:
            try:
                weights_path(prior)
            except UserError as e:
                return dim, [f"not checked here: {e.problems[0]}"]
            with torch.random.fork_rng(devices=[]):
                build_prior_network(prior, cache_root())
            self._priors[prior] = dim
        return dim, []

    def _check_components(self, cfg: Config) -> None:
        """K mixture components or clusters need at least K training images."""
        key = dataclasses.replace(cfg.data, fraction=1.0, subset="random", subset_seed=0)
        if (cfg.prior.network == "none" or key not in self._sizes
                or not READERS["prior.components"].reads(cfg.prior.sampler)):
            return
        d = cfg.data
        n = len(fraction_indices(self._sizes[key], d.fraction, d.subset_seed, d.subset))
        check_components(cfg.prior, n)

    def _build(self, model: ModelConfig, spec: DataSpec) -> list[str]:
        key = (model, spec)
        if key not in self._models:
            threads = torch.get_num_threads()
            try:
                # Spectral norm's power iterations on small matrices: one thread is fastest (on
                # a busy machine ten times so). The init draws from the global RNG: leave the
                # caller's stream alone.
                torch.set_num_threads(1)
                with torch.random.fork_rng(devices=[]):
                    G, D = build_models(model, spec)
                if model.init_from:
                    load_init_weights(model.init_from, model.arch, G, D)
                self._models[key] = []
            except ConfigError as e:
                self._models[key] = e.problems
            finally:
                torch.set_num_threads(threads)
        return self._models[key]

    def _evaluator(self, cfg: Config) -> list[str]:
        key = (cfg.eval, cfg.data)
        if key not in self._evaluators:
            self._evaluators[key] = self._try_evaluator(cfg.eval, cfg.data)
        notes, problems = self._evaluators[key]
        if problems:
            raise ConfigError(problems)
        return notes

    @staticmethod
    def _try_evaluator(eval_cfg: EvalConfig, data: DataConfig) -> tuple[list[str], list[str]]:
        try:
            check_compatible(eval_cfg, data)
            missing = NOT_READY.get(eval_cfg.extractor or "", lambda e, c: None)(
                eval_cfg, cache_root())
            if missing:
                return [f"not checked here: {missing}"], []
            Evaluator(eval_cfg, data, "cpu")
        except UserError as e:
            return [], e.problems
        return [], []


def preflight(cfg: Config) -> list[str]:
    """``Preflight().check(cfg)``: notes on what could not be checked here; UserError for what
    ``tuneable-gan train`` would refuse before its first step."""
    return Preflight().check(cfg)
