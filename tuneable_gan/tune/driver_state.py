"""Whether an experiment's driver (``tuneable-gan sweep`` / ``resume``) is running or has ended.

``launch`` writes ``tuneable_gan_driver.yaml`` when a driver starts and when it ends, however it
ends (finished, interrupted, failed); ``analysis.collect`` reads it, so a trial that Ray's last
state file calls RUNNING is not reported running once the sweep is over. A driver killed outright
leaves "running", and the analysis then falls back to how long ago anything was written. This
module imports no ray: the analysis reads it too.
"""

from __future__ import annotations

import time

import yaml

# Not .json: Ray copies top-level .json files into its staging directory on restore and syncs
# them back, which would put an old state over a newer one.
DRIVER_FILE = "tuneable_gan_driver.yaml"
STATES = ("running", "ended")


def render(state: str, at: float | None = None) -> str:
    """The file's text for ``state`` ("running" or "ended") at ``at`` (default: now)."""
    assert state in STATES, state
    return yaml.safe_dump({"driver": state, "at": float(time.time() if at is None else at)})


def parse(text: str) -> tuple[str, float] | None:
    """(state, unix time) from the file's text; None when it is not such a file."""
    try:
        doc = yaml.safe_load(text)
        state, at = doc["driver"], float(doc["at"])
    except (yaml.YAMLError, TypeError, KeyError, ValueError):
        return None
    return (state, at) if state in STATES else None
