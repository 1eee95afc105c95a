"""How long a digits evaluation takes on CPU: 2k fakes, FID + IS (+ KID), cold and cached.

    .venv/bin/python benchmarks/eval_speed.py [--num-samples 2000] [--kid] [--repeats 3]

Uses a fresh temporary cache (so the first call really computes the reference statistics) and a
small random DCGAN-like stand-in generator (16x16, one channel). Target: cached call < 5 s on
2 CPUs.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Optional

import torch
from torch import Tensor, nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tuneable_gan.config import DataConfig, EvalConfig  # noqa: E402
from tuneable_gan.metrics import Evaluator  # noqa: E402


class StandInG(nn.Module):
    """DCGAN-like: z (64) -> 4x4x128 -> 8x8x64 -> 16x16x1, BatchNorm, tanh."""

    def __init__(self, z_dim: int = 64, ch: int = 64) -> None:
        super().__init__()
        self.z_dim, self.conditional, self.num_classes = z_dim, False, 0
        self.fc = nn.Linear(z_dim, 2 * ch * 4 * 4)
        self.net = nn.Sequential(
            nn.BatchNorm2d(2 * ch), nn.ReLU(),
            nn.ConvTranspose2d(2 * ch, ch, 4, 2, 1), nn.BatchNorm2d(ch), nn.ReLU(),
            nn.ConvTranspose2d(ch, ch // 2, 4, 2, 1), nn.BatchNorm2d(ch // 2), nn.ReLU(),
            nn.Conv2d(ch // 2, 1, 3, padding=1), nn.Tanh(),
        )
        self.ch = ch

    def sample_z(self, n: int, generator: torch.Generator, device: str) -> Tensor:
        return torch.randn(n, self.z_dim, generator=generator).to(device)

    def forward(self, z: Tensor, y: Optional[Tensor] = None) -> Tensor:
        return self.net(self.fc(z).view(-1, 2 * self.ch, 4, 4))


def timed(fn) -> tuple[float, object]:  # type: ignore[no-untyped-def]
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


def main() -> None:
    """Print the timing table."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--num-samples", type=int, default=2000)
    ap.add_argument("--kid", action="store_true", help="also compute KID")
    ap.add_argument("--repeats", type=int, default=3, help="cached calls to time")
    args = ap.parse_args()

    torch.manual_seed(0)
    G = StandInG()
    cfg = EvalConfig(extractor="digits", num_samples=args.num_samples, reference="train",
                     kid=args.kid, is_=True)
    data = DataConfig(name="digits", resolution=16)
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["TORCH_HOME"] = str(Path(tmp) / "torch-home")
        cache = Path(tmp) / "cache"
        t_train, ev = timed(lambda: Evaluator(cfg, data, cache_dir=cache))
        t_init, ev = timed(lambda: Evaluator(cfg, data, cache_dir=cache))
        assert isinstance(ev, Evaluator)
        t_first, first = timed(lambda: ev(G))
        cached = [timed(lambda: ev(G)) for _ in range(args.repeats)]
        t_new, again = timed(lambda: Evaluator(cfg, data, cache_dir=cache)(G))
    assert all(out == first for _, out in cached) and again == first
    metrics = "FID+IS" + ("+KID" if args.kid else "")
    rows = [
        ("Evaluator() first ever (trains digits classifier)", t_train),
        ("Evaluator() with classifier cached", t_init),
        (f"call 1: {args.num_samples} fakes + {ev.num_real} reals (reference computed)", t_first),
        (f"call 2..{args.repeats + 1}: {args.num_samples} fakes, cached reference (median)",
         statistics.median(t for t, _ in cached)),
        ("new Evaluator + call, cached reference", t_new),
    ]
    print(f"digits {metrics}, {torch.get_num_threads()} threads, protocol {ev.protocol}")
    print(f"result: {first}")
    print(f"| {'step':<72} | {'seconds':>7} |")
    print(f"|{'-' * 74}|{'-' * 9}|")
    for name, t in rows:
        print(f"| {name:<72} | {t:7.2f} |")


if __name__ == "__main__":
    main()
