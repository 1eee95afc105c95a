"""The run config: frozen dataclasses in sections, YAML loading, dotted overrides, validation.

YAML keys are dotted paths into the sections (``regularizer.weight``). Every field declares its
constraint in its metadata, so validation, error messages and the docs come from one place.
The choice lists of registered things (``data.name``, ``model.arch``, ``loss.name``,
``regularizer.name``, ``eval.extractor``) are the registries' names; a test holds them equal
(the registries' modules import this one, so it cannot import them). The DiffAugment ops come
from the op table itself (``augment.AUGMENT_FNS``).
"""

from __future__ import annotations

import dataclasses
import difflib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Optional, get_type_hints

import yaml

from tuneable_gan.config_checks import (  # noqa: F401  (PAPER_CONDITIONAL_ARCHES, fmt: re-exported)
    PAPER_CONDITIONAL_ARCHES,
    check_value,
    cross_checks,
    fmt,
)
from tuneable_gan.errors import ConfigError
from tuneable_gan.presets import PRESETS
from tuneable_gan.yamlfile import read_yaml, safe_load


def _choice(default: str, *values: str, doc: str = "") -> Any:
    return field(default=default, metadata={"choices": (default, *values), "doc": doc})


def _num(default: Any, lo: float | None = None, hi: float | None = None, *, lo_open: bool = False,
         hi_open: bool = False, doc: str = "") -> Any:
    return field(default=default, metadata={"lo": lo, "hi": hi, "lo_open": lo_open,
                                            "hi_open": hi_open, "doc": doc})


@dataclass(frozen=True)
class DataConfig:
    """Which real data, how much of it, and at what size."""

    name: str = _choice("digits", "toy2pt", "faces100", "cifar10", "cifar100", "folder")
    root: Optional[str] = None
    fraction: float = _num(1.0, 0.0, 1.0, lo_open=True, doc="share of the train split used")
    subset_seed: int = _num(0, 0)
    resolution: int = _num(16, 4, 256)
    flip: bool = False
    # random: the reference's seeded uniform choice; first: the first k images of the train
    # split (the lottery-ticket SNGAN code's ImageDatasetLess).
    subset: str = _choice("random", "first", doc="how a fraction subset is drawn")


@dataclass(frozen=True)
class ModelConfig:
    """Generator and discriminator architecture."""

    arch: str = _choice("dcgan", "toy", "sngan", "biggan", "stylegan2")
    z_dim: int = _num(64, 1)
    g_ch: int = _num(32, 1, doc="G width (stylegan2 ignores it: model.fmaps sets its widths)")
    d_ch: int = _num(32, 1, doc="D width (stylegan2 ignores it: model.fmaps sets its widths)")
    # stylegan2 only (the other arches ignore these); defaults are the reference's
    # (stylegan2-ada-pytorch train.py and training/networks.py).
    fmaps: float = _num(1.0, 0.0, lo_open=True, doc="stylegan2: width multiplier, channels at "
                        "resolution r = min(int(fmaps * 32768) // r, channel_max)")
    channel_max: int = _num(512, 1, doc="stylegan2: the most channels of any layer")
    mapping_layers: int = _num(8, 1, doc="stylegan2: FC layers of G's mapping network")
    w_dim: int = _num(512, 1, doc="stylegan2: size of the intermediate latent w")
    mbstd_group: int = _num(4, 1, doc="stylegan2: D's minibatch-stddev group size (a D batch "
                            "must be a multiple of it, or smaller)")
    mbstd_channels: int = _num(1, 0, doc="stylegan2: minibatch-stddev features; 0: no layer")
    style_mixing: float = _num(0.9, 0.0, 1.0, doc="stylegan2: probability of mixing two "
                               "latents' styles in a training G forward")
    truncation_psi: float = _num(1.0, doc="stylegan2: truncation of eval-mode samples toward "
                                 "w_avg; 1: none")
    d_architecture: str = _choice("resnet", "orig", doc="stylegan2: D blocks with (resnet) or "
                                  "without (orig, the reference's cifar setting) the 1x1 skip")
    # None: the arch's paper setting (biggan conditional on labelled data, the others not).
    conditional: Optional[bool] = None
    # A checkpoint directory of this system (a run's checkpoint_<step>/): G, D and G_ema start
    # from its weights (the instance prior paper's transfer setting); everything else is fresh.
    init_from: Optional[str] = None


@dataclass(frozen=True)
class LossConfig:
    """Adversarial loss, and StyleGAN2's lazy regularisation (``tuneable_gan.lazy``): R1 and
    path-length penalties in updates of their own every ``*_interval`` G iterations."""

    name: str = _choice("hinge", "ns")
    r1_gamma: float = _num(0.0, 0.0, doc="lazy R1 gamma (0: off); apart from regularizer.*")
    r1_interval: int = _num(16, 1, doc="lazy R1 every this many G iterations, penalty x it")
    pl_weight: float = _num(0.0, 0.0, doc="path-length regularisation weight (0: off; "
                            "model.arch=stylegan2)")
    pl_interval: int = _num(4, 1, doc="path-length update every this many G iterations")
    pl_decay: float = _num(0.01, 0.0, 1.0, lo_open=True, doc="path-length running-mean rate")
    pl_batch_shrink: int = _num(2, 1, doc="path-length batch = optim.batch_size // this")


@dataclass(frozen=True)
class OptimConfig:
    """Optimizers, batch, D steps per G step, and the generator EMA.

    ``name`` and ``momentum`` exist for the paper's toy study, which trains with SGD + momentum.
    """

    name: str = _choice("adam", "sgd")
    g_lr: float = _num(2e-4, 0.0, lo_open=True)
    d_lr: float = _num(2e-4, 0.0, lo_open=True)
    betas: tuple[float, float] = (0.0, 0.999)
    momentum: float = _num(0.9, 0.0, 1.0, hi_open=True)
    batch_size: int = _num(32, 1)
    g_batch_size: Optional[int] = _num(None, 1, doc="fakes per G update; null: batch_size")
    d_steps: int = _num(1, 1)
    g_ema: float = _num(0.999, 0.0, 1.0, hi_open=True, doc="decay; 0 means G_ema = G")
    g_ema_start: int = _num(0, 0)
    # StyleGAN2's EMA: a half-life in thousands of real images; replaces g_ema / g_ema_start.
    g_ema_kimg: Optional[float] = _num(None, 0.0, lo_open=True, doc="G EMA half-life in kimg "
                                       "(StyleGAN2); null: the fixed decay g_ema")
    g_ema_rampup: Optional[float] = _num(None, 0.0, lo_open=True, doc="half-life at most this "
                                         "times the images seen (StyleGAN2 ramp-up); null: none")
    # true: the EMA covers G's whole state (BigGAN reference); false: parameters only, buffers
    # copied from G (the SNGAN reference).
    g_ema_buffers: bool = True
    lr_schedule: str = _choice("constant", "linear", doc="linear: both lrs decay to 0 over "
                               "train.steps G steps")


@dataclass(frozen=True)
class RegularizerConfig:
    """The D regularizer. ``None`` for weight, ema and start means the method's paper default."""

    name: str = _choice("none", "diggan", "lecam", "r1", "r2", "gp", "dragan")
    weight: Optional[float] = _num(None, 0.0)
    ema: Optional[float] = _num(None, 0.0, 1.0, hi_open=True, doc="weight on history, beta < 1")
    pairing: str = _choice("random", "same_class", "magnitude")
    every: Optional[str] = field(default=None, metadata={
        "choices": ("first", "all"), "doc": "which of the d_steps D steps carry the penalty"})
    start: Optional[int] = _num(None, 0)


@dataclass(frozen=True)
class AugmentConfig:
    """Differentiable augmentation (pixels) and AdvAug (features)."""

    diffaugment: str = ""
    advaug: str = _choice("off", "d", "g", "gd")
    advaug_step: float = _num(0.01, 0.0, lo_open=True)
    advaug_mode: str = _choice("code_increase_logit", "worst_case")
    # sngan: the SNGAN reference's ascent on the mean logit through T; biggan: the BigGAN
    # reference's ascent on -mean(relu(1 - out)) and no DiffAugment in G's adversarial branch.
    # null: the arch's reference (biggan for model.arch=biggan, else sngan).
    advaug_form: Optional[str] = field(default=None, metadata={
        "choices": ("sngan", "biggan"), "doc": "which reference's AdvAug"})
    # ADA (stylegan2-ada-pytorch), its p tuned from D's outputs; with diffaugment too, D sees
    # ADA(DiffAugment(x)), the order of DiffAugment's StyleGAN2 port (its loss.run_D).
    ada: str = _choice("", "bgc", "bg", "blit", "geom", "color", "b", "g", "c",
                       doc="ADA pipeline (tuneable_gan.ada_ops.PIPES); '': off")
    ada_target: Optional[float] = _num(0.6, 0.0, 1.0, lo_open=True, hi_open=True,
                                       doc="target E[sign(D(real))]; null: p stays ada_p")
    ada_p: float = _num(0.0, 0.0, 1.0, doc="ADA's initial (or, with ada_target null, fixed) p")
    ada_interval: int = _num(4, 1, doc="adjust p every this many G iterations")
    ada_kimg: float = _num(500.0, 0.0, lo_open=True, doc="p can go 0 -> 1 in this many kimg")


# The prior networks: each pretrained one and its control, ``random_<name>`` (the same
# architecture, frozen at a seeded random init); ``prior.networks.PRIOR_NETWORKS`` holds them.
PRIOR_NETWORK_NAMES = ("digits", "resnet50", "vgg16", "simclr_resnet50",
                       "random_digits", "random_resnet50", "random_vgg16")


@dataclass(frozen=True)
class PriorConfig:
    """Data instance prior (docs/methods.md 9): G and D conditioned on a frozen network's
    L2-normalised features of each real training image; evaluation draws the features from a
    density fitted to the stored ones. ``network: none`` is the unconditioned control."""

    network: str = _choice("none", *PRIOR_NETWORK_NAMES)
    weights: Optional[str] = field(default=None, metadata={
        "doc": "local weights file of resnet50 / vgg16 / simclr_resnet50 (never downloaded)"})
    # With data.flip, a flipped image is scored with the features of the flipped image.
    flip_features: bool = True
    sampler: str = _choice("gmm", "kmeans", "train", doc="where evaluation's priors come from; "
                           "train (stored priors) measures closeness to the training set")
    components: int = _num(10, 1, doc="K: mixture components or k-means clusters")
    noise: float = _num(0.5, 0.0, doc="kmeans: noise std as a multiple of the cluster's spread")
    seed: int = _num(0, 0, doc="seed of the density fit (and of a random_ network's init)")


@dataclass(frozen=True)
class SparsityConfig:
    """Lottery-ticket sparsity of G's conv weights."""

    level: float = _num(0.0, 0.0, 1.0, hi_open=True)
    per_round: float = _num(0.2, 0.0, 1.0, lo_open=True, hi_open=True)
    rewind: str = _choice("init")
    mask_from: str = _choice("g", "g_ema")
    round_steps: Optional[int] = _num(None, 1, doc="G steps per ticket-finding round")


@dataclass(frozen=True)
class TrainConfig:
    """Length, cadence (all in G steps), seed, device and training precision."""

    steps: int = _num(2000, 1)
    eval_every: int = _num(500, 1)
    checkpoint_every: int = _num(500, 1)
    log_every: int = _num(10, 1)
    seed: int = _num(0, 0)
    device: str = _choice("auto", "cpu", "cuda")
    # Training only (evaluation is always fp32); the names are ``precision.PRECISIONS``'.
    precision: str = _choice("fp32", "bf16", doc="autocast dtype of the G and D forwards and "
                             "losses; weights, optimizer state and EMA stay fp32")


@dataclass(frozen=True)
class EvalConfig:
    """Evaluation protocol. The YAML key ``is`` maps to the field ``is_`` (a Python keyword)."""

    # null: the data's own (digits for digits, toy for toy2pt, inception for images).
    extractor: Optional[str] = field(default=None, metadata={
        "choices": ("digits", "inception", "toy"), "doc": "FID/IS feature extractor"})
    extractor_weights: Optional[str] = None
    num_samples: int = _num(2000, 2)
    reference: str = _choice("train", "test")
    kid: bool = False
    is_: bool = True
    # Improved precision and recall (Kynkaanniemi et al. 2019; torch-fidelity's prc, k = 3) and
    # density and coverage (Naeem et al. 2020, k = 5), on the extractor's features.
    prc: bool = False
    dc: bool = False
    # Memorisation check: mean nearest-neighbour distance of fakes to the run's training images
    # in the extractor's feature space, beside that of held-out real images (nn_fake, nn_real).
    nn: bool = False
    batch_size: int = _num(250, 1)
    seed: int = _num(0, 0, doc="latent seed: same weights, same number")
    # How G_ema generates for evaluation: eval (BatchNorm running statistics) or train (each
    # sampling batch's own statistics, g_batch_size samples at a time, as the BigGAN-CIFAR
    # reference). null: the arch's reference (train for biggan, else eval).
    g_mode: Optional[str] = field(default=None, metadata={
        "choices": ("eval", "train"), "doc": "G_ema's BatchNorm mode when sampling"})
    g_batch_size: Optional[int] = _num(None, 1, doc="sampling batch in g_mode=train")


@dataclass(frozen=True)
class Config:
    """A complete, validated run config."""

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    regularizer: RegularizerConfig = field(default_factory=RegularizerConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    prior: PriorConfig = field(default_factory=PriorConfig)
    sparsity: SparsityConfig = field(default_factory=SparsityConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)

    def to_dict(self) -> dict[str, dict[str, Any]]:
        """Nested plain dict with YAML key names (``eval.is``), tuples as lists."""
        out: dict[str, dict[str, Any]] = {}
        for sec in dataclasses.fields(self):
            obj = getattr(self, sec.name)
            out[sec.name] = {_yaml_key(f.name): _plain(getattr(obj, f.name))
                             for f in dataclasses.fields(obj)}
        return out

    def flat(self) -> dict[str, Any]:
        """Dotted key -> value, the form sweeps and analysis use."""
        return {f"{s}.{k}": v for s, sec in self.to_dict().items() for k, v in sec.items()}

    def to_yaml(self) -> str:
        """YAML text that ``load_config`` reads back into an equal Config."""
        return yaml.safe_dump(self.to_dict(), sort_keys=False)

    def replace(self, **dotted: Any) -> Config:
        """A validated copy with dotted keys changed: ``cfg.replace(**{"train.steps": 10})``."""
        return from_dict(self.flat() | dotted)


SECTIONS: dict[str, type] = {f.name: get_type_hints(Config)[f.name]
                             for f in dataclasses.fields(Config)}
# get_type_hints evaluates every annotation anew: once per section, not once per key and call.
_HINTS: dict[type, dict[str, Any]] = {cls: get_type_hints(cls) for cls in SECTIONS.values()}


def _yaml_key(name: str) -> str:
    return name.rstrip("_")


def _field_key(name: str) -> str:
    return "is_" if name == "is" else name


def _plain(v: Any) -> Any:
    return list(v) if isinstance(v, tuple) else v


def valid_keys() -> list[str]:
    """Every dotted key the schema accepts."""
    return [f"{s}.{_yaml_key(f.name)}" for s, cls in SECTIONS.items()
            for f in dataclasses.fields(cls)]


def flatten(d: dict[str, Any]) -> dict[str, Any]:
    """Nested sections (``{data: {fraction: 0.1}}``) or dotted keys -> dotted keys."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict) and "." not in str(k):
            out.update({f"{k}.{kk}": vv for kk, vv in v.items()})
        else:
            out[str(k)] = v
    return out


def _suggest(key: str) -> str:
    close = difflib.get_close_matches(key, valid_keys(), n=1, cutoff=0.6)
    if not close:
        tail = key.rsplit(".", 1)[-1]
        close = [k for k in valid_keys() if k.rsplit(".", 1)[-1] == tail][:1]
    return f" (did you mean '{close[0]}'?)" if close else ""


PRESET_KEY = "preset"


def expand_preset(flat: dict[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    """(dotted keys with the ``preset`` expanded under the explicit ones, {key: preset} for the
    values that came from it). ConfigError for an unknown preset."""
    flat = dict(flat)
    name = flat.pop(PRESET_KEY, None)
    if name is None:
        return flat, {}
    if name not in PRESETS:
        raise ConfigError(f"preset must be one of {', '.join(PRESETS)}; got {fmt(name)}")
    taken = {k: v for k, v in PRESETS[name].items() if k not in flat}
    return taken | flat, dict.fromkeys(taken, name)


def from_dict(d: dict[str, Any]) -> Config:
    """Build a validated Config from nested or dotted keys (and an optional ``preset``, whose
    values explicit keys override); ConfigError lists every problem."""
    flat, _ = expand_preset(flatten(d))
    problems: list[str] = []
    values: dict[str, dict[str, Any]] = {s: {} for s in SECTIONS}
    for key, v in flat.items():
        sec, _, name = key.partition(".")
        cls = SECTIONS.get(sec)
        fields = {f.name: f for f in dataclasses.fields(cls)} if cls else {}
        f = fields.get(_field_key(name))
        if f is None:
            problems.append(f"unknown key '{key}'{_suggest(key)}")
            continue
        typ = _HINTS[cls][f.name]
        v, bad = check_value(key, typ, f.metadata, v)
        problems += bad
        values[sec][f.name] = v
    if problems:
        raise ConfigError(problems)
    cfg = Config(**{s: SECTIONS[s](**kw) for s, kw in values.items()})
    problems = cross_checks(cfg)
    if problems:
        raise ConfigError(problems)
    return cfg


def parse_override(text: str) -> tuple[str, Any]:
    """``"regularizer.weight=100"`` -> ("regularizer.weight", 100); the value is read as YAML."""
    key, sep, raw = text.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set expects key=value, got {text!r}")
    try:
        value = safe_load(raw, f"--set {key.strip()}") if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key.strip(), value


def load_config(path: str | Path | None = None, overrides: list[str] | None = None) -> Config:
    """Load a YAML config (or the defaults) and apply ``key=value`` overrides, then validate."""
    flat = flatten(read_yaml(path)) if path is not None else {}
    for text in overrides or []:
        k, v = parse_override(text)
        flat[k] = v
    return from_dict(flat)
