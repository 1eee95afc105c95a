"""Evaluation of a generator: FID / IS / KID through torch-fidelity, 1-D metrics for the toy data,
and the ``eval_protocol`` fingerprint that says which numbers may be compared.

Protocol. ``Evaluator(eval_cfg, data_cfg).protocol`` (equal to ``eval_protocol(eval_cfg,
data_cfg)``) is ``{extractor}-{weights}-n{num_samples}-{reference}-r{resolution}-{data}``, e.g.
``digits-3f2a9c1b-n2000-train-r16-digits``. ``weights`` is a short hash of the extractor's weights
(file content for Inception, the state of the digits classifier); the toy metrics have no weights
and no resolution: ``toy-v1-n2000-train-toy2pt``. A ``folder`` dataset adds a hash of its root.
The latent seed, batch size and the kid/is switches are left out: they do not change what FID
measures, only which noise it is measured with or what else is reported.

Reference. ``eval.reference=train`` is the FULL train split (``data.fraction`` ignored: a run
trained on 10% of CIFAR is judged against all of it, as the data-efficient GAN papers do);
``test`` is the test split.

Determinism. Latents (and labels of a conditional G, uniform) come from a ``torch.Generator``
seeded with ``eval.seed``, drawn on CPU all at once, so the same weights give the same number on
any batch size; G runs in eval mode under ``no_grad`` and is put back in its previous mode; the
caller's global RNG state is restored afterwards. Eval samples are never augmented.

Cache. Real statistics live in ``{cache}/fidelity`` where ``cache`` is the ``cache_dir``
argument, else ``$TUNEABLE_GAN_CACHE``, else ``~/.cache/tuneable_gan``; the digits classifier in
``{cache}/extractors``. torch-fidelity's cache keys ignore the weights, so ours name the entry
``tgan-{protocol}-{hash of the reference images}``. torch-fidelity reads its cache files with
``weights_only=False``: the cache dir must be one only you can write to.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Optional

import numpy as np
import torch
import torch_fidelity
from torch import Tensor, nn
from torch.utils.data import Dataset
from torch_fidelity.generative_model_base import GenerativeModelBase
from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY

from tuneable_gan.config import DataConfig, EvalConfig
from tuneable_gan.data import RealData, load_data
from tuneable_gan.errors import ConfigError
from tuneable_gan.extractors import (
    EXTRACTORS,
    Prepared,
    default_extractor,
    short_hash,
    to_uint8,
)

TOY_TOLERANCE = 0.5  # a sample within this distance of a real point counts towards that mode
TOY_MIN_SHARE = 0.1  # share of all samples a mode needs to count as covered
KID_MAX_SUBSET = 1000  # torch-fidelity's default subset size, cut to what both sides have


def cache_root(cache_dir: str | Path | None = None) -> Path:
    """``cache_dir``, else ``$TUNEABLE_GAN_CACHE``, else ``~/.cache/tuneable_gan``."""
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    env = os.environ.get("TUNEABLE_GAN_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "tuneable_gan"


def check_compatible(eval_cfg: EvalConfig, data_cfg: DataConfig) -> None:
    """ConfigError unless ``eval.extractor`` can evaluate ``data.name``."""
    valid = [n for n in EXTRACTORS if EXTRACTORS.get(n).accepts(data_cfg.name)]
    if eval_cfg.extractor not in valid:
        raise ConfigError(f"eval.extractor={eval_cfg.extractor} does not fit "
                          f"data.name={data_cfg.name}; valid: {', '.join(valid)}")


def _protocol(eval_cfg: EvalConfig, data_cfg: DataConfig, prep: Prepared) -> str:
    data = data_cfg.name
    if data == "folder":
        # The folder is the dataset; its path is the cheapest identity that needs no loading.
        data += "." + short_hash(str(Path(data_cfg.root or "").expanduser().resolve()).encode())
    res = "" if prep.fidelity_name is None else f"-r{data_cfg.resolution}"
    n, ref = eval_cfg.num_samples, eval_cfg.reference
    return f"{eval_cfg.extractor}-{prep.tag}-n{n}-{ref}{res}-{data}"


def with_extractor(eval_cfg: EvalConfig, data_cfg: DataConfig) -> EvalConfig:
    """``eval_cfg`` with ``extractor: null`` replaced by the data's own (``default_extractor``)."""
    if eval_cfg.extractor is not None:
        return eval_cfg
    return dataclasses.replace(eval_cfg, extractor=default_extractor(data_cfg.name))


def _prepare(eval_cfg: EvalConfig, data_cfg: DataConfig, cache_dir: Path) -> Prepared:
    check_compatible(eval_cfg, data_cfg)
    return EXTRACTORS.get(eval_cfg.extractor).prepare(eval_cfg, cache_dir)


def eval_protocol(eval_cfg: EvalConfig, data_cfg: DataConfig,
                  cache_dir: str | Path | None = None) -> str:
    """The fingerprint of an evaluation protocol (module docstring); same as ``Evaluator.protocol``.

    For ``digits`` this trains the classifier on first use; for ``inception`` it hashes the
    weights file (UserError if there is none).
    """
    eval_cfg = with_extractor(eval_cfg, data_cfg)
    return _protocol(eval_cfg, data_cfg, _prepare(eval_cfg, data_cfg, cache_root(cache_dir)))


# ---------------------------------------------------------------------------------------------
# toy metrics


def modes_covered(samples: Tensor | np.ndarray, modes: Sequence[float],
                  tol: float = TOY_TOLERANCE, min_share: float = TOY_MIN_SHARE) -> int:
    """How many ``modes`` have at least ``min_share`` of all samples within ``tol`` of them."""
    x = np.asarray(samples, dtype=np.float64).reshape(-1)
    return int(sum(np.mean(np.abs(x - m) <= tol) >= min_share for m in modes))


def wasserstein1(samples: Tensor | np.ndarray, support: Sequence[float]) -> float:
    """Exact 1-D Wasserstein-1 distance between the samples (equal weights) and the uniform
    mixture of the points ``support``: the integral of |F_samples - F_support| over the line."""
    u = np.sort(np.asarray(samples, dtype=np.float64).reshape(-1))
    v = np.sort(np.asarray(support, dtype=np.float64).reshape(-1))
    grid = np.sort(np.concatenate([u, v]))
    cdf_u = np.searchsorted(u, grid[:-1], side="right") / len(u)
    cdf_v = np.searchsorted(v, grid[:-1], side="right") / len(v)
    return float(np.sum(np.abs(cdf_u - cdf_v) * np.diff(grid)))


# ---------------------------------------------------------------------------------------------
# torch-fidelity adapters


class _NonFinite(Exception):
    """G produced NaN or inf: there is nothing meaningful to measure."""


class _SeededSampler(GenerativeModelBase):
    """Feeds torch-fidelity our pre-drawn latents and labels, ignoring its own noise.

    torch-fidelity's conditional sampling breaks on numpy 2 (``np.int``), so it is told the model
    is unconditional (``num_classes=0``) and the labels come from our seeded generator instead.
    """

    def __init__(self, G: nn.Module, z: Tensor, y: Optional[Tensor], device: torch.device) -> None:
        super().__init__()
        # In a tuple, G is no submodule: torch-fidelity's .cuda() must not move it off its device.
        self._g = (G,)
        self._z, self._y, self._device, self._pos = z, y, device, 0

    @property
    def z_size(self) -> int:
        return int(getattr(self._g[0], "z_dim", 1))

    @property
    def z_type(self) -> str:
        return "normal"

    @property
    def num_classes(self) -> int:
        return 0

    def forward(self, noise: Tensor) -> Tensor:
        """The next ``len(noise)`` samples as uint8 Bx3xHxW in [0, 255]."""
        a, b = self._pos, self._pos + int(noise.shape[0])
        assert b <= len(self._z), "torch-fidelity asked for more samples than were drawn"
        self._pos = b
        z = self._z[a:b].to(self._device)
        y = None if self._y is None else self._y[a:b].to(self._device)
        x = self._g[0](z) if y is None else self._g[0](z, y)
        if not torch.isfinite(x).all():
            raise _NonFinite
        return to_uint8(x)


class _Images(Dataset):
    """uint8 (N, 3, H, W) images as a torch-fidelity input (items are bare tensors).

    Lazy: on a cache hit torch-fidelity never reads it, so the images need not be in memory.
    """

    def __init__(self, get: Callable[[], Tensor]) -> None:
        self._get = get

    def __len__(self) -> int:
        return int(self._get().shape[0])

    def __getitem__(self, i: int) -> Tensor:
        return self._get()[i]


@contextlib.contextmanager
def _evaluating(G: nn.Module, device: torch.device) -> Iterator[None]:
    # fork_rng: DataLoader and friends draw from the global RNG, and a trainer's resumed run
    # (reference already cached) must see the same RNG stream as its straight run.
    if device.type == "cuda":
        devices = [device.index if device.index is not None else torch.cuda.current_device()]
    else:
        devices = []
    was_training = G.training
    with torch.random.fork_rng(devices=devices), torch.no_grad():
        G.eval()
        try:
            yield
        finally:
            G.train(was_training)


# ---------------------------------------------------------------------------------------------
# the evaluator


class Evaluator:
    """Metrics of a generator's samples against the real reference, by ``eval_cfg``.

    Construction validates the extractor against the data (ConfigError), finds or builds the
    extractor weights (UserError without Inception weights; trains the digits classifier on first
    use) and loads the reference; each call then costs only G's samples once the real
    statistics are cached.
    """

    def __init__(self, eval_cfg: EvalConfig, data_cfg: DataConfig,
                 device: torch.device | str = "cpu", cache_dir: str | Path | None = None) -> None:
        eval_cfg = with_extractor(eval_cfg, data_cfg)
        self.eval_cfg, self.data_cfg = eval_cfg, data_cfg
        self.device = torch.device(device)
        self.cache_dir = cache_root(cache_dir)
        self.extractor = _prepare(eval_cfg, data_cfg, self.cache_dir)
        self.protocol: str = _protocol(eval_cfg, data_cfg, self.extractor)
        ref = self._load_reference()
        self.num_real = len(ref)
        self._points: Optional[Tensor] = None
        self._real: Optional[Tensor] = None
        if self.extractor.fidelity_name is None:
            self._points = ref.images.reshape(-1)
        else:
            self._real = to_uint8(ref.images)
            self.cache_name = f"tgan-{self.protocol}-{short_hash(self._real.numpy().tobytes())}"

    @property
    def fidelity_cache(self) -> Path:
        """torch-fidelity's ``cache_root`` for our real statistics."""
        return self.cache_dir / "fidelity"

    def __call__(self, G: nn.Module) -> dict[str, float | str]:
        """Metrics of G's samples against the real reference, always including "eval_protocol".

        Images: ``fid``, ``is_mean`` (eval.is), ``kid`` (eval.kid). toy2pt: ``modes_covered``,
        ``w1``. A G whose samples are not finite gets fid=kid=w1=inf, is_mean=nan.
        """
        z, y = self._latents(G)
        with _evaluating(G, self.device):
            if self._points is not None:
                out = self._toy_metrics(G, z, y)
            else:
                out = self._image_metrics(G, z, y)
        return {**out, "eval_protocol": self.protocol}

    def _latents(self, G: nn.Module) -> tuple[Tensor, Optional[Tensor]]:
        # Drawn on CPU in one go: the same numbers on CPU and GPU and for any batch size.
        gen = torch.Generator().manual_seed(self.eval_cfg.seed)
        n = self.eval_cfg.num_samples
        z = G.sample_z(n, gen, "cpu")  # type: ignore[operator]
        conditional = bool(getattr(G, "conditional", False))
        y = torch.randint(0, int(G.num_classes), (n,), generator=gen) if conditional else None
        return z.cpu(), y

    def _toy_metrics(self, G: nn.Module, z: Tensor, y: Optional[Tensor]) -> dict[str, float]:
        assert self._points is not None
        bs, parts = self.eval_cfg.batch_size, []
        for a in range(0, len(z), bs):
            zb = z[a:a + bs].to(self.device)
            parts.append(G(zb) if y is None else G(zb, y[a:a + bs].to(self.device)))
        x = torch.cat(parts).reshape(-1).double().cpu()
        if not torch.isfinite(x).all():
            return {"modes_covered": 0, "w1": math.inf}
        modes = self._points.tolist()
        return {"modes_covered": modes_covered(x, modes), "w1": wasserstein1(x, modes)}

    def _image_metrics(self, G: nn.Module, z: Tensor, y: Optional[Tensor]) -> dict[str, float]:
        cfg, n = self.eval_cfg, self.eval_cfg.num_samples
        cuda = torch.cuda.is_available() and self.device.type == "cuda"
        kwargs = dict(
            input1=_SeededSampler(G, z, y, self.device), input1_model_num_samples=n,
            input2=_Images(self._reference), input2_cache_name=self.cache_name,
            fid=True, isc=cfg.is_, kid=cfg.kid,
            kid_subset_size=min(KID_MAX_SUBSET, n, self.num_real),
            feature_extractor=self.extractor.fidelity_name,
            feature_extractor_weights_path=str(self.extractor.weights_path),
            batch_size=cfg.batch_size, rng_seed=cfg.seed, cuda=cuda, save_cpu_ram=True,
            cache=True, cache_root=str(self.fidelity_cache), datasets_download=False, verbose=False,
        )
        # torch-fidelity's .cuda() targets the current device: make that ours (cuda:1 stays cuda:1).
        on_device = torch.cuda.device(self.device) if cuda else contextlib.nullcontext()
        try:
            with on_device:
                m = torch_fidelity.calculate_metrics(**kwargs)
        except _NonFinite:
            m = {}
        out = {"fid": float(m.get(torch_fidelity.KEY_METRIC_FID, math.inf))}
        if cfg.is_:
            out["is_mean"] = float(m.get(torch_fidelity.KEY_METRIC_ISC_MEAN, math.nan))
        if cfg.kid:
            out["kid"] = float(m.get(torch_fidelity.KEY_METRIC_KID_MEAN, math.inf))
        if self.reference_cached():
            self._real = None  # the statistics are on disk; the images are only needed to rebuild
        return out

    def _load_reference(self) -> RealData:
        # fraction=1.0: the reference is the whole split, whatever share the run trains on.
        return load_data(dataclasses.replace(self.data_cfg, fraction=1.0), self.eval_cfg.reference)

    def _reference(self) -> Tensor:
        if self._real is None:
            self._real = to_uint8(self._load_reference().images)
        return self._real

    def reference_cached(self) -> bool:
        """Whether the real statistics (and features, for IS/KID) are in our cache."""
        if self.extractor.fidelity_name is None:
            return True
        fe = self.extractor.fidelity_name
        layer = FEATURE_EXTRACTORS_REGISTRY[fe].get_default_feature_layer_for_metric
        files = [f"{self.cache_name}-{fe}-stat-fid-{layer('fid')}.pt"]
        if self.eval_cfg.is_ or self.eval_cfg.kid:
            # Then torch-fidelity caches the features of every requested layer (KID's is FID's).
            layers = {layer("fid"), layer("isc")} if self.eval_cfg.is_ else {layer("fid")}
            files += [f"{self.cache_name}-{fe}-features-{la}.pt" for la in sorted(layers)]
        return all((self.fidelity_cache / f).is_file() for f in files)
