"""The data instance prior in training: C sees only clean real images, once; pairing of every
image with its prior through the D and G steps; bitwise resume; transfer (model.init_from);
the one-line refusals (docs/methods.md 9)."""

from __future__ import annotations

import copy
import dataclasses

import pytest
import torch
import yaml
from conftest import TINY, tiny_config
from test_trainer import assert_bitwise_equal

from tuneable_gan.checkpoint import read_checkpoint, write_checkpoint
from tuneable_gan.cli import main
from tuneable_gan.data import load_data
from tuneable_gan.errors import ConfigError, UserError
from tuneable_gan.prior import networks
from tuneable_gan.trainer import GANTrainer

PRIOR = {"prior__network": "random_digits", "prior__components": 3}


@pytest.fixture(autouse=True)
def _own_cache(tmp_path, monkeypatch):
    # A fresh prior cache per test: C must really run where a test counts its calls.
    monkeypatch.setenv("TUNEABLE_GAN_CACHE", str(tmp_path / "cache"))


class SpyC(torch.nn.Module):
    """Wraps a prior network and records every batch it is called on."""

    def __init__(self, inner: torch.nn.Module) -> None:
        super().__init__()
        self.inner, self.seen = inner, []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen.append(x.detach().clone())
        return self.inner(x)


@pytest.fixture
def spy(monkeypatch):
    """The random_digits builder, with its network wrapped in a SpyC."""
    holder: dict[str, SpyC] = {}
    build = networks.PRIOR_NETWORKS.get("random_digits")

    def spied(cfg, cache_dir):
        net = build(cfg, cache_dir)
        holder["c"] = SpyC(net.module)
        return dataclasses.replace(net, module=holder["c"])

    monkeypatch.setitem(networks.PRIOR_NETWORKS._items, "random_digits", spied)
    return holder


def test_the_prior_network_sees_only_the_clean_real_images_once(spy):
    cfg = tiny_config(**PRIOR, data__flip=True)
    t = GANTrainer(cfg)
    c = spy["c"]
    seen = torch.cat(c.seen)
    clean = load_data(cfg.data, "train").images
    # Every training image and its mirror image (the flipped priors), nothing else: no fake,
    # no augmented image.
    assert seen.shape[0] == 2 * len(clean)
    expected = torch.cat([clean, clean.flip(-1)])
    assert torch.equal(torch.sort(seen.flatten(1), dim=0)[0],
                       torch.sort(expected.flatten(1), dim=0)[0])
    calls = len(c.seen)
    for _ in range(3):
        t.train_step()
    t.evaluate()
    t.samples(4)
    assert len(c.seen) == calls  # never during G or D steps, evaluation or sampling
    # A second run on the same data reads the cached priors: C is not called at all.
    spy.clear()
    GANTrainer(cfg)
    assert "c" not in spy or not spy["c"].seen


def test_a_fake_is_scored_with_the_prior_that_generated_it(monkeypatch):
    cfg = tiny_config(**PRIOR, data__flip=True, regularizer__pairing="magnitude")
    t = GANTrainer(cfg)
    g_priors, d_priors = [], []
    # A training forward of G is rest(train_stem(z, y), y): y reaches rest either way.
    g_rest, d_head = t.G.rest, t.D.head
    monkeypatch.setattr(t.G, "rest", lambda u, y=None: g_priors.append(y) or g_rest(u, y))
    monkeypatch.setattr(t.D, "head", lambda h, y=None: d_priors.append(y) or d_head(h, y))
    t.d_step(0)
    B = cfg.optim.batch_size
    assert len(g_priors) == 1 and len(d_priors) == 1
    y = d_priors[0]
    torch.testing.assert_close(y[:B], g_priors[0], rtol=0, atol=0)
    # The reals' priors are rows of the stored bank (or of its flipped twin), not fresh features.
    bank = torch.cat([t.cond.features, t.cond.flipped])
    for row in y[B:]:
        assert (bank == row).all(dim=1).any()
    norms = y.norm(dim=1)
    torch.testing.assert_close(norms, torch.ones_like(norms))


def test_resume_with_priors_is_bitwise_identical(tmp_path):
    cfg = tiny_config(**PRIOR, data__flip=True)
    straight = GANTrainer(cfg)
    logged_straight = [straight.train_step() for _ in range(6)]
    first = GANTrainer(cfg)
    logged = [first.train_step() for _ in range(3)]
    write_checkpoint(tmp_path / "ck", first.state_dict(), first.cfg)
    state, cfg2 = read_checkpoint(tmp_path / "ck")
    second = GANTrainer(cfg2)
    second.load_state_dict(state)
    logged += [second.train_step() for _ in range(3)]
    assert logged == logged_straight
    assert_bitwise_equal(second.state_dict(), straight.state_dict())
    assert second.evaluate() == straight.evaluate()


def test_evaluation_records_the_sampler_and_is_reproducible():
    cfg = tiny_config(**PRIOR, eval__num_samples=64, eval__batch_size=64, eval__nn=True)
    t = GANTrainer(cfg)
    t.train_step()
    m = t.evaluate()
    assert "prior=random_digits" in m["eval_protocol"] and "gmm" in m["eval_protocol"]
    assert m["nn_fake"] > 0 and m["nn_real"] > 0
    assert t.evaluate()["fid"] == m["fid"]  # fixed seeds: same weights, same number
    train = dataclasses.replace(cfg, prior=dataclasses.replace(cfg.prior, sampler="train"))
    assert "training set" in GANTrainer(train).evaluate()["eval_protocol"]


def test_init_from_starts_g_d_and_g_ema_from_another_runs_checkpoint(tmp_path):
    source = GANTrainer(tiny_config(**PRIOR, data__fraction=0.2))
    for _ in range(2):
        source.train_step()
    ck = write_checkpoint(tmp_path / "src", source.state_dict(), source.cfg)
    t = GANTrainer(tiny_config(**PRIOR, model__init_from=str(ck)))
    assert_bitwise_equal(t.G.state_dict(), source.G.state_dict())
    assert_bitwise_equal(t.D.state_dict(), source.D.state_dict())
    assert_bitwise_equal(t.G_ema.state_dict(), source.G_ema.state_dict())
    assert t.step == 0 and t.images_seen == 0  # only the weights transfer


def test_init_from_of_another_architecture_or_conditioning_is_one_line(tmp_path):
    src = GANTrainer(tiny_config(**PRIOR))
    ck = write_checkpoint(tmp_path / "src", src.state_dict(), src.cfg)
    with pytest.raises(ConfigError, match="does not fit this run's models") as e:
        GANTrainer(tiny_config(model__init_from=str(ck)))  # no prior here: no projection
    assert "\n" not in str(e.value)
    toy = GANTrainer(tiny_config(data__name="toy2pt", model__arch="toy",
                                 augment__diffaugment=""))
    ck2 = write_checkpoint(tmp_path / "toy", toy.state_dict(), toy.cfg)
    with pytest.raises(ConfigError, match="model.arch=toy checkpoint"):
        GANTrainer(tiny_config(**PRIOR, model__init_from=str(ck2)))
    with pytest.raises(UserError, match="model.init_from"):
        GANTrainer(tiny_config(model__init_from=str(tmp_path / "nothing")))


def _cli(tmp_path, capsys, **dotted) -> tuple[int, str]:
    path = tmp_path / "run.yaml"
    # Written as the user would (dotted keys), not validated here: the CLI must refuse it.
    path.write_text(yaml.safe_dump(TINY | {k.replace("__", "."): v for k, v in dotted.items()}))
    code = main(["train", str(path), "--out", str(tmp_path / "out"), "--quiet"])
    return code, capsys.readouterr().err.strip()


@pytest.mark.parametrize("dotted, needle", [
    ({"prior__network": "resnet50"}, "prior.weights"),
    ({"prior__network": "resnet50", "prior__weights": "/no/such/file.pth"}, "prior.weights"),
    ({**PRIOR, "prior__components": 500}, "prior.components"),
    ({**PRIOR, "model__conditional": True}, "prior.network"),
])
def test_bad_prior_inputs_are_one_line_and_exit_2(tmp_path, capsys, dotted, needle):
    code, err = _cli(tmp_path, capsys, **dotted)
    assert code == 2 and needle in err and len(err.splitlines()) == 1, err
    assert not (tmp_path / "out" / "checkpoints").exists()


def test_weights_of_another_architecture_are_one_line(tmp_path, capsys):
    import torchvision

    with torch.random.fork_rng(devices=[]):
        vgg = torchvision.models.vgg11(weights=None)
    torch.save(vgg.state_dict(), tmp_path / "vgg.pth")
    code, err = _cli(tmp_path, capsys, prior__network="resnet50",
                     prior__weights=str(tmp_path / "vgg.pth"))
    assert code == 2 and "prior.weights" in err and len(err.splitlines()) == 1, err


def test_same_dimension_is_required_of_a_transferred_prior(tmp_path):
    src = GANTrainer(tiny_config(**PRIOR))
    state = copy.deepcopy(src.state_dict())
    # Pretend the source was conditioned on 64-d features: its projection is (F, 64).
    key = next(k for k in state["D"] if "embed" in k and state["D"][k].dim() == 2)
    state["D"][key] = state["D"][key][:, :64].clone()
    ck = write_checkpoint(tmp_path / "src", state, src.cfg)
    with pytest.raises(ConfigError, match="expected shape"):
        GANTrainer(tiny_config(**PRIOR, model__init_from=str(ck)))
