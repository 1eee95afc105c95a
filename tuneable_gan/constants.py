"""Names and facts that the trainer, the Tune adapter and the analysis must agree on.

One place for each: a module that imports nothing, so any package may read it.
"""

from __future__ import annotations

# The sweep spec a sweep stores beside its results (plain YAML; ``tuneable-gan resume`` and the
# analysis read it back).
SPEC_FILE = "tuneable_gan_sweep.yaml"

# The config key seed replication sweeps over: seeds are replicates, not a factor.
SEED_KEY = "train.seed"

# The config keys whose null means "the paper's value" and that ``tuneable_gan.resolve`` fills
# per run: reports carry the resolved values, and tables show them beside the swept factors
# when they differ between cells (a paper-rule sweep's lambda per cell).
RESOLVED_KEYS: tuple[str, ...] = (
    "model.conditional", "regularizer.weight", "regularizer.ema", "regularizer.every",
    "regularizer.start")

# Every metric a trial reports, and which way is better ("min" / "max"; None: no direction,
# such as losses and gradient norms). ``*_best`` metrics follow their base metric.
METRICS: dict[str, str | None] = {
    "fid": "min", "fid_best": "min", "kid": "min", "is_mean": "max", "modes_covered": "max",
    "w1": "min", "w1_best": "min",
    "precision": "max", "recall": "max", "density": "max", "coverage": "max",
    # Memorisation diagnostics (eval.nn): read beside FID, not optimised; copying is nn_ratio << 1.
    "nn_fake": None, "nn_real": None, "nn_ratio": None,
    "dig": None, "grad_norm_real": None, "grad_norm_fake": None, "d_loss": None,
    "g_loss": None, "reg_loss": None, "sparsity": None, "steps_per_s": "max", "step": None,
    "images_seen": None}


def direction(metric: str) -> str | None:
    """"min" or "max" when lower or higher is better for ``metric`` (``*_best`` follows its
    base metric; ``steps_per_s`` is a speed, not a result, and has none here), else None."""
    base = metric.removesuffix("_best")
    return None if base == "steps_per_s" else METRICS.get(base)

# Independent evaluation latent sets the report re-scores the best checkpoint on to state the
# metric's evaluation noise floor (``tuneable-gan report --noise-floor``; analysis.noise_floor).
NOISE_FLOOR_SETS = 5
