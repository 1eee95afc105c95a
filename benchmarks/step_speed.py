"""G+D training speed per architecture and regularizer, measured side by side in one run.

For dcgan (16 px), sngan and biggan (32 px, paper widths) at batch 50, with regularizer none,
diggan, r1 and lecam (started at step 0), prints G iterations per second (one G iteration =
``optim.d_steps`` D steps + 1 G step; d_steps 1 here) and each regularizer's cost against none.
Timed runs are interleaved round-robin so machine load hits every cell alike.

    python benchmarks/step_speed.py [--rounds 3] [--steps-small 10] [--steps-large 2] [--threads 2]
"""

from __future__ import annotations

import argparse
import itertools
import time

import torch

from tuneable_gan.config import from_dict
from tuneable_gan.trainer import GANTrainer

ARCHES = {
    "dcgan": {"model.arch": "dcgan", "data.resolution": 16, "model.g_ch": 32, "model.d_ch": 32,
              "model.z_dim": 64},
    "sngan": {"model.arch": "sngan", "data.resolution": 32, "model.g_ch": 64, "model.d_ch": 64,
              "model.z_dim": 128},
    "biggan": {"model.arch": "biggan", "data.resolution": 32, "model.g_ch": 64,
               "model.d_ch": 64, "model.z_dim": 128},
}
REGS = {"none": {}, "diggan": {"regularizer.weight": 1000.0},
        "r1": {}, "lecam": {"regularizer.start": 0}}


def trainer(arch: str, reg: str, device: str) -> GANTrainer:
    """A digits trainer (1 channel) at the arch's resolution and width, batch 50."""
    cfg = from_dict({"data.name": "digits", "optim.batch_size": 50, "optim.d_steps": 1,
                     "regularizer.name": reg, "augment.diffaugment": "translation,cutout",
                     "train.device": device} | ARCHES[arch] | REGS[reg])
    return GANTrainer(cfg)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--steps-small", type=int, default=10, help="timed steps per round, dcgan")
    p.add_argument("--steps-large", type=int, default=2, help="timed steps per round, paper")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="auto")
    p.add_argument("--arches", default=",".join(ARCHES))
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    cells = list(itertools.product(args.arches.split(","), REGS))
    trainers = {c: trainer(*c, args.device) for c in cells}
    for t in trainers.values():  # warm-up: allocator, first SN power iterations
        t.train_step()
    seconds = {c: 0.0 for c in cells}
    steps = {c: 0 for c in cells}
    for _ in range(args.rounds):
        for c in cells:
            n = args.steps_small if c[0] == "dcgan" else args.steps_large
            t = trainers[c]
            if t.device.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            for _ in range(n):
                t.train_step()
            if t.device.type == "cuda":
                torch.cuda.synchronize()
            seconds[c] += time.perf_counter() - t0
            steps[c] += n
    dev = next(iter(trainers.values())).device
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else f"CPU, {args.threads} thr"
    print(f"device: {name}; batch 50, d_steps 1, DiffAugment translation,cutout")
    print(f"{'arch':<8}{'regularizer':<13}{'G it/s':>9}{'cost vs none':>14}")
    for arch in args.arches.split(","):
        base = steps[(arch, "none")] / seconds[(arch, "none")]
        for reg in REGS:
            rate = steps[(arch, reg)] / seconds[(arch, reg)]
            print(f"{arch:<8}{reg:<13}{rate:>9.2f}{base / rate:>13.2f}x")


if __name__ == "__main__":
    main()
