"""Shared fixtures (no tests/__init__.py: torch-fidelity installs a top-level `tests`)."""

from __future__ import annotations

import math
import os
import tempfile
from pathlib import Path
from unittest import mock

import pytest
import torch
from torch import nn

from tuneable_gan.config import Config, from_dict
from tuneable_gan.extractors import INCEPTION_FILE

TINY = {
    "data.name": "digits", "data.fraction": 0.1, "data.resolution": 8,
    "model.arch": "dcgan", "model.z_dim": 8, "model.g_ch": 8, "model.d_ch": 8,
    "optim.batch_size": 8, "optim.d_steps": 2, "optim.g_ema": 0.9, "optim.g_ema_start": 2,
    "regularizer.name": "diggan", "regularizer.weight": 10.0,
    "augment.diffaugment": "color,translation,cutout",
    "train.steps": 6, "train.eval_every": 3, "train.checkpoint_every": 3, "train.log_every": 1,
    "train.device": "cpu",
}


class ReplayG(nn.Module):
    """A stand-in generator that plays back fixed images in order (z is the index), so the
    samples an evaluation draws are known exactly."""

    z_dim, conditional, num_classes = 1, False, 0

    def __init__(self, images: torch.Tensor) -> None:
        super().__init__()
        self.images = images

    def sample_z(self, n: int, generator: torch.Generator, device: str) -> torch.Tensor:
        return torch.arange(n, dtype=torch.float32).unsqueeze(1).to(device)

    def forward(self, z: torch.Tensor, y: torch.Tensor | None = None) -> torch.Tensor:
        return self.images[z[:, 0].long() % len(self.images)]


def tiny_config(**dotted: object) -> Config:
    """A CPU-second-sized digits config; keyword keys use '__' for '.'."""
    return from_dict(TINY | {k.replace("__", "."): v for k, v in dotted.items()})


def read_only_dir(path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Make ``path`` a directory nobody may write in (mode 0555); under root, who writes
    anywhere, ``os.access`` says so for it, as it would for an ordinary user."""
    path.mkdir()
    path.chmod(0o555)
    if os.geteuid() == 0:
        real = os.access
        monkeypatch.setattr(os, "access", lambda p, m: False if Path(p) == path else real(p, m))
    return path


def remaining_after(n_total: int, rounds: int, per_round: float = 0.2) -> int:
    """Oracle: live weights after ``rounds`` IMP rounds from ``n_total``, each pruning
    floor(per_round * n + 0.5) of the n still alive (20% of the remaining, rounded half up)."""
    n = n_total
    for _ in range(rounds):
        n -= int(per_round * n + 0.5)
    return n


def assert_resumed_rows(trial_rows: list[dict], every: int, last: int) -> None:
    """A restored trial's result.json rows: every ``every``-th step up to ``last``, in order,
    none skipped, and at most one interval run twice, reproducing its losses and FID exactly.
    Tune logs a result before it registers that result's checkpoint (a separate save call), so
    a trial stopped in between reruns the one interval in flight from the checkpoint before."""
    steps = [x["step"] for x in trial_rows]
    assert sorted(set(steps)) == list(range(every, last + 1, every)), steps
    assert steps == sorted(steps) and len(steps) - len(set(steps)) <= 1, steps
    first: dict[int, dict] = {}
    for x in trial_rows:
        values = {k: v for k, v in x.items() if "loss" in k or k in ("fid", "w1")}
        assert values and first.setdefault(x["step"], values) == values, (x["step"], values)


@pytest.fixture(autouse=True, scope="session")
def _private_home(tmp_path_factory: pytest.TempPathFactory):
    """Sweeps keep their resume key under TUNEABLE_GAN_HOME: tests must never write one into
    the real home (Ray workers inherit the variable)."""
    os.environ.setdefault("TUNEABLE_GAN_HOME", str(tmp_path_factory.mktemp("tghome")))
    yield


@pytest.fixture(autouse=True)
def _few_threads():
    torch.set_num_threads(1)
    yield


@pytest.fixture
def tiny():
    return tiny_config


@pytest.fixture(scope="session")
def random_inception(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random Inception weights file (docs/torch_fidelity.md 2.1): He-normal convs, BN 0/1,
    fc scaled to logit std ~2. PyTorch's default init zeroes every feature: FID would be 0."""
    import torch_fidelity.feature_extractor_inceptionv3 as fe_mod

    with mock.patch.object(fe_mod.torch, "load", return_value={}), mock.patch.object(
            fe_mod.FeatureExtractorInceptionV3, "load_state_dict", lambda self, sd, *a, **k: None):
        fe = fe_mod.FeatureExtractorInceptionV3("inception-v3-compat", ["2048"],
                                                feature_extractor_weights_path="-")
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for m in fe.modules():
            if isinstance(m, nn.Conv2d):
                fan_in = m.in_channels * m.kernel_size[0] * m.kernel_size[1]
                m.weight.copy_(torch.randn(m.weight.shape, generator=g) * math.sqrt(2 / fan_in))
            elif isinstance(m, nn.BatchNorm2d):
                m.running_mean.zero_()
                m.running_var.fill_(1.0)
                m.weight.fill_(1.0)
                m.bias.zero_()
        fe.fc.weight.copy_(torch.randn(fe.fc.weight.shape, generator=g) * 0.02)
        fe.fc.bias.zero_()
        x = (torch.rand(8, 3, 32, 32, generator=g) * 255).to(torch.uint8)
        fe.features_list = ["2048"]
        pool = fe(x)[0]
        fe.fc.weight.mul_(2.0 / (pool @ fe.fc.weight.T).std())
    path = tmp_path_factory.mktemp("inception") / INCEPTION_FILE
    torch.save(fe.state_dict(), path)
    return path


@pytest.fixture(scope="module")
def ray_2cpu(tmp_path_factory):
    """A private 2-CPU local Ray for one test module (the CI machine's size). The digits
    extractor cache and this directory (for test-only trainables) reach the workers through
    the environment they inherit."""
    import ray

    os.environ["TUNEABLE_GAN_CACHE"] = str(tmp_path_factory.mktemp("cache"))
    here = Path(__file__).parent
    # Trainables defined in test modules are pickled by module name: workers need their dirs.
    dirs = [str(here), *(str(d) for d in sorted(here.iterdir()) if d.is_dir()
                         and any(d.glob("test_*.py")))]
    os.environ["PYTHONPATH"] = os.pathsep.join(
        p for p in (*dirs, os.environ.get("PYTHONPATH", "")) if p)
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             _temp_dir=tempfile.mkdtemp(prefix="ray", dir="/tmp"))
    yield
    ray.shutdown()


def random_digits_cache(root: Path) -> Path:
    """A cache directory whose digits classifier is a seeded random DigitsCNN (training the real
    one takes ~15 s): FID and features are well defined, just not meaningful."""
    from tuneable_gan import digits_cnn

    def random_classifier() -> tuple[digits_cnn.DigitsCNN, float]:
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            net = digits_cnn.DigitsCNN().eval().requires_grad_(False)
            net.normalise_features(torch.rand(64, 1, 16, 16) * 2 - 1)
        return net, math.nan

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(digits_cnn, "train_digits_classifier", random_classifier)
        digits_cnn.ensure_digits_classifier(root)
    return root



def stand_in_start() -> int:
    """The step a stand-in Tune trainable resumes after: its checkpoint's, else 0."""
    import json

    from ray import tune

    ckpt = tune.get_checkpoint()
    if ckpt is None:
        return 0
    with ckpt.as_directory() as d:
        return json.loads((Path(d) / "s.json").read_text())["step"]


def stand_in_report(metrics: dict, checkpoint: bool) -> None:
    """``tune.report`` of a stand-in trainable, with a checkpoint of its step when asked."""
    import json

    from ray import tune

    if not checkpoint:
        tune.report(metrics)
        return
    with tempfile.TemporaryDirectory() as d:
        (Path(d) / "s.json").write_text(json.dumps({"step": metrics["step"]}))
        tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(d))
