"""Feature extractors behind ``eval.extractor``, one Registry entry each.

* ``digits``: the project's digits classifier (``digits_cnn.py``), trained once and cached.
* ``inception``: torch-fidelity's ``inception-v3-compat``; weights from ``eval.extractor_weights``
  or torch's hub cache, never downloaded during a run.
* ``toy``: no network at all; the 1-D metrics in ``metrics.py``.

Offline download of the Inception weights, once, on a machine with network::

    python -m tuneable_gan.extractors download-inception
"""

from __future__ import annotations

import functools
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch
from torch_fidelity.feature_extractor_inceptionv3 import URL_INCEPTION_V3

from tuneable_gan.cache_files import file_hash, state_hash
from tuneable_gan.config import EvalConfig
from tuneable_gan.digits_cnn import (
    DIGITS_FIDELITY_NAME,
    ensure_digits_classifier,
    load_digits_classifier,
)
from tuneable_gan.errors import UserError
from tuneable_gan.registry import Registry

INCEPTION_FILE = "weights-inception-2015-12-05-6726825d.pth"
TOY_METRICS_VERSION = "v1"


# ---------------------------------------------------------------------------------------------
# the Inception weights file


def default_inception_path() -> Path:
    """Where torch-fidelity's own download lands: ``$TORCH_HOME/hub/checkpoints/``."""
    return Path(torch.hub.get_dir()) / "checkpoints" / INCEPTION_FILE


def inception_weights(eval_cfg: EvalConfig) -> Path:
    """The Inception weights file to use; UserError (one line, how to fix) when there is none.

    Checked before torch-fidelity runs, because it would otherwise try the network mid-run.
    """
    if eval_cfg.extractor_weights:
        p = Path(eval_cfg.extractor_weights).expanduser()
        if not p.is_file():
            raise UserError(f"eval.extractor_weights: file not found: {p} (point it to a local "
                            f"copy of {INCEPTION_FILE})")
        return p
    p = default_inception_path()
    if not p.is_file():
        raise UserError(f"Inception weights not found at {p}: set eval.extractor_weights to a "
                        f"local copy of {INCEPTION_FILE}, or run once with network: "
                        f"python -m tuneable_gan.extractors download-inception")
    return p


def download_inception_weights() -> Path:
    """Download the Inception weights to torch's hub cache, where evaluation finds them."""
    p = default_inception_path()
    if not p.is_file():
        p.parent.mkdir(parents=True, exist_ok=True)
        torch.hub.download_url_to_file(URL_INCEPTION_V3, str(p))
    return p


# ---------------------------------------------------------------------------------------------
# the registry


@dataclass(frozen=True)
class Prepared:
    """An extractor ready to run: its weights file, and the short tag for the protocol."""

    tag: str
    fidelity_name: Optional[str]  # torch-fidelity feature_extractor; None: 1-D toy metrics
    weights_path: Optional[Path]


class Extractor:
    """One ``eval.extractor`` value: which data it fits and how to get its weights.

    ``default_for``: the data names it is the default extractor of (``eval.extractor: null``).
    """

    default_for: tuple[str, ...] = ()

    def accepts(self, data_name: str) -> bool:
        """Whether it can evaluate ``data.name``."""
        raise NotImplementedError

    def prepare(self, eval_cfg: EvalConfig, cache_dir: Path) -> Prepared:
        """Find or build the weights (may train, may raise UserError)."""
        raise NotImplementedError


EXTRACTORS: Registry[Extractor] = Registry("extractor")


class _Digits(Extractor):
    default_for = ("digits",)

    def accepts(self, data_name: str) -> bool:
        return data_name == "digits"

    def prepare(self, eval_cfg: EvalConfig, cache_dir: Path) -> Prepared:
        path = ensure_digits_classifier(cache_dir)
        st = path.stat()
        return Prepared(_digits_tag(str(path), st.st_size, st.st_mtime_ns), DIGITS_FIDELITY_NAME,
                        path)


@functools.lru_cache(maxsize=4)
def _digits_tag(path: str, size: int, mtime_ns: int) -> str:
    return state_hash(load_digits_classifier(path)[0])


class _Inception(Extractor):
    def accepts(self, data_name: str) -> bool:
        return data_name != "toy2pt"

    def prepare(self, eval_cfg: EvalConfig, cache_dir: Path) -> Prepared:
        path = inception_weights(eval_cfg)
        return Prepared(file_hash(path), "inception-v3-compat", path)


class _Toy(Extractor):
    default_for = ("toy2pt",)

    def accepts(self, data_name: str) -> bool:
        return data_name == "toy2pt"

    def prepare(self, eval_cfg: EvalConfig, cache_dir: Path) -> Prepared:
        return Prepared(TOY_METRICS_VERSION, None, None)


EXTRACTORS.register("digits")(_Digits())
EXTRACTORS.register("inception")(_Inception())
EXTRACTORS.register("toy")(_Toy())

# Every image dataset without an extractor of its own (CIFAR, folders, faces) is judged with
# Inception, as the papers do.
FALLBACK_EXTRACTOR = "inception"


def default_extractor(data_name: str) -> str:
    """The extractor ``eval.extractor: null`` means for ``data.name``."""
    for name in EXTRACTORS:
        if data_name in EXTRACTORS.get(name).default_for:
            return name
    return FALLBACK_EXTRACTOR


if __name__ == "__main__":
    if sys.argv[1:] != ["download-inception"]:
        sys.exit("usage: python -m tuneable_gan.extractors download-inception")
    print(download_inception_weights())
