"""The prior networks: features against hand-written pipelines, files, remapping, errors.

No downloads: resnet50 / vgg16 / SimCLR files are random weights written to tmp dirs, and the
224-px networks are run on one image only.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from tuneable_gan.cache_files import file_hash
from tuneable_gan.config import PRIOR_NETWORK_NAMES, PriorConfig
from tuneable_gan.data import to_uint8
from tuneable_gan.digits_cnn import DigitsCNN, preprocess_digits
from tuneable_gan.errors import ConfigError, UserError
from tuneable_gan.prior import PRIOR_NETWORKS, build_prior_network, network_tag
from tuneable_gan.prior import networks as nets

MEAN = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
STD = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)


def imagenet_input(x: torch.Tensor) -> torch.Tensor:
    """Oracle preprocessing: [-1, 1] -> [0, 1], gray to RGB, 224 bilinear antialiased, mean/std."""
    x = (x + 1) / 2
    x = x.repeat(1, 3, 1, 1) if x.shape[1] == 1 else x
    x = F.interpolate(x, size=(224, 224), mode="bilinear", align_corners=False, antialias=True)
    return (x - MEAN) / STD


def images(n: int, c: int, r: int, seed: int = 0) -> torch.Tensor:
    return torch.rand(n, c, r, r, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def frozen(module: nn.Module) -> bool:
    return not module.training and not any(p.requires_grad for p in module.parameters())


def seeded_resnet50(seed: int) -> nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return torchvision.models.resnet50(weights=None).eval()


@pytest.fixture(scope="module")
def resnet_state() -> dict[str, torch.Tensor]:
    return seeded_resnet50(7).state_dict()


@pytest.fixture(scope="module")
def resnet_file(resnet_state, tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("w") / "resnet50.pth"
    torch.save(resnet_state, path)
    return path


@pytest.fixture(scope="module")
def vgg_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A vgg16 state dict of 1/sqrt(fan_in)-scaled normal weights (faster than the init)."""
    with torch.device("meta"):
        meta = torchvision.models.vgg16(weights=None)
    shapes = {k: v.shape for k, v in meta.state_dict().items()}
    gen = torch.Generator().manual_seed(3)
    state = {k: torch.randn(s, generator=gen) / math.sqrt(s[1:].numel() if len(s) > 1 else 100)
             for k, s in shapes.items()}
    path = tmp_path_factory.mktemp("w") / "vgg16.pth"
    torch.save(state, path)
    return path


def test_names_are_the_configs() -> None:
    assert set(PRIOR_NETWORKS.names()) == set(PRIOR_NETWORK_NAMES)


def test_none_is_not_a_network(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="prior.network=none"):
        build_prior_network(PriorConfig(network="none"), tmp_path)


def test_digits_uses_the_cached_classifier(tmp_path: Path, monkeypatch) -> None:
    torch.manual_seed(5)
    net = DigitsCNN()
    net.feature_scale.fill_(0.5)
    path = tmp_path / "digits.pt"
    torch.save({"state_dict": net.state_dict(), "recipe": "{}", "test_accuracy": 0.0}, path)
    seen = []
    monkeypatch.setattr(nets, "ensure_digits_classifier", lambda d: seen.append(d) or path)
    cfg = PriorConfig(network="digits")
    prior = build_prior_network(cfg, tmp_path)
    x = images(4, 3, 12)
    with torch.no_grad():
        expected = net.features(preprocess_digits(to_uint8(x)))
        torch.testing.assert_close(prior.module(x), expected)
    assert prior.dim == 128 and frozen(prior.module) and seen[0] == tmp_path
    assert prior.tag == f"digits-{file_hash(path)}" == network_tag(cfg, tmp_path)


def test_random_digits_is_seeded_and_leaves_the_global_rng() -> None:
    state = torch.get_rng_state()
    a = build_prior_network(PriorConfig(network="random_digits", seed=1), Path("."))
    b = build_prior_network(PriorConfig(network="random_digits", seed=2), Path("."))
    assert torch.equal(torch.get_rng_state(), state)
    torch.manual_seed(1)
    oracle = DigitsCNN()
    for k, v in oracle.state_dict().items():
        assert torch.equal(a.module.net.state_dict()[k], v)
    assert not torch.equal(a.module.net.fc.weight, b.module.net.fc.weight)
    assert "seed1" in a.tag and a.tag != b.tag and frozen(a.module)
    assert a.module(images(2, 1, 16)).shape == (2, 128)


def test_resnet50_pooled_features(resnet_file: Path, resnet_state, tmp_path: Path) -> None:
    cfg = PriorConfig(network="resnet50", weights=str(resnet_file))
    state = torch.get_rng_state()
    prior = build_prior_network(cfg, tmp_path)
    assert torch.equal(torch.get_rng_state(), state)
    oracle = seeded_resnet50(0)
    oracle.load_state_dict(resnet_state)
    oracle.fc = nn.Identity()
    x = images(1, 1, 20)  # gray: repeated to RGB
    with torch.no_grad():
        got = prior.module(x)
        torch.testing.assert_close(got, oracle(imagenet_input(x)))
    assert got.shape == (1, 2048) and prior.dim == 2048 and frozen(prior.module)
    assert prior.tag == f"resnet50-{file_hash(resnet_file)}" == network_tag(cfg, tmp_path)
    # The same weights under "model" (a training checkpoint) load the same.
    wrapped = tmp_path / "ckpt.pth"
    torch.save({"model": resnet_state, "epoch": 3}, wrapped)
    other = build_prior_network(PriorConfig(network="resnet50", weights=str(wrapped)), tmp_path)
    for k, v in other.module.state_dict().items():
        assert torch.equal(v, prior.module.state_dict()[k])


def test_vgg16_fc7(vgg_file: Path, tmp_path: Path) -> None:
    prior = build_prior_network(PriorConfig(network="vgg16", weights=str(vgg_file)), tmp_path)
    s = torch.load(vgg_file, weights_only=True, mmap=True)
    with torch.device("meta"):
        full = torchvision.models.vgg16(weights=None)
    full.load_state_dict(s, assign=True)
    x = images(1, 3, 32)
    with torch.no_grad():
        h = torch.flatten(full.avgpool(full.features(imagenet_input(x))), 1)
        fc6 = F.relu(F.linear(h, s["classifier.0.weight"], s["classifier.0.bias"]))
        fc7 = F.relu(F.linear(fc6, s["classifier.3.weight"], s["classifier.3.bias"]))
        torch.testing.assert_close(prior.module(x), fc7)
    assert prior.dim == 4096 and fc7.shape == (1, 4096) and frozen(prior.module)


def test_random_imagenet_networks_are_seeded(tmp_path: Path) -> None:
    prior = build_prior_network(PriorConfig(network="random_resnet50", seed=4), tmp_path)
    oracle = seeded_resnet50(4)
    body = prior.module.body.state_dict()
    assert all(torch.equal(body[k], v) for k, v in oracle.state_dict().items() if "fc." not in k)
    assert prior.tag.startswith("random_resnet50-seed4-") and frozen(prior.module)
    vgg = build_prior_network(PriorConfig(network="random_vgg16"), tmp_path)
    with torch.no_grad():
        assert vgg.module(images(1, 3, 8)).shape == (1, 4096) and vgg.dim == 4096


def test_simclr_keys() -> None:
    assert nets.simclr_key("module.encoder.conv1.weight") == "conv1.weight"
    assert nets.simclr_key("convnet.resnet.layer1.0.bn1.running_mean") == \
        "layer1.0.bn1.running_mean"
    for head in ("module.projector.0.weight", "backbone.fc.0.weight", "encoder.fc.bias",
                 "head.2.weight", "g.0.weight"):
        assert nets.simclr_key(head) is None


def test_simclr_checkpoint_loads_the_backbone(resnet_state, tmp_path: Path) -> None:
    ckpt = {f"module.encoder.{k}": v for k, v in resnet_state.items() if not k.startswith("fc.")}
    ckpt["module.projector.0.weight"] = torch.randn(16, 2048)
    ckpt["module.projector.2.weight"] = torch.randn(8, 16)
    path = tmp_path / "simclr.pth"
    torch.save({"state_dict": ckpt, "epoch": 100}, path)
    prior = build_prior_network(PriorConfig(network="simclr_resnet50", weights=str(path)),
                                tmp_path)
    body = prior.module.body.state_dict()
    assert set(body) == {k for k in resnet_state if not k.startswith("fc.")}
    assert all(torch.equal(v, resnet_state[k]) for k, v in body.items())
    assert prior.dim == 2048 and prior.tag == f"simclr_resnet50-{file_hash(path)}"


def _one_line_error(cfg: PriorConfig, tmp_path: Path, *parts: str) -> None:
    with pytest.raises(UserError) as err:
        build_prior_network(cfg, tmp_path)
    msg = str(err.value)
    assert "\n" not in msg and "prior.weights" in msg and cfg.network in msg, msg
    for p in parts:
        assert p in msg, msg


def test_weights_errors(tmp_path: Path, vgg_file: Path, resnet_state) -> None:
    _one_line_error(PriorConfig(network="resnet50"), tmp_path, "set prior.weights")
    _one_line_error(PriorConfig(network="vgg16", weights=str(tmp_path / "nope.pth")), tmp_path,
                    "file not found", "nope.pth")
    _one_line_error(PriorConfig(network="resnet50", weights=str(vgg_file)), tmp_path,
                    "missing key conv1.weight")
    bad = dict(resnet_state, **{"conv1.weight": torch.zeros(64, 3, 3, 3)})
    torch.save(bad, tmp_path / "shape.pth")
    _one_line_error(PriorConfig(network="resnet50", weights=str(tmp_path / "shape.pth")),
                    tmp_path, "conv1.weight", "(64, 3, 3, 3)", "(64, 3, 7, 7)")
    ckpt = {f"encoder.{k}": v for k, v in resnet_state.items()} | {"encoder.x.w": torch.ones(1)}
    torch.save(ckpt, tmp_path / "extra.pth")
    _one_line_error(PriorConfig(network="simclr_resnet50", weights=str(tmp_path / "extra.pth")),
                    tmp_path, "unexpected key x.w")
    (tmp_path / "junk.pth").write_bytes(b"not a torch file")
    _one_line_error(PriorConfig(network="resnet50", weights=str(tmp_path / "junk.pth")),
                    tmp_path, "cannot read")
    torch.save({"epoch": 3}, tmp_path / "empty.pth")
    _one_line_error(PriorConfig(network="resnet50", weights=str(tmp_path / "empty.pth")),
                    tmp_path, "no state dict")
