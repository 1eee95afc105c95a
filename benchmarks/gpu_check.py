"""Two Python steps of ``benchmarks/gpu_check.sh``: the environment and the Inception FID
timing (``gpu_report.py`` gathers every step's results into one table).

    python benchmarks/gpu_check.py env
    python benchmarks/gpu_check.py fid [--samples 10000] [--device cuda] [--smoke]

``fid`` times an evaluation of the ``biggan_cifar`` protocol (Inception, ``eval.num_samples``
samples against the test split, IS too) of an untrained BigGAN on a noise CIFAR-10 folder: the
first call (the reference statistics computed too) and a second one (cached reference, what each
evaluation of a run costs). Inception weights come from ``$INCEPTION_WEIGHTS`` or torch's hub
cache; where neither has them (the file is ~92 MB, more than a GPU check can carry) the same
network with random weights is timed instead, and the table says so: the time is Inception's,
the value is no FID.
"""

from __future__ import annotations

import argparse
import importlib
import math
import os
import platform
import sys
import tempfile
import time
from pathlib import Path
from unittest import mock

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

# What training, evaluation and the CLI import; analysis (reports) and tune (sweeps) need
# pandas, scipy and Ray, which a GPU check does not.
PROJECT_MODULES = ("tuneable_gan.trainer", "tuneable_gan.metrics", "tuneable_gan.extractors",
                   "tuneable_gan.cli")
OTHER_MODULES = ("numpy", "PIL", "yaml", "tqdm", "torch_fidelity", "sklearn", "scipy", "ray")


def version(name: str) -> str:
    """``name``'s version, or why it is not there."""
    try:
        mod = importlib.import_module(name)
    except Exception as e:  # noqa: BLE001  (any import failure is the answer)
        return f"not importable ({type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''})"
    return str(getattr(mod, "__version__", "present"))


def env() -> str:
    """A Markdown table of the machine, the packages and whether the project imports."""
    rows = [("python", platform.python_version()), ("torch", torch.__version__),
            ("cuda", torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"),
            ("installed from wheels", os.environ.get("GPU_CHECK_INSTALLED", "") or "nothing")]
    if torch.cuda.is_available():
        free, total = torch.cuda.mem_get_info(0)
        rows.append(("cuda memory", f"{total / 2**30:.1f} GiB ({free / 2**30:.1f} free)"))
    rows += [(m, version(m)) for m in OTHER_MODULES]
    failed = []
    for m in PROJECT_MODULES:
        ok = version(m)
        failed += [m] if ok.startswith("not importable") else []
        rows.append((m, "imports" if not ok.startswith("not importable") else ok))
    out = "\n".join(["| item | value |", "|---|---|", *(f"| {k} | {v} |" for k, v in rows)])
    print(out)
    if failed:
        raise SystemExit(f"the project does not import: {', '.join(failed)}")
    return out


def random_inception(path: Path) -> Path:
    """torch-fidelity's Inception with random (He-normal) weights, saved to ``path``: the same
    network, so the same time."""
    import torch_fidelity.feature_extractor_inceptionv3 as fe_mod

    # Its constructor insists on loading a file: give it nothing, then draw the weights.
    with mock.patch.object(fe_mod.torch, "load", return_value={}), mock.patch.object(
            fe_mod.FeatureExtractorInceptionV3, "load_state_dict", lambda *a, **k: None):
        fe = fe_mod.FeatureExtractorInceptionV3("inception-v3-compat", ["2048"],
                                                feature_extractor_weights_path="-")
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for m in fe.modules():
            if isinstance(m, torch.nn.Conv2d):
                fan_in = m.weight[0].numel()
                m.weight.copy_(torch.randn(m.weight.shape, generator=g) * math.sqrt(2 / fan_in))
    torch.save(fe.state_dict(), path)
    return path


def fid(samples: int, device: str, smoke: bool, calls: int = 2) -> str:
    """Time ``calls`` evaluations (the first computes the reference statistics, the others
    find them cached); a Markdown table."""
    # Imported here: ``env`` must run, and say what is missing, where the project fails to.
    from noise_cifar import write_noise_cifar
    from vs_reference import ours_config

    from tuneable_gan.config import from_dict
    from tuneable_gan.extractors import default_inception_path
    from tuneable_gan.trainer import GANTrainer

    with tempfile.TemporaryDirectory() as tmp, mock.patch.dict(
            os.environ, {"TUNEABLE_GAN_CACHE": str(Path(tmp) / "cache")}):  # compute, not reuse
        given = os.environ.get("INCEPTION_WEIGHTS")
        if given or default_inception_path().is_file():
            weights, kind = Path(given) if given else default_inception_path(), "real weights"
        else:
            weights = random_inception(Path(tmp) / "inception-random.pth")
            kind = "RANDOM weights (the real file cannot travel): a time, not an FID"
        root = write_noise_cifar(Path(tmp) / "data", train_rows=1000, test_rows=samples)
        cfg = ours_config(root, device, smoke=smoke) | {
            "eval.num_samples": samples, "eval.extractor_weights": str(weights)}
        trainer = GANTrainer(from_dict(cfg))
        t0 = time.perf_counter()
        trainer.evaluator  # noqa: B018  (loads the weights and the reference images)
        t_build = time.perf_counter() - t0
        sync = torch.cuda.synchronize if trainer.device.type == "cuda" else (lambda: None)
        times, values = [], []
        for _ in range(calls):
            sync()
            t0 = time.perf_counter()
            m = trainer.evaluate()
            sync()
            times.append(time.perf_counter() - t0)
            values.append(m["fid"])
    shown = [f"{v:.2f}" if kind == "real weights" else "n/a (random weights)" for v in values]
    lines = [f"Inception ({kind}); {samples} samples vs {samples} test images; "
             f"IS too; device {trainer.device}", "",
             "| evaluation | seconds | fid |", "|---|---|---|",
             f"| Evaluator built (weights, reference images) | {t_build:.2f} | |",
             f"| first: {samples} fakes + {samples} reals | {times[0]:.2f} | {shown[0]} |"]
    lines += [f"| call {i + 1}: {samples} fakes, reference cached | {t:.2f} | {v} |"
              for i, (t, v) in enumerate(zip(times[1:], shown[1:]), start=1)]
    out = "\n".join(lines)
    print(out)
    return out


def main(argv: list[str] | None = None) -> None:
    """Run the subcommand."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    sub.add_parser("env").set_defaults(run=lambda a: env())
    f = sub.add_parser("fid")
    f.add_argument("--samples", type=int, default=10_000)
    f.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    f.add_argument("--calls", type=int, default=2, help="evaluations timed")
    f.add_argument("--smoke", action="store_true", help="widths 16 (pass a small --samples)")
    f.set_defaults(run=lambda a: fid(a.samples, a.device, a.smoke, a.calls))
    args = p.parse_args(argv)
    args.run(args)


if __name__ == "__main__":
    main()
