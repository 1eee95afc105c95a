"""The evaluation noise floor: how much the metric moves for one fixed generator when only the
evaluation's latents are drawn anew.

Every trial is scored on one latent set (``eval.seed``), so part of any difference between
cells is the luck of that set. The floor re-evaluates one generator (the best trial's best
checkpoint; its EMA generator, evaluated exactly as the run evaluates it: same protocol, sample
count, conditioning and G mode) on ``n_sets`` independent latent sets and reports the sample
standard deviation ``sd`` of the metric over them.

A difference between two single evaluations carries evaluation noise of standard deviation
``sd * sqrt(2)``, and the mean of ``n`` paired differences ``sd * sqrt(2 / n)``: a difference
below ``1.96 * sd * sqrt(2 / n)`` (``Floor.swamps``) is within what re-drawing the evaluation
latents alone gives 95% of the time, so the report marks it beside the number. The floor is a
property of the metric at this sample count: the seed-to-seed spread (the tables' intervals,
the tests) includes it and more, so a difference the floor swamps is one no number of
evaluations of these generators could make firm without more seeds or more samples.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import pandas as pd

from analysis.checkpoints import best_checkpoint, read_state
from analysis.stats import cell_label
from tuneable_gan.constants import NOISE_FLOOR_SETS

N_SETS = NOISE_FLOOR_SETS
# Latent seeds far from the small eval.seed values runs use, so no set repeats the run's own.
SEED_BASE = 100_003
Z95 = 1.96


@dataclass(frozen=True)
class Floor:
    """The metric of one generator over independent evaluation latent sets."""

    metric: str
    values: tuple[float, ...]
    trial_id: str
    step: int | None
    num_samples: int
    own: float = math.nan  # the run's own evaluation of the same checkpoint (eval.seed's set)

    @property
    def sd(self) -> float:
        """Sample standard deviation over the latent sets (ddof 1)."""
        return float(np.std(self.values, ddof=1))

    def threshold(self, n: int = 1) -> float:
        """The smallest mean of ``n`` paired differences that evaluation noise alone does not
        explain at 95%: 1.96 * sd * sqrt(2 / n)."""
        return Z95 * self.sd * math.sqrt(2.0 / max(n, 1))

    def swamps(self, delta: float, n: int = 1) -> bool:
        """Whether a mean difference ``delta`` over ``n`` matched seeds is within the noise."""
        return math.isfinite(delta) and abs(delta) < self.threshold(n)

    def sentence(self) -> str:
        """One line for the report: the floor, its generator and the rule."""
        lo, hi = min(self.values), max(self.values)
        at = f", step {self.step}" if self.step is not None else ""
        # The best trial is picked on its own latent set: say how far that set's luck went.
        own = (f"; the run's own latent set gave {self.own:.4g}, and the best trial is chosen "
               "on it" if math.isfinite(self.own) else "")
        return (f"Evaluation noise floor: one fixed generator (trial {self.trial_id}{at}) scored "
                f"on {len(self.values)} independent latent sets of {self.num_samples} samples "
                f"gives {self.metric} sd {self.sd:.3g} (range {lo:.4g} to {hi:.4g}{own}). A "
                "mean difference over n matched seeds below 1.96 x sd x sqrt(2/n) "
                f"({self.threshold(1):.3g} for one seed, {self.threshold(5):.3g} for five) "
                "is within what re-drawing "
                "the evaluation latents alone moves; the tables mark such a difference "
                "(noise).")


def evaluated_metric(metric: str) -> str:
    """The evaluator's key behind a reported metric (the running best is the metric itself)."""
    return metric[: -len("_best")] if metric.endswith("_best") else metric


def measure(fs: Any, ckpt: str, metric: str, n_sets: int = N_SETS) -> tuple[tuple[float, ...],
                                                                              int, int]:
    """(metric per latent set, the checkpoint's step, samples per set) of the checkpoint's EMA
    generator; KeyError when the evaluator does not compute ``metric``."""
    import torch

    from tuneable_gan.metrics import Evaluator
    from tuneable_gan.trainer import GANTrainer

    state, cfg = read_state(fs, ckpt)
    rng = torch.get_rng_state()  # building the nets draws from the global RNG: give it back
    try:
        # The trainer, not G alone: instance priors, pruning masks and the conditioning of the
        # run's own evaluation all come with it.
        trainer = GANTrainer(cfg, device="cpu")
        trainer.load_state_dict(state)
        key = evaluated_metric(metric)
        values = []
        for i in range(n_sets):
            seed = SEED_BASE + i
            ev = Evaluator(replace(cfg.eval, seed=seed), cfg.data, "cpu",
                           conditions=trainer.cond)
            trainer.G_ema.noise_generator.manual_seed(seed)
            values.append(float(ev(trainer.G_ema)[key]))
        trainer.close()
        return tuple(values), int(state["step"]), int(cfg.eval.num_samples)
    finally:
        torch.set_rng_state(rng)


def noise_floor(experiment: str, best: pd.Series | None, df: pd.DataFrame, metric: str,
                n_sets: int = N_SETS) -> tuple[Floor | None, str]:
    """The floor at the best trial's best checkpoint, or (None, why not)."""
    if n_sets < 2:
        return None, "off (--noise-floor below 2 sets)"
    if best is None or not best.get("trial_dir"):
        return None, "no trial with a kept checkpoint"
    found = best_checkpoint(experiment, df[df["trial_id"] == best["trial_id"]], metric)
    if found is None:
        return None, "the best trial kept no checkpoint"
    try:
        values, step, n = measure(found.fs, found.path, metric, n_sets)
    except KeyError:
        return None, f"{metric} is not a metric the evaluator computes"
    if not all(math.isfinite(v) for v in values):
        return None, f"the generator's {metric} is not finite on every latent set"
    rows = df[(df["trial_id"] == best["trial_id"]) & (df["step"] == step)]
    own = pd.to_numeric(rows.get(metric), errors="coerce").dropna()
    return Floor(metric, values, str(best["trial_id"]), step, n,
                 float(own.iloc[-1]) if len(own) else math.nan), ""


def swamped(floor: Floor, cmp: pd.DataFrame | None) -> str:
    """The sentence naming the differences from the baseline the floor swamps ("" if none)."""
    if cmp is None or cmp.empty:
        return ""
    factors = list(cmp.attrs.get("factors") or [])
    rows = [r for _, r in cmp[~cmp["is_baseline"]].iterrows()
            if floor.swamps(float(r["delta"]), int(r["n_pairs"]))]
    if not rows:
        return "Every difference from the baseline is larger than the evaluation noise."
    cells = "; ".join(f"{cell_label({f: r[f] for f in factors if f in r})} "
                      f"({floor.metric} {float(r['delta']):+.3g})" for r in rows)
    return (f"Within the evaluation noise: {cells}. Re-drawing the evaluation latents alone "
            "moves a difference that much; these need more seeds or eval.num_samples.")
