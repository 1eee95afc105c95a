"""The ``tune.callbacks`` section: experiment trackers the sweep hands its results to.

Written as a list of names (``callbacks: [mlflow, wandb]``) or as a mapping of name to options
(``callbacks: {mlflow: {tracking_uri: file:///shared/mlruns}, wandb: {mode: offline}}``). Only
the names and option keys are checked here (no Ray, no tracker package): whether the package is
installed is checked when the sweep starts (``tracking.tracker_callbacks``), so a stored sweep
can still be read and reported on a machine without it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tuneable_gan.config import fmt

# name -> the options it takes, each with the type its value must have. What a tracker is
# built with beyond these (the experiment name, grouping by configuration) comes from the sweep.
TRACKER_OPTIONS: dict[str, dict[str, tuple[type, ...]]] = {
    # tracking_uri: default $MLFLOW_TRACKING_URI, else MLflow's own default.
    "mlflow": {"tracking_uri": (str,), "experiment_name": (str,), "tags": (dict,),
               "save_artifact": (bool,)},
    "wandb": {"project": (str,), "entity": (str,), "mode": (str,), "tags": (list,),
              "dir": (str,)},
}
WANDB_MODES = ("online", "offline", "disabled")


@dataclass(frozen=True)
class TrackerSpec:
    """One tracker of ``tune.callbacks``: its name and the options given for it."""

    name: str
    options: dict[str, Any] = field(default_factory=dict)


def parse_callbacks(raw: Any, problems: list[str]) -> tuple[TrackerSpec, ...]:
    """The trackers of ``tune.callbacks`` (a list of names or a mapping name -> options), in
    the order written; each problem one line naming the key and the valid values."""
    if raw is None:
        return ()
    names = ", ".join(TRACKER_OPTIONS)
    if isinstance(raw, list):
        items: list[tuple[Any, Any]] = [(name, {}) for name in raw]
    elif isinstance(raw, dict):
        items = list(raw.items())
    else:
        problems.append(f"tune.callbacks must be a list of tracker names ({names}) or a mapping "
                        f"of name to options; got {fmt(raw)}")
        return ()
    out: list[TrackerSpec] = []
    for name, options in items:
        if name not in TRACKER_OPTIONS:
            problems.append(f"tune.callbacks: unknown tracker {fmt(name)}; valid: {names}")
            continue
        if any(t.name == name for t in out):
            problems.append(f"tune.callbacks: {name} is named twice")
            continue
        options = {} if options is None else options
        if not isinstance(options, dict):
            problems.append(f"tune.callbacks.{name} must be a mapping of options, "
                            f"got {fmt(options)}")
            continue
        out.append(TrackerSpec(name, _options(name, options, problems)))
    return tuple(out)


def _options(name: str, options: dict[str, Any], problems: list[str]) -> dict[str, Any]:
    valid = TRACKER_OPTIONS[name]
    where = f"tune.callbacks.{name}."
    good: dict[str, Any] = {}
    for key, value in options.items():
        if key not in valid:
            problems.append(f"{where}{key}: unknown option; valid: {', '.join(valid)}")
        elif not isinstance(value, valid[key]) or (valid[key] == (str,) and not value.strip()):
            kind = " or ".join(t.__name__ for t in valid[key])
            problems.append(f"{where}{key} must be a non-empty {kind}, got {fmt(value)}")
        else:
            good[key] = value
    if name == "wandb" and good.get("mode", "online") not in WANDB_MODES:
        problems.append(f"{where}mode must be one of {', '.join(WANDB_MODES)}; "
                        f"got {fmt(good['mode'])}")
        good.pop("mode")
    return good
