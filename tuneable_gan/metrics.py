"""Evaluation of a generator: FID / IS / KID (and improved precision / recall, density /
coverage) through torch-fidelity, 1-D metrics for the toy data, and the ``eval_protocol``
fingerprint that says which numbers may be compared.

Protocol. ``Evaluator(eval_cfg, data_cfg).protocol`` (equal to ``eval_protocol(eval_cfg,
data_cfg)``) is ``{extractor}-{weights}-n{num_samples}-{reference}-r{resolution}-{data}-g{mode}``,
e.g. ``digits-3f2a9c1b-n2000-train-r16-digits-geval``. ``weights`` is a short hash of the
extractor's weights (file content for Inception, the state of the digits classifier); the toy
metrics have no weights and no resolution: ``toy-v1-n2000-train-toy2pt-geval``. A ``folder``
dataset adds a hash of its root. ``g{mode}`` is how G generates (``eval.g_mode``): ``geval``
(BatchNorm with its running statistics; also what an unresolved ``null`` means here, since the
Evaluator does not know the arch) or ``gtrain{g_batch_size}`` such as ``gtrain50`` (BatchNorm with
each sampling batch's own statistics, ``eval.g_batch_size`` samples at a time, as the
BigGAN-CIFAR reference samples G_ema: docs/methods.md 6.1). It changes what FID measures, so it
is fingerprinted. The latent seed, ``eval.batch_size`` and the kid/is/prc/dc switches are left
out: they do not change what FID measures, only which noise it is measured with or what else is
reported.

Generation. Every sample comes from ``models.spectral``: spectral-norm layers first get the top
singular vectors of their current (averaged) weights, so G_ema divides by its weights' true
sigma (the EMA of the power-iteration vectors underestimates it), then G runs in ``eval.g_mode``
under ``no_grad``. In ``train`` mode G is fed ``eval.g_batch_size`` latents at a time whatever
batch torch-fidelity asks for, so the number depends on ``g_batch_size`` and not on
``eval.batch_size``; a last chunk of ``num_samples % g_batch_size`` latents is normalised with its
own, smaller batch. Afterwards G's every buffer (BN statistics, SN vectors), its train flags and
the caller's global RNG are as before, bitwise: evaluation never changes a run.

Reference. ``eval.reference=train`` is the FULL train split (``data.fraction`` ignored: a run
trained on 10% of CIFAR is judged against all of it, as the data-efficient GAN papers do);
``test`` is the test split.

Determinism. Latents (and labels of a conditional G, uniform) come from a ``torch.Generator``
seeded with ``eval.seed``, drawn on CPU all at once, so the same weights give the same number on
any device, and in eval mode on any batch size. Eval samples are never augmented.

Precision / recall and density / coverage (``eval.prc``, ``eval.dc``) use the features FID
uses (the digits classifier's 128 or Inception's 2048): improved precision and recall are
torch-fidelity's (Kynkaanniemi et al. 2019, k = 3), density and coverage are ours (Naeem et al.
2020, k = 5, ``density_coverage``), and so is the memorisation check ``eval.nn``
(``memorisation``). With all three off, the metrics come from exactly the call they always did.

Conditioning. ``Evaluator(..., conditions=c)`` draws the fakes' conditioning with
``c.eval_fakes(n, gen)`` right after z from the same generator; a non-empty ``c.protocol`` is
appended to the protocol as `` + {c.protocol}`` (fakes conditioned otherwise are not comparable).

Cache. Real statistics live in ``{cache}/fidelity`` where ``cache`` is the ``cache_dir``
argument, else ``$TUNEABLE_GAN_CACHE``, else ``~/.cache/tuneable_gan``; the digits classifier in
``{cache}/extractors``. torch-fidelity's cache keys ignore the weights, so ours name the entry
``tgan-{protocol without its -g part}-{hash of the reference images}`` (the real statistics do
not depend on how G samples). torch-fidelity reads its cache files with ``weights_only=False``:
the cache dir must be one only you can write to.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Optional, Protocol

import torch
import torch_fidelity
from torch import Tensor, nn
from torch_fidelity.generative_model_base import GenerativeModelBase
from torch_fidelity.registry import FEATURE_EXTRACTORS_REGISTRY

from tuneable_gan.cache_files import short_hash
from tuneable_gan.config import DataConfig, EvalConfig
from tuneable_gan.data import RealData, load_data, to_uint8
from tuneable_gan.errors import ConfigError
from tuneable_gan.extractors import EXTRACTORS, Prepared, default_extractor
from tuneable_gan.memorisation import NN_KEYS, ImageRows, MemorisationCheck
from tuneable_gan.models.spectral import generate_chunks, sampling
from tuneable_gan.sample_metrics import (
    DC_K,
    density_coverage,
    modes_covered,
    wasserstein1,
)

KID_MAX_SUBSET = 1000  # torch-fidelity's default subset size, cut to what both sides have
PRC_K = 3  # torch-fidelity's prc_neighborhood default, Kynkaanniemi et al.'s k


class EvalConditions(Protocol):
    """How the evaluated fakes are conditioned (``conditioning.Conditioning`` is one)."""

    protocol: str  # "" (none, classes) or how it is drawn, e.g. "prior=digits,sampler=gmm(...)"

    def eval_fakes(self, n: int, generator: torch.Generator) -> Tensor | None:
        """Conditioning of ``n`` fakes on the CPU, drawn from ``generator``; None: none."""
        ...


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


def g_mode_of(eval_cfg: EvalConfig) -> tuple[str, Optional[int]]:
    """(mode, sampling batch) of ``eval.g_mode``/``eval.g_batch_size``: ("eval", None) or
    ("train", g_batch_size). ``null`` is eval here (resolve.py fills the arch's own); train
    without a batch size is a ConfigError, since the number depends on it."""
    mode = eval_cfg.g_mode or "eval"
    if mode == "eval":
        return mode, None
    if mode != "train":
        raise ConfigError(f"eval.g_mode={mode} is not valid; valid: eval, train")
    if eval_cfg.g_batch_size is None:
        raise ConfigError("eval.g_mode=train needs eval.g_batch_size (the sampling batch whose "
                          "statistics BatchNorm uses); set it, e.g. to optim.g_batch_size")
    return mode, int(eval_cfg.g_batch_size)


def _protocol(eval_cfg: EvalConfig, data_cfg: DataConfig, prep: Prepared) -> str:
    mode, batch = g_mode_of(eval_cfg)
    return f"{_reference_protocol(eval_cfg, data_cfg, prep)}-g{mode}{batch or ''}"


def _reference_protocol(eval_cfg: EvalConfig, data_cfg: DataConfig, prep: Prepared) -> str:
    # The protocol without how G samples: all that the real statistics depend on (and more).
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
# torch-fidelity adapters


class _NonFinite(Exception):
    """G produced NaN or inf: there is nothing meaningful to measure."""


class _SeededSampler(GenerativeModelBase):
    """Feeds torch-fidelity G's outputs for our pre-drawn latents and labels, ignoring its noise.

    torch-fidelity's conditional sampling breaks on numpy 2 (``np.int``), so it is told the model
    is unconditional (``num_classes=0``) and the labels come from our seeded generator instead.
    G runs in chunks of its own size (``chunks``, from ``generate_chunks``), buffered, so
    torch-fidelity's batch size never changes what G is fed (train-mode BatchNorm depends on it).
    """

    def __init__(self, chunks: Iterator[Tensor], z_size: int) -> None:
        super().__init__()
        # G is reached only through the iterator: torch-fidelity's .cuda() cannot move it.
        self._chunks, self._z_size = chunks, z_size
        self._buf: list[Tensor] = []
        self._have = 0

    @property
    def z_size(self) -> int:
        return self._z_size

    @property
    def z_type(self) -> str:
        return "normal"

    @property
    def num_classes(self) -> int:
        return 0

    def forward(self, noise: Tensor) -> Tensor:
        """The next ``len(noise)`` samples as uint8 Bx3xHxW in [0, 255]."""
        need = int(noise.shape[0])
        while self._have < need:
            x = next(self._chunks, None)
            assert x is not None, "torch-fidelity asked for more samples than were drawn"
            if not torch.isfinite(x).all():
                raise _NonFinite
            self._buf.append(to_uint8(x))
            self._have += len(x)
        buf = self._buf[0] if len(self._buf) == 1 else torch.cat(self._buf)
        self._buf = [buf[need:]] if len(buf) > need else []
        self._have -= need
        return buf[:need]


@contextlib.contextmanager
def _evaluating(G: nn.Module, device: torch.device, mode: str) -> Iterator[None]:
    # fork_rng: DataLoader and friends draw from the global RNG, and a trainer's resumed run
    # (reference already cached) must see the same RNG stream as its straight run. sampling():
    # exact SN, G in ``mode``, and G's buffers and flags restored afterwards.
    if device.type == "cuda":
        devices = [device.index if device.index is not None else torch.cuda.current_device()]
    else:
        devices = []
    with torch.random.fork_rng(devices=devices), sampling(G, mode):
        yield


def _calculate_with_features(**kwargs: object) -> tuple[dict, Tensor, Tensor]:
    """torch-fidelity's metrics as ``calculate_metrics`` computes them with one extractor, plus
    the FID-layer features of both inputs (generated, real), which it does not return.

    The same torch-fidelity functions in the same order (``torch_fidelity.metrics.
    calculate_metrics_one_feature_extractor`` without its FID-only shortcut), so FID, IS, KID
    and PRC are the numbers ``calculate_metrics`` gives, and the same cache files are used.
    """
    from torch_fidelity import metric_fid, metric_isc, metric_kid, metric_prc
    from torch_fidelity import utils as tfu

    wanted = [m for m in ("isc", "fid", "kid", "prc") if kwargs.get(m)]
    layer = {m: tfu.resolve_feature_layer_for_metric(m, **kwargs) for m in wanted}
    fe = tfu.create_feature_extractor(kwargs["feature_extractor"], sorted(set(layer.values())),
                                      **kwargs)
    f1 = tfu.extract_featuresdict_from_input_id_cached(1, fe, **kwargs)
    f2 = tfu.extract_featuresdict_from_input_id_cached(2, fe, **kwargs)
    out: dict = {}
    if "isc" in layer:
        out.update(metric_isc.isc_featuresdict_to_metric(f1, layer["isc"], **kwargs))
    stats = [metric_fid.fid_featuresdict_to_statistics_cached(
        f, tfu.get_cacheable_input_name(i, **kwargs), fe, layer["fid"], **kwargs)
        for i, f in ((1, f1), (2, f2))]
    out.update(metric_fid.fid_statistics_to_metric(*stats, kwargs.get("verbose", False)))
    if "kid" in layer:
        out.update(metric_kid.kid_featuresdict_to_metric(f1, f2, layer["kid"], **kwargs))
    if "prc" in layer:
        out.update(metric_prc.prc_featuresdict_to_metric(f1, f2, layer["prc"], **kwargs))
    return out, f1[layer["fid"]], f2[layer["fid"]]


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
                 device: torch.device | str = "cpu", cache_dir: str | Path | None = None,
                 conditions: EvalConditions | None = None) -> None:
        eval_cfg = with_extractor(eval_cfg, data_cfg)
        self.eval_cfg, self.data_cfg, self.conditions = eval_cfg, data_cfg, conditions
        self.device = torch.device(device)
        self.cache_dir = cache_root(cache_dir)
        self.extractor = _prepare(eval_cfg, data_cfg, self.cache_dir)
        self.g_mode, self.g_batch_size = g_mode_of(eval_cfg)
        self.protocol: str = _protocol(eval_cfg, data_cfg, self.extractor)
        if conditions is not None and conditions.protocol:
            self.protocol += f" + {conditions.protocol}"  # fakes drawn otherwise: not comparable
        if self.extractor.fidelity_name is None and (eval_cfg.prc or eval_cfg.dc or eval_cfg.nn):
            raise ConfigError(f"eval.prc and eval.dc and eval.nn need image features; "
                              f"eval.extractor={eval_cfg.extractor} has 1-D metrics only; "
                              f"valid: false")
        # Featurised like FID's inputs (same extractor, weights, layer): nn lives where FID does.
        self._nn = MemorisationCheck(data_cfg, self.extractor, eval_cfg.batch_size) \
            if eval_cfg.nn else None
        ref = self._load_reference()
        self.num_real = len(ref)
        if eval_cfg.dc and self.num_real <= DC_K:
            raise ConfigError(f"eval.dc=true needs more than {DC_K} reference images, "
                              f"{data_cfg.name} {eval_cfg.reference} has {self.num_real}")
        if eval_cfg.prc and min(self.num_real, eval_cfg.num_samples) <= PRC_K:
            raise ConfigError(f"eval.prc=true needs more than {PRC_K} reference images and "
                              f"eval.num_samples; got {self.num_real} and {eval_cfg.num_samples}")
        self._points: Optional[Tensor] = None
        self._real: Optional[Tensor] = None
        if self.extractor.fidelity_name is None:
            self._points = ref.images.reshape(-1)
        else:
            self._real = to_uint8(ref.images)
            reference = _reference_protocol(eval_cfg, data_cfg, self.extractor)
            self.cache_name = f"tgan-{reference}-{short_hash(self._real.numpy().tobytes())}"

    @property
    def fidelity_cache(self) -> Path:
        """torch-fidelity's ``cache_root`` for our real statistics."""
        return self.cache_dir / "fidelity"

    def __call__(self, G: nn.Module) -> dict[str, float | str]:
        """Metrics of G's samples against the real reference, always including "eval_protocol".

        Images: ``fid``, ``is_mean`` (eval.is), ``kid`` (eval.kid), ``precision`` and
        ``recall`` (eval.prc), ``density`` and ``coverage`` (eval.dc), ``nn_fake``, ``nn_real``,
        ``nn_ratio`` (eval.nn). toy2pt: ``modes_covered``, ``w1``. A G whose samples are not
        finite gets fid=kid=w1=inf, is_mean and the prc/dc/nn metrics nan. G generates in
        ``eval.g_mode`` with exact spectral norm; its state and the global RNG are left as they
        were (module docstring).
        """
        z, y = self._latents(G)
        # eval mode: torch-fidelity's batch (as before); train: the sampling batch, always.
        chunk = self.g_batch_size or self.eval_cfg.batch_size
        with _evaluating(G, self.device, self.g_mode):
            chunks = generate_chunks(G, z, y, chunk, self.device)
            if self._points is not None:
                out = self._toy_metrics(chunks)
            else:
                out = self._image_metrics(chunks, int(getattr(G, "z_dim", 1)))
        return {**out, "eval_protocol": self.protocol}

    def _latents(self, G: nn.Module) -> tuple[Tensor, Optional[Tensor]]:
        # Drawn on CPU in one go: the same numbers on CPU and GPU and for any batch size.
        gen = torch.Generator().manual_seed(self.eval_cfg.seed)
        n = self.eval_cfg.num_samples
        z = G.sample_z(n, gen, "cpu")  # type: ignore[operator]
        if self.conditions is not None:
            return z.cpu(), self.conditions.eval_fakes(n, gen)
        conditional = bool(getattr(G, "conditional", False))
        y = torch.randint(0, int(G.num_classes), (n,), generator=gen) if conditional else None
        return z.cpu(), y

    def _toy_metrics(self, chunks: Iterator[Tensor]) -> dict[str, float]:
        assert self._points is not None
        x = torch.cat(list(chunks)).reshape(-1).double().cpu()
        if not torch.isfinite(x).all():
            return {"modes_covered": 0, "w1": math.inf}
        modes = self._points.tolist()
        return {"modes_covered": modes_covered(x, modes), "w1": wasserstein1(x, modes)}

    def _image_metrics(self, chunks: Iterator[Tensor], z_size: int) -> dict[str, float]:
        cfg, n = self.eval_cfg, self.eval_cfg.num_samples
        cuda = torch.cuda.is_available() and self.device.type == "cuda"
        kwargs = dict(
            input1=_SeededSampler(chunks, z_size), input1_model_num_samples=n,
            input2=ImageRows(self._reference), input2_cache_name=self.cache_name,
            fid=True, isc=cfg.is_, kid=cfg.kid,
            kid_subset_size=min(KID_MAX_SUBSET, n, self.num_real),
            feature_extractor=self.extractor.fidelity_name,
            feature_extractor_weights_path=str(self.extractor.weights_path),
            batch_size=cfg.batch_size, rng_seed=cfg.seed, cuda=cuda, save_cpu_ram=True,
            cache=True, cache_root=str(self.fidelity_cache), datasets_download=False, verbose=False,
        )
        if cfg.prc:  # only then: with prc off the call is exactly what it always was
            kwargs.update(prc=True, prc_neighborhood=PRC_K)
        # torch-fidelity's .cuda() targets the current device: make that ours (cuda:1 stays cuda:1).
        on_device = torch.cuda.device(self.device) if cuda else contextlib.nullcontext()
        dc: tuple[float, float] = (math.nan, math.nan)
        nn_out = dict.fromkeys(NN_KEYS, math.nan)
        try:
            with on_device:
                if cfg.dc or self._nn is not None:  # the one pass that returns the features
                    m, fake, real = _calculate_with_features(**kwargs)
                    device = self.device if cuda else torch.device("cpu")
                    if cfg.dc:
                        dc = density_coverage(real.to(device), fake.to(device), DC_K)
                    if self._nn is not None:
                        nn_out = self._nn(fake.to(device), cuda)
                else:
                    m = torch_fidelity.calculate_metrics(**kwargs)
        except _NonFinite:
            m = {}
        out = {"fid": float(m.get(torch_fidelity.KEY_METRIC_FID, math.inf))}
        if cfg.is_:
            out["is_mean"] = float(m.get(torch_fidelity.KEY_METRIC_ISC_MEAN, math.nan))
        if cfg.kid:
            out["kid"] = float(m.get(torch_fidelity.KEY_METRIC_KID_MEAN, math.inf))
        if cfg.prc:
            out["precision"] = float(m.get(torch_fidelity.KEY_METRIC_PRECISION, math.nan))
            out["recall"] = float(m.get(torch_fidelity.KEY_METRIC_RECALL, math.nan))
        if cfg.dc:
            out["density"], out["coverage"] = dc
        if cfg.nn:
            out.update(nn_out)
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
        cfg = self.eval_cfg
        if cfg.is_ or cfg.kid or cfg.prc or cfg.dc or cfg.nn:
            # Then torch-fidelity caches the features of every requested layer (KID's, PRC's
            # and ours are FID's).
            layers = {layer("fid"), layer("isc")} if self.eval_cfg.is_ else {layer("fid")}
            files += [f"{self.cache_name}-{fe}-features-{la}.pt" for la in sorted(layers)]
        return all((self.fidelity_cache / f).is_file() for f in files)
