"""Overhead of running a GAN as a Ray Tune trial instead of a plain trainer loop.

Same config, same N G steps and the same evaluations in both; the Tune trial also attaches a
checkpoint to every report (checkpoint_every = eval_every). Prints the plain loop's time, the
trial's own time (time_total_s), the whole ``Tuner.fit()`` wall time (worker start included),
and their ratios.

    python benchmarks/tune_overhead.py [--steps 600] [--eval-every 100]
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import torch
import yaml

BASE = {
    "data.name": "digits", "data.fraction": 0.1, "data.resolution": 16,
    "model.arch": "dcgan", "optim.batch_size": 32, "regularizer.name": "diggan",
    "augment.diffaugment": "translation,cutout", "eval.num_samples": 500,
    "train.device": "cpu",
}


def plain(cfg) -> float:
    """Seconds for the plain loop: train_step x N with an evaluation every eval_every steps."""
    from tuneable_gan.trainer import GANTrainer

    trainer = GANTrainer(cfg)
    trainer.evaluator  # noqa: B018  (built outside the timing, as the trial builds it too)
    t0 = time.perf_counter()
    while trainer.step < cfg.train.steps:
        trainer.train_step()
        if trainer.step % cfg.train.eval_every == 0:
            trainer.evaluate()
    return time.perf_counter() - t0


def tuned(base: dict, tmp: Path) -> tuple[float, float]:
    """(trial time_total_s, Tuner.fit wall seconds) for one trial of the same config."""
    import ray

    from tuneable_gan.tune.launch import run_sweep
    from tuneable_gan.tune.space import load_space

    doc = {"name": "overhead", "base": base,
           "space": {"train.seed": {"grid": [0]}},
           "tune": {"search": "grid", "scheduler": "fifo", "storage": str(tmp / "results"),
                    "resources": {"cpu": 1}}}
    (tmp / "s.yaml").write_text(yaml.safe_dump(doc))
    spec = load_space(tmp / "s.yaml")
    ray.init(num_cpus=1, include_dashboard=False, log_to_driver=False,
             _temp_dir=tempfile.mkdtemp(prefix="ray", dir="/tmp"))
    try:
        t0 = time.perf_counter()
        results = run_sweep(spec)
        wall = time.perf_counter() - t0
    finally:
        ray.shutdown()
    return results[0].metrics["time_total_s"], wall


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=600)
    p.add_argument("--eval-every", type=int, default=100)
    args = p.parse_args()
    torch.set_num_threads(1)  # a trial with cpu=1 runs one thread; match it
    base = BASE | {"train.steps": args.steps, "train.eval_every": args.eval_every,
                   "train.checkpoint_every": args.eval_every}
    with tempfile.TemporaryDirectory() as d:
        os.environ.setdefault("TUNEABLE_GAN_CACHE", str(Path(d) / "cache"))
        from tuneable_gan.config import from_dict

        t_plain = plain(from_dict(base))
        t_trial, t_fit = tuned(base, Path(d))
    print(f"{args.steps} G steps, eval + checkpoint every {args.eval_every}, 1 CPU thread")
    print(f"{'run':<34}{'seconds':>10}{'vs plain':>10}")
    print(f"{'plain trainer loop':<34}{t_plain:>10.2f}{1.0:>10.3f}")
    print(f"{'Tune trial (time_total_s)':<34}{t_trial:>10.2f}{t_trial / t_plain:>10.3f}")
    print(f"{'Tuner.fit() wall (incl. start)':<34}{t_fit:>10.2f}{t_fit / t_plain:>10.3f}")


if __name__ == "__main__":
    main()
