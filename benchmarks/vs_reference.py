"""This project's BigGAN-CIFAR training step against the reference implementation's own, timed
side by side.

One G iteration each: batch 50, 4 D steps with DigGAN on the first, DiffAugment
translation,cutout, hinge loss, Adam, the G EMA. Ours is the ``biggan_cifar`` preset with
``regularizer.name=diggan`` (``regularizer.every=first``) on a CIFAR-10 folder of noise images
(``noise_cifar.py``; times do not depend on pixels). The reference is AilsaF/DigGAN
``DiffAugment-biggan-cifar`` from a local checkout (``--reference``, never part of this
repository): its ``BigGAN.Generator`` / ``Discriminator`` / ``G_D``, ``utils.ema`` and
``train_fns.GAN_training_function``, configured by parsing one of its own DigGAN scripts
(``--script``) with its own ``utils.prepare_parser``, as its ``train.py`` does.

Same device, same thread count, rounds interleaved (ours, reference, ours, ...) so machine load
hits both alike; the median seconds per G iteration per side, a Markdown table and the ratio are
printed. Each side runs under its own process-wide backend flags, switched before its rounds:
the reference under PyTorch's defaults plus ``cudnn.benchmark`` (which its ``train.py`` sets),
ours under what its trainer sets on CUDA (TF32 matmuls, the cuDNN autotuner).

Differences that are not the step's: the reference's ``--parallel`` (``nn.DataParallel``, a
multi-GPU wrapper) is left off on one device; its real batches come from a tensor already on the
device (its DataLoader's work is outside the step), ours from its in-memory dataset as always;
``--precision bf16`` applies to ours only: the reference has only its own fp16 options and runs
in fp32 here. On CPU the reference's one hard-coded ``.cuda()`` call (in ``train_fns.get_grad``)
is redirected to the CPU for the duration of its steps.

    python benchmarks/vs_reference.py --reference PATH/DiffAugment-biggan-cifar [--device cuda]
        [--precision fp32|bf16] [--rounds 5] [--steps 10] [--threads N] [--smoke] [--ours-only]
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import shlex
import statistics
import sys
import tempfile
import time
import types
from collections.abc import Callable, Iterator
from pathlib import Path
from unittest import mock

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from noise_cifar import write_noise_cifar  # noqa: E402

from tuneable_gan.config import from_dict  # noqa: E402
from tuneable_gan.trainer import GANTrainer  # noqa: E402

DEFAULT_SCRIPT = "scripts/DiffAug/DiffAugment-biggan-cifar10-0.1_Diggan.sh"
# The reference's top-level modules: generic names that another import may have taken.
REFERENCE_MODULES = ("BigGAN", "layers", "utils", "losses", "train_fns", "datasets",
                     "DiffAugment_pytorch", "animal_hash")
# --smoke: a CPU-seconds run of the same code paths (widths 16, batch 10).
SMOKE = {"width": 16, "batch": 10}


# The process-wide backend flags a side may set: (object, attribute).
FLAGS = {"matmul_tf32": (torch.backends.cuda.matmul, "allow_tf32"),
         "cudnn_tf32": (torch.backends.cudnn, "allow_tf32"),
         "cudnn_benchmark": (torch.backends.cudnn, "benchmark")}


def flags_now() -> dict[str, bool]:
    """The current values of ``FLAGS``."""
    return {k: bool(getattr(obj, attr)) for k, (obj, attr) in FLAGS.items()}


def set_flags(flags: dict[str, bool]) -> None:
    """Set ``FLAGS`` to ``flags``."""
    for k, v in flags.items():
        obj, attr = FLAGS[k]
        setattr(obj, attr, v)


@dataclasses.dataclass
class Side:
    """One implementation's G iteration, ready to time, and the backend flags it runs under."""

    name: str
    step: Callable[[], None]
    params: tuple[int, int]  # G and D parameter counts: both sides must build the same nets
    note: str
    flags: dict[str, bool] = dataclasses.field(default_factory=flags_now)


def count(net: torch.nn.Module) -> int:
    """Number of parameters of ``net``."""
    return sum(p.numel() for p in net.parameters())


def ours_config(root: Path, device: str, precision: str = "fp32", weight: float = 1000.0,
                smoke: bool = False) -> dict[str, object]:
    """Our side's run config: the biggan_cifar preset, DigGAN on the first D step, DiffAugment
    translation,cutout, on the CIFAR-10 folder at ``root`` (also used by ``pack.py``)."""
    cfg: dict[str, object] = {
        "preset": "biggan_cifar", "data.name": "cifar10", "data.root": str(root),
        "regularizer.name": "diggan", "regularizer.weight": weight,
        "regularizer.every": "first", "augment.diffaugment": "translation,cutout",
        "train.device": device, "train.precision": precision}
    if smoke:
        cfg |= {"model.g_ch": SMOKE["width"], "model.d_ch": SMOKE["width"],
                "optim.batch_size": SMOKE["batch"], "optim.g_batch_size": SMOKE["batch"]}
    return cfg


def ours(root: Path, device: str, precision: str, weight: float, smoke: bool) -> Side:
    """Our trainer's G iteration (``ours_config``)."""
    trainer = GANTrainer(from_dict(ours_config(root, device, precision, weight, smoke)))
    # flags: what the trainer just set for itself.
    return Side(f"this project ({precision})", trainer.train_step,
                (count(trainer.G), count(trainer.D)), "biggan_cifar preset", flags_now())


def script_args(script: Path) -> list[str]:
    """The ``train.py`` arguments of a reference shell script (continuation lines joined)."""
    words = shlex.split(script.read_text().replace("\\\n", " "))
    return words[words.index("train.py") + 1:]


@contextlib.contextmanager
def reference_on_path(path: Path) -> Iterator[None]:
    """The checkout first on sys.path with its module names free while the block imports from
    it, and a stand-in ``h5py`` when there is none (its ``datasets.py`` imports it for ImageNet
    HDF5 files the step never reads). Afterwards sys.path and those names are as before; the
    imported modules live on in the objects built from them."""
    saved = {name: sys.modules.pop(name) for name in (*REFERENCE_MODULES, "h5py")
             if name in sys.modules}
    try:
        import h5py  # noqa: F401
    except ImportError:
        sys.modules["h5py"] = types.ModuleType("h5py")
    sys.path.insert(0, str(path))
    try:
        yield
    finally:
        sys.path.remove(str(path))
        for name in (*REFERENCE_MODULES, "h5py"):
            sys.modules.pop(name, None)
        sys.modules.update(saved)


@contextlib.contextmanager
def cuda_calls_to(device: torch.device) -> Iterator[None]:
    """On a CPU device, make ``Tensor.cuda()`` a no-op (the reference's one hard-coded call)."""
    if device.type == "cuda":
        yield
        return
    with mock.patch.object(torch.Tensor, "cuda", lambda self, *a, **k: self):
        yield


def reference(path: Path, script: str, device: str, smoke: bool,
              defaults: dict[str, bool]) -> tuple[Side, float]:
    """The reference's G iteration, configured from its ``script``, to run under ``defaults``
    (the process's backend flags before any trainer) with cudnn.benchmark; also its DigGAN
    weight."""
    path = path.expanduser().resolve()
    if not (path / "train_fns.py").is_file():
        raise SystemExit(f"--reference {path}: no train_fns.py there (expected a checkout of "
                         "AilsaF/DigGAN DiffAugment-biggan-cifar)")
    with reference_on_path(path):
        import BigGAN
        import train_fns
        import utils

        argv = script_args(path / script)
        if smoke:
            argv += ["--G_ch", str(SMOKE["width"]), "--D_ch", str(SMOKE["width"]),
                     "--batch_size", str(SMOKE["batch"])]
        config = vars(utils.prepare_parser().parse_args(argv))
        # What the reference's train.run() derives from its arguments before building.
        config["resolution"] = utils.imsize_dict[config["dataset"]]
        config["n_classes"] = utils.nclass_dict[config["dataset"]]
        config["G_activation"] = utils.activation_dict[config["G_nl"]]
        config["D_activation"] = utils.activation_dict[config["D_nl"]]
    assert Path(BigGAN.__file__).resolve().parent == path, BigGAN.__file__
    dev = torch.device(device)
    torch.manual_seed(config["seed"])
    G = BigGAN.Generator(**config).to(dev)
    D = BigGAN.Discriminator(**config).to(dev)
    G_ema = BigGAN.Generator(**{**config, "skip_init": True, "no_optim": True}).to(dev)
    ema = utils.ema(G, G_ema, config["ema_decay"], config["ema_start"])
    GD = BigGAN.G_D(G, D)
    G_batch = max(config["G_batch_size"], config["batch_size"])
    z_, y_ = utils.prepare_z_y(G_batch, G.dim_z, config["n_classes"], device=dev)
    state = {"itr": 0, "epoch": 0, "save_num": 0, "save_best_num": 0, "best_IS": 0,
             "best_FID": 999999, "config": config}
    train = train_fns.GAN_training_function(G, D, GD, z_, y_, ema, state, config)
    # One D iteration's real chunks (batch x D steps), drawn from a pool on the device.
    n = config["batch_size"] * config["num_D_steps"] * config["num_D_accumulations"]
    pool = torch.rand(4 * n, 3, 32, 32, device=dev) * 2 - 1
    pool_y = torch.randint(0, config["n_classes"], (4 * n,), device=dev)
    ema_grads: list[torch.Tensor | None] = [None, None]

    def step() -> None:
        idx = torch.randint(0, len(pool), (n,), device=dev)
        G.train()
        D.train()
        G_ema.train()
        with cuda_calls_to(dev):
            _, ema_grads[0], ema_grads[1] = train(pool[idx], pool_y[idx], *ema_grads)
        state["itr"] += 1

    note = f"{script}, fp32, no DataParallel"
    flags = defaults | {"cudnn_benchmark": True}
    return Side("reference (fp32)", step, (count(G), count(D)), note, flags), float(
        config["DigGAN_penalty_weight"])


def interleave(sides: list[Side], rounds: int, steps: int, warmup: int,
               sync: Callable[[], None]) -> dict[str, list[float]]:
    """Seconds per G iteration of each round, per side; rounds alternate between the sides."""
    for side in sides:
        set_flags(side.flags)
        for _ in range(warmup):  # allocator, cudnn autotuning, first power iterations
            side.step()
    out: dict[str, list[float]] = {s.name: [] for s in sides}
    for _ in range(rounds):
        for side in sides:
            set_flags(side.flags)
            sync()
            t0 = time.perf_counter()
            for _ in range(steps):
                side.step()
            sync()
            out[side.name].append((time.perf_counter() - t0) / steps)
    return out


def table(sides: list[Side], times: dict[str, list[float]]) -> str:
    """The Markdown table: median s / G iteration, G it/s, parameter counts, notes; and the
    reference / ours ratio when both ran."""
    lines = ["| implementation | s / G it (median) | G it/s | rounds (s / G it) | "
             "G params | D params | notes |", "|---|---|---|---|---|---|---|"]
    med = {}
    for s in sides:
        t = med[s.name] = statistics.median(times[s.name])
        each = ", ".join(f"{v:.4f}" for v in times[s.name])
        on = ", ".join(k for k, v in s.flags.items() if v) or "none"
        lines.append(f"| {s.name} | {t:.4f} | {1 / t:.3g} | {each} | {s.params[0]:,} | "
                     f"{s.params[1]:,} | {s.note}; flags on: {on} |")
    if len(sides) == 2:
        ours_t, ref_t = times[sides[0].name], times[sides[1].name]
        ratio = med[sides[1].name] / med[sides[0].name]
        # Round i of each side ran back to back: their ratio cancels load that varies slowly.
        paired = statistics.median(r / o for r, o in zip(ref_t, ours_t))
        lines.append("")
        lines.append(f"ratio reference / ours (s per G it): {ratio:.2f}x of the medians, "
                     f"{paired:.2f}x median of the paired rounds (above 1: ours is faster)")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> str:
    """Run the comparison; prints and returns the Markdown."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--reference", type=Path, help="checkout of DiffAugment-biggan-cifar")
    p.add_argument("--script", default=DEFAULT_SCRIPT, help="reference script to configure by")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--precision", default="fp32", choices=("fp32", "bf16"), help="ours only")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--steps", type=int, default=10, help="timed G iterations per round")
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--smoke", action="store_true", help="tiny widths, 2 rounds of 1 step")
    p.add_argument("--ours-only", action="store_true", help="time this project's side only")
    args = p.parse_args(argv)
    if args.reference is None and not args.ours_only:
        p.error("--reference PATH is required (or --ours-only)")
    if args.smoke:
        args.rounds, args.steps, args.warmup = 2, 1, 1
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    defaults = flags_now()
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    sides: list[Side] = []
    weight = 1000.0  # the reference scripts' 10% DigGAN weight, when there is no reference
    ref = None
    if not args.ours_only:
        ref, weight = reference(args.reference, args.script, args.device, args.smoke, defaults)
    with tempfile.TemporaryDirectory() as tmp:
        sides.append(ours(write_noise_cifar(tmp), args.device, args.precision, weight,
                          args.smoke))
    if ref is not None:
        sides.append(ref)
    times = interleave(sides, args.rounds, args.steps, args.warmup, sync)
    where = (torch.cuda.get_device_name(device) if device.type == "cuda"
             else f"CPU, {torch.get_num_threads()} threads")
    b = SMOKE["batch"] if args.smoke else 50
    head = (f"device: {where}; batch {b}, 4 D steps, DigGAN (weight {weight:g}) on the first, "
            f"DiffAugment translation,cutout; {args.rounds} rounds x {args.steps} G it"
            + (" (smoke: widths 16)" if args.smoke else ""))
    out = head + "\n\n" + table(sides, times)
    print(out)
    return out


if __name__ == "__main__":
    main()
