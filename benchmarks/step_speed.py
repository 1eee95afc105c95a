"""G+D training speed per architecture and regularizer, measured side by side in one run.

For dcgan (16 px), sngan and biggan (32 px, paper widths) at batch 50, with regularizer none,
diggan, r1 and lecam (started at step 0), prints G iterations per second (one G iteration =
``optim.d_steps`` D steps + 1 G step; ``--d-steps``, 1 by default) and each regularizer's cost
against none, one table per training precision (``--precision``, ``train.precision``) and
metrics cadence (``--record``: ``step`` reads every iteration's values and runs the DIG probe
in each, as a Tune trial does today; ``log`` reads them every ``train.log_every`` = 10
iterations, as a command-line run can). With more than one table, a last one gives each
combination's speed against the first. Timed runs are interleaved round-robin so machine load
hits every cell alike. ``--smoke``: dcgan only, tiny widths, a few steps (seconds; for CI).

    python benchmarks/step_speed.py [--rounds 3] [--steps-small 10] [--steps-large 2] [--threads 2]
        [--precision fp32|bf16|both] [--record step|log|both] [--d-steps 1] [--smoke]
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
# --smoke: the smallest dcgan the trainer builds (8 px, width 8), batch 8.
SMOKE = {"model.arch": "dcgan", "data.resolution": 8, "model.g_ch": 8, "model.d_ch": 8,
         "model.z_dim": 8, "optim.batch_size": 8}
REGS = {"none": {}, "diggan": {"regularizer.weight": 1000.0},
        "r1": {}, "lecam": {"regularizer.start": 0}}
PRECISIONS = ("fp32", "bf16")
RECORDS = {"step": "metrics read every step", "log": "metrics read every 10th step"}


def trainer(arch: str, reg: str, device: str, precision: str = "fp32", record: str = "step",
            d_steps: int = 1, smoke: bool = False) -> GANTrainer:
    """A digits trainer (1 channel) at the arch's resolution and width, batch 50."""
    cfg = from_dict({"data.name": "digits", "optim.batch_size": 50, "optim.d_steps": d_steps,
                     "regularizer.name": reg, "augment.diffaugment": "translation,cutout",
                     "train.device": device, "train.precision": precision,
                     "train.log_every": 10} | (SMOKE if smoke else ARCHES[arch]) | REGS[reg])
    t = GANTrainer(cfg)
    t.record_every_step = record == "step"
    return t


def choices(value: str, allowed: tuple[str, ...]) -> list[str]:
    """``both`` -> every allowed value, else the one given."""
    return list(allowed) if value == "both" else [value]


def main(argv: list[str] | None = None) -> None:
    """Parse the options, time the cells, print the tables."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--steps-small", type=int, default=10, help="timed steps per round, dcgan")
    p.add_argument("--steps-large", type=int, default=2, help="timed steps per round, paper")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="auto")
    p.add_argument("--arches", default=",".join(ARCHES))
    p.add_argument("--precision", choices=(*PRECISIONS, "both"), default="fp32")
    p.add_argument("--record", choices=(*RECORDS, "both"), default="step")
    p.add_argument("--d-steps", type=int, default=1, help="D steps per G iteration")
    p.add_argument("--smoke", action="store_true", help="dcgan only, tiny, 1 round of 2 steps")
    args = p.parse_args(argv)
    if args.smoke:
        args.arches, args.rounds, args.steps_small = "dcgan", 1, 2
    torch.set_num_threads(args.threads)
    arches = args.arches.split(",")
    combos = list(itertools.product(choices(args.precision, PRECISIONS),
                                    choices(args.record, tuple(RECORDS))))
    cells = list(itertools.product(arches, REGS, combos))
    trainers = {c: trainer(c[0], c[1], args.device, *c[2], d_steps=args.d_steps,
                           smoke=args.smoke) for c in cells}
    for t in trainers.values():  # warm-up: allocator, first SN power iterations, Adam state
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
    rate = {c: steps[c] / seconds[c] for c in cells}
    dev = next(iter(trainers.values())).device
    name = torch.cuda.get_device_name(dev) if dev.type == "cuda" else f"CPU, {args.threads} thr"
    batch = SMOKE["optim.batch_size"] if args.smoke else 50
    for combo in combos:
        precision, record = combo
        print(f"device: {name}; batch {batch}, d_steps {args.d_steps}, DiffAugment "
              f"translation,cutout; precision {precision}, {RECORDS[record]}")
        print(f"{'arch':<8}{'regularizer':<13}{'G it/s':>9}{'cost vs none':>14}")
        for arch in arches:
            base = rate[(arch, "none", combo)]
            for reg in REGS:
                r = rate[(arch, reg, combo)]
                print(f"{arch:<8}{reg:<13}{r:>9.2f}{base / r:>13.2f}x")
        print()
    if len(combos) > 1:
        first, rest = combos[0], combos[1:]
        label = "/".join(first)
        print(f"speed against {label} (G it/s ratio, same cell)")
        print(f"{'arch':<8}{'regularizer':<13}" + "".join(f"{'/'.join(c):>14}" for c in rest))
        for arch, reg in itertools.product(arches, REGS):
            ratios = [rate[(arch, reg, c)] / rate[(arch, reg, first)] for c in rest]
            print(f"{arch:<8}{reg:<13}" + "".join(f"{x:>13.2f}x" for x in ratios))


if __name__ == "__main__":
    main()
