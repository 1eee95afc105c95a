"""Which config keys the chosen methods read, and the keys a user set that they ignore.

A key is read only with some values of one other key, its *control*: ``regularizer.start``
only by LeCam (``regularizer.name=lecam``), ``augment.advaug_step`` only with AdvAug on,
``sparsity.round_steps`` only at ``sparsity.level > 0``, ... (``READERS``). A key the user
wrote (in the file or with ``--set``; a default or a preset's value is not the user's) that the
config's methods do not read is almost always a mistake, so ``tuneable-gan train`` and
``validate`` refuse it, naming the key, the method and the methods that use it. Two cases are
harmless and pass: the value is the schema's default, or it is what the method's own default
would be (a run's stored ``config.yaml`` lists every key, resolved, and must load again).
Search spaces warn instead where some cells read a key and others do not
(``space_cells.check_explicit``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from tuneable_gan.config import PRESET_KEY, Config, fmt, from_dict
from tuneable_gan.errors import ConfigError
from tuneable_gan.resolve import fill_defaults

# The regularizer.* fields each method reads (regularizers/*.py). Every key a method's
# ``defaults()`` fills is one of them (a test holds them to the registry); ``none`` reads none.
REGULARIZER_READS: dict[str, tuple[str, ...]] = {
    "none": (),
    "diggan": ("weight", "every", "ema", "pairing"),
    "lecam": ("weight", "every", "ema", "start"),
    "r1": ("weight", "every"),
    "r2": ("weight", "every"),
    "gp": ("weight", "every"),
    "dragan": ("weight", "every"),
}


@dataclass(frozen=True)
class Reader:
    """When a key is read: with the values ``read_with`` of ``control`` only, or with every
    value of it but ``ignored_with``. Controls are compared after ``fill_defaults``."""

    control: str
    read_with: tuple[Any, ...] = ()
    ignored_with: tuple[Any, ...] = ()

    def reads(self, value: Any) -> bool:
        """Whether the key is read when ``control`` has ``value``."""
        return value in self.read_with if self.read_with else value not in self.ignored_with

    def used_with(self) -> str:
        """``regularizer.name=diggan or lecam`` / ``sparsity.level other than 0.0``."""
        if self.read_with:
            names = [name(v) for v in self.read_with]
            return f"{self.control}=" + (names[0] if len(names) == 1 else
                                          f"{', '.join(names[:-1])} or {names[-1]}")
        return f"{self.control} other than {', '.join(map(name, self.ignored_with))}"


def _regularizer_readers() -> dict[str, Reader]:
    fields = dict.fromkeys(f for fs in REGULARIZER_READS.values() for f in fs)
    return {f"regularizer.{f}": Reader("regularizer.name", read_with=tuple(
        m for m, fs in REGULARIZER_READS.items() if f in fs)) for f in fields}


_ADVAUG_OFF = Reader("augment.advaug", ignored_with=("off",))
_DENSE = Reader("sparsity.level", ignored_with=(0.0,))
_FULL_DATA = Reader("data.fraction", ignored_with=(1.0,))
_TOY = Reader("model.arch", ignored_with=("toy",))  # the toy nets have the paper's fixed sizes
_PRIOR = Reader("prior.network", ignored_with=("none",))

READERS: dict[str, Reader] = {
    **_regularizer_readers(),
    "augment.advaug_step": _ADVAUG_OFF,
    "augment.advaug_mode": _ADVAUG_OFF,
    "augment.advaug_form": _ADVAUG_OFF,
    "sparsity.per_round": _DENSE,
    "sparsity.rewind": _DENSE,
    "sparsity.mask_from": _DENSE,
    "sparsity.round_steps": _DENSE,
    "optim.momentum": Reader("optim.name", read_with=("sgd",)),
    "eval.g_batch_size": Reader("eval.g_mode", read_with=("train",)),
    "eval.extractor_weights": Reader("eval.extractor", read_with=("inception",)),
    # datasets/: digits, toy2pt and faces100 are bundled; the others read their files.
    "data.root": Reader("data.name", read_with=("cifar10", "cifar100", "folder")),
    "data.subset": _FULL_DATA,
    "data.subset_seed": _FULL_DATA,
    "model.z_dim": _TOY,
    "model.g_ch": _TOY,
    "model.d_ch": _TOY,
    # The random_ controls are initialised, not loaded; digits is the project's own classifier.
    "prior.weights": Reader("prior.network", read_with=("resnet50", "vgg16", "simclr_resnet50")),
    "prior.flip_features": _PRIOR,
    "prior.sampler": _PRIOR,
    "prior.seed": _PRIOR,
    "prior.components": Reader("prior.sampler", read_with=("gmm", "kmeans")),
    "prior.noise": Reader("prior.sampler", read_with=("kmeans",)),
}

_DEFAULTS = Config().flat()


@dataclass(frozen=True)
class Ignored:
    """A key set to ``value`` that ``control``'s value ``setting`` does not read."""

    key: str
    value: Any
    control: str
    setting: Any
    reader: Reader

    def problem(self) -> str:
        """One line: the key, the method, and the methods that use it."""
        return (f"{self.key}={fmt(self.value)} is set but {self.control}={name(self.setting)} "
                f"does not read it; it is read with {self.reader.used_with()} (remove it, or "
                f"change {self.control})")


def name(v: Any) -> str:
    """A control's value as a message names it: ``diggan``, ``0.0``."""
    return v if isinstance(v, str) else fmt(v)


def _harmless(cfg: Config, key: str, value: Any) -> bool:
    if value == _DEFAULTS[key]:
        return True
    if _DEFAULTS[key] is not None:
        return False
    # What the method fills in for null: a resolved config lists it (none's weight 0, ...).
    try:
        blank = cfg.replace(**{key: None})
    except ConfigError:
        return False
    return fill_defaults(blank).flat()[key] == value


def ignored(cfg: Config, explicit: Iterable[str]) -> list[Ignored]:
    """The keys of ``explicit`` (dotted keys the user set) that ``cfg``'s methods do not read,
    harmless values (module docstring) left out, in the order given."""
    filled, values = fill_defaults(cfg).flat(), cfg.flat()
    out = []
    for key in explicit:
        reader = READERS.get(key)
        if reader is None or reader.reads(filled[reader.control]):
            continue
        if not _harmless(cfg, key, values[key]):
            out.append(Ignored(key, values[key], reader.control, filled[reader.control], reader))
    return out


def check_run(doc: Mapping[str, Any], overrides: Mapping[str, Any]) -> tuple[Config, list[str]]:
    """(the validated config, warnings) of a run config's dotted ``doc`` with ``--set``
    ``overrides`` on top. ConfigError lists every key the user set that the config does not
    read; a key of the file ignored because ``--set`` changed its control (``--set
    regularizer.name=none`` on a DigGAN config) is a warning: the switch was deliberate."""
    cfg = from_dict({**doc, **overrides})
    explicit = [k for k in {**doc, **overrides} if k != PRESET_KEY]
    problems, warnings = [], []
    for item in ignored(cfg, explicit):
        switched = item.control in overrides and item.key not in overrides
        (warnings if switched else problems).append(item.problem())
    if problems:
        raise ConfigError(problems)
    return cfg, warnings


def control_keys() -> set[str]:
    """Every key some other key's reading depends on."""
    return {r.control for r in READERS.values()}


