"""Paper scale on CPU: the paper's search spaces under --smoke on a tiny CIFAR archive in the real
format, and biggan / folder runs that train and evaluate end to end with (random) Inception."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from cifar_fake import write_cifar
from conftest import TINY
from PIL import Image

from tuneable_gan.cli import main
from tuneable_gan.config import from_dict
from tuneable_gan.tune.launch import run_sweep
from tuneable_gan.tune.space import load_space

SPACES = Path(__file__).resolve().parents[2] / "search_spaces"
PAPER = ["cifar10_table1", "cifar100_table2", "regularizers_table10", "pairing_table5"]
# CPU-sized stand-ins for the paper's widths, steps and sample counts.
SHRINK = ["model.g_ch=4", "model.d_ch=4", "model.z_dim=8", "optim.batch_size=4",
          "optim.g_batch_size=4", "optim.d_steps=1", "train.steps=4", "eval.num_samples=8",
          "eval.batch_size=8", "eval.g_batch_size=8", "tune.resources.cpu=1",
          "tune.resources.gpu=0", "data.flip=false"]


@pytest.fixture(scope="module")
def archives(tmp_path_factory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("cifar")
    return {n: write_cifar(base / n, n, n=8) for n in ("cifar10", "cifar100")}




@pytest.mark.slow
@pytest.mark.parametrize("stem", PAPER)
def test_paper_space_runs_under_smoke(stem, archives, random_inception, ray_2cpu, tmp_path):
    spec = load_space(SPACES / f"{stem}.yaml")
    root = archives[spec.base.data.name]
    spec = spec.with_overrides([*SHRINK, f"data.root={root}",
                                f"eval.extractor_weights={random_inception}",
                                f"tune.storage={tmp_path}"]).smoke()
    results = run_sweep(spec)
    assert results.num_errors == 0 and len(results) == spec.expected_trials() <= 4
    for r in results:
        assert r.metrics["step"] == 4 and torch.isfinite(torch.tensor(r.metrics["fid_best"]))
        assert torch.isfinite(torch.tensor(r.metrics["nn_fake"]))  # the memorisation columns
        assert r.metrics["eval_protocol"].startswith("inception-")
        # each cell ran its own recipe: the SNGAN cells of Table 1 the sngan_cifar preset's
        sngan = r.metrics["model.arch"] == "sngan"
        assert r.metrics["optim.lr_schedule"] == ("linear" if sngan else "constant")
        assert r.metrics["optim.g_ema_buffers"] is (not sngan)
    if stem == "cifar10_table1":
        assert {r.metrics["model.arch"] for r in results} == {"biggan", "sngan"}


def _train(capsys, cfg: dict, out: Path, weights: Path) -> list[dict]:
    p = out.parent / f"{out.name}.yaml"
    p.write_text(from_dict(cfg | {"eval.extractor": "inception",
                                  "eval.extractor_weights": str(weights)}).to_yaml())
    code = main(["train", str(p), "--out", str(out), "--quiet"])
    assert code == 0, capsys.readouterr().err
    return [json.loads(ln) for ln in (out / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.slow
def test_biggan_on_a_cifar_archive_trains_and_evaluates(archives, random_inception, tmp_path,
                                                        capsys, monkeypatch):
    monkeypatch.setenv("TUNEABLE_GAN_CACHE", str(tmp_path / "cache"))
    cfg = TINY | {"data.name": "cifar10", "data.root": str(archives["cifar10"]),
                  "data.resolution": 32, "data.fraction": 1.0, "model.arch": "biggan",
                  "model.g_ch": 4, "model.d_ch": 4, "train.steps": 4, "train.eval_every": 2,
                  "eval.num_samples": 8, "eval.batch_size": 8, "regularizer.name": "lecam",
                  "regularizer.start": 0}
    rows = _train(capsys, cfg, tmp_path / "biggan", random_inception)
    evals = [r for r in rows if "fid" in r]
    assert [r["step"] for r in evals] == [2, 4] and all(r["fid"] > 0 for r in evals)
    assert (tmp_path / "biggan" / "checkpoints" / "best" / "state.pt").exists()


@pytest.mark.slow
def test_folder_run_trains_and_evaluates(random_inception, tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("TUNEABLE_GAN_CACHE", str(tmp_path / "cache"))
    root = tmp_path / "shots"
    g = torch.Generator().manual_seed(0)
    for cls in ("a", "b"):
        (root / cls).mkdir(parents=True)
        for i in range(6):
            px = (torch.rand(20, 24, 3, generator=g) * 255).to(torch.uint8).numpy()
            Image.fromarray(px).save(root / cls / f"{i}.png")
    cfg = TINY | {"data.name": "folder", "data.root": str(root), "data.resolution": 16,
                  "data.fraction": 1.0, "train.steps": 4, "train.eval_every": 4,
                  "eval.num_samples": 8, "eval.batch_size": 8}
    rows = _train(capsys, cfg, tmp_path / "folder", random_inception)
    assert rows[-1]["step"] == 4 and rows[-1]["fid"] > 0


@pytest.mark.slow
def test_instance_prior_gpu_space_runs_under_smoke(archives, random_inception, ray_2cpu,
                                                   tmp_path):
    # A random-weights ResNet-50 file stands in for the ImageNet weights the space asks for.
    import torchvision

    with torch.random.fork_rng(devices=[]):
        torch.save(torchvision.models.resnet50(weights=None).state_dict(), tmp_path / "r50.pth")
    spec = load_space(SPACES / "instance_prior_gpu.yaml")
    spec = spec.with_overrides([*SHRINK, f"data.root={archives['cifar10']}",
                                f"eval.extractor_weights={random_inception}",
                                f"prior.weights={tmp_path / 'r50.pth'}", "prior.components=1",
                                "prior.flip_features=false", "data.fraction=0.25",
                                f"tune.storage={tmp_path}"]).smoke()
    results = run_sweep(spec)
    assert results.num_errors == 0 and len(results) == spec.expected_trials() <= 4
    priors = {r.metrics["prior.network"] for r in results}
    assert priors == {"random_resnet50", "resnet50"}  # --smoke keeps the first two values
    for r in results:
        assert r.metrics["step"] == 4 and r.metrics["nn_fake"] >= 0
        assert ("prior=" in r.metrics["eval_protocol"]) is (r.metrics["prior.network"] != "none")


# CPU-sized StyleGAN2: narrow widths, 32 px, a batch of one minibatch-stddev group.
STYLEGAN2_SHRINK = ["model.fmaps=0.0078125", "model.channel_max=16", "model.z_dim=16",
                    "model.w_dim=16", "data.resolution=32", "optim.batch_size=4",
                    "optim.g_batch_size=4", "train.steps=4", "eval.num_samples=8",
                    "eval.batch_size=8", "tune.resources.cpu=1", "tune.resources.gpu=0"]


@pytest.mark.slow
def test_fewshot_stylegan2_space_runs_under_smoke(random_inception, ray_2cpu, tmp_path):
    spec = load_space(SPACES / "fewshot_stylegan2.yaml")
    spec = spec.with_overrides([*STYLEGAN2_SHRINK, f"eval.extractor_weights={random_inception}",
                                f"tune.storage={tmp_path}"]).smoke()
    results = run_sweep(spec)
    assert results.num_errors == 0 and len(results) == spec.expected_trials() == 4
    cells = set()
    for r in results:
        m = r.metrics
        assert m["step"] == 4 and torch.isfinite(torch.tensor(m["fid_best"]))
        assert m["model.arch"] == "stylegan2" and m["loss.r1_interval"] == 16
        cells.add((m["augment.diffaugment"], m["augment.ada"], m["regularizer.weight"]))
        # ADA's p is reported where ADA runs (it may still be 0 after 4 steps)
        assert ("ada_p" in m) is (m["augment.ada"] == "bgc")
    assert len(cells) == 4  # --smoke keeps 4 of the 8 cells, each once
