"""A trial's configuration: its config less the seed, the one thing its seed replicates share.

Seed-group ASHA promotes and stops by it, and the trackers (``tracking``) group the replicates
of one configuration under it.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from tuneable_gan.constants import SEED_KEY
from tuneable_gan.tune.space_parse import SAMPLE_KEY, TRIAL_INDEX

LABEL_MAX = 120  # W&B caps a group name at 128 characters


def configuration_of(config: dict[str, Any]) -> str:
    """A trial's configuration (its config less the seed and Repeater's index) as a string:
    the seeds of one configuration share it (``SeedGroupASHA``'s ``group_of``)."""
    rest = {k: v for k, v in config.items() if k not in (SEED_KEY, TRIAL_INDEX)}
    return json.dumps(rest, sort_keys=True, default=repr)


def configuration_id(config: dict[str, Any]) -> str:
    """A short stable id of the configuration (12 hex digits of its hash)."""
    return hashlib.sha256(configuration_of(config).encode()).hexdigest()[:12]


def configuration_label(config: dict[str, Any]) -> str:
    """A readable name of the configuration: its swept values as ``key=value`` in key order
    (``"seeds"`` when nothing but the seed is swept); a long one is cut and ends with the
    id, so two labels never collide."""
    parts = [f"{k}={v}" for k, v in sorted(config.items())
             if k not in (SEED_KEY, TRIAL_INDEX, SAMPLE_KEY)]
    if SAMPLE_KEY in config:  # random search: the draw tells samples of equal values apart
        parts.append(f"sample={config[SAMPLE_KEY]}")
    label = " ".join(parts) or "seeds"
    if len(label) <= LABEL_MAX:
        return label
    return f"{label[:LABEL_MAX - 14]}~{configuration_id(config)}"
