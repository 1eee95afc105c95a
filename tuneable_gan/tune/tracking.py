"""Experiment trackers for a sweep: Ray's own MLflow and W&B logger callbacks, with each trial
filed under its configuration, so the seed replicates of one configuration sit together.

- MLflow (``MLflowLoggerCallback``): one run per trial, nested (``mlflow.parentRunId``) under one
  parent run per configuration, named by its swept values; every run carries the tags
  ``tuneable_gan.configuration`` (its id) and ``tuneable_gan.seed``. Metrics are logged at the
  trial's G step. A resumed sweep finds its parents again by the tag.
- W&B (``WandbLoggerCallback``): each trial is a run whose ``group`` is its configuration, the
  grouping W&B's interface averages over; ``mode: offline`` needs no account.

``TRACKERS`` maps each name of ``tune.callbacks`` to its package and builder;
``tracker_callbacks`` builds the sweep's, after ``check_trackers``.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
from collections.abc import Callable, Iterator
from typing import Any

from ray import tune
from ray.air.integrations.mlflow import MLflowLoggerCallback
from ray.air.integrations.wandb import WandbLoggerCallback

from tuneable_gan.constants import SEED_KEY
from tuneable_gan.errors import UserError
from tuneable_gan.tune.groups import configuration_id, configuration_label
from tuneable_gan.tune.space import SweepSpec

CONFIG_TAG, SEED_TAG, ROLE_TAG = ("tuneable_gan.configuration", "tuneable_gan.seed",
                                  "tuneable_gan.role")
PARENT_TAG = "mlflow.parentRunId"  # MLflow's own tag: the UI nests a run under this one


def _seed(trial: Any) -> str:
    return str(trial.config.get(SEED_KEY, "base"))


def _client() -> Any:
    """An MLflow client of the tracking URI the callback's setup put in force."""
    from mlflow.tracking import MlflowClient

    return MlflowClient()


class GroupedMLflow(MLflowLoggerCallback):
    """Ray's MLflow callback with one parent run per configuration and the trials of its seeds
    nested under it, logged at the trial's G step (``step``) rather than at Ray's iteration."""

    def setup(self, *args: Any, **kwargs: Any) -> None:
        super().setup(*args, **kwargs)
        self._parents: dict[str, str] = {}  # configuration id -> its parent run

    def _parent(self, trial: Any) -> str:
        key = configuration_id(trial.config)
        if key not in self._parents:
            client = _client()
            experiment = self.mlflow_util.experiment_id
            # A resumed sweep's callback is new: look for the parent its first run made.
            found = client.search_runs(
                [experiment], f"tags.`{CONFIG_TAG}` = '{key}' and tags.`{ROLE_TAG}` = 'group'",
                max_results=1)
            if found:
                self._parents[key] = found[0].info.run_id
            else:
                run = client.create_run(experiment, run_name=configuration_label(trial.config),
                                        tags={**self.tags, CONFIG_TAG: key, ROLE_TAG: "group"})
                self._parents[key] = run.info.run_id
        return self._parents[key]

    def log_trial_start(self, trial: Any) -> None:
        if trial not in self._trial_runs:
            shared = dict(self.tags)
            # Ray reads the tags from self.tags when it starts a trial's run.
            self.tags = {**shared, PARENT_TAG: self._parent(trial),
                         CONFIG_TAG: configuration_id(trial.config), SEED_TAG: _seed(trial),
                         ROLE_TAG: "trial"}
            try:
                super().log_trial_start(trial)
            finally:
                self.tags = shared
        else:
            super().log_trial_start(trial)

    def log_trial_result(self, iteration: int, trial: Any, result: dict[str, Any]) -> None:
        # Ray takes the step from timesteps_total when a result has one: the G step.
        super().log_trial_result(iteration, trial, {**result, "timesteps_total": result["step"]})

    def on_experiment_end(self, trials: list[Any], **info: Any) -> None:
        client = _client()
        for run_id in self._parents.values():
            client.set_terminated(run_id, status="FINISHED")
        self._parents = {}


@contextlib.contextmanager
def _env(key: str, value: str | None) -> Iterator[None]:
    """``os.environ[key] = value`` inside the block (nothing when ``value`` is None)."""
    old = os.environ.get(key)
    if value is not None:
        os.environ[key] = value
    try:
        yield
    finally:
        if value is not None:
            if old is None:
                del os.environ[key]
            else:
                os.environ[key] = old


class GroupedWandb(WandbLoggerCallback):
    """Ray's W&B callback with each trial's ``group`` set to its configuration and its seed
    among the run's tags."""

    def setup(self, *args: Any, **kwargs: Any) -> None:
        mode = self.kwargs.get("mode")
        # Ray asks for an API key unless $WANDB_MODE says offline; the option says it here.
        with _env("WANDB_MODE", mode if mode in ("offline", "disabled") else None):
            super().setup(*args, **kwargs)

    def log_trial_start(self, trial: Any) -> None:
        shared_group, shared_tags = self.group, self.kwargs.get("tags")
        # Ray reads the group from self.group and passes self.kwargs on to wandb.init.
        self.group = configuration_label(trial.config)
        self.kwargs["tags"] = [*(shared_tags or []), f"seed={_seed(trial)}",
                               f"configuration={configuration_id(trial.config)}"]
        try:
            super().log_trial_start(trial)
        finally:
            self.group = shared_group
            if shared_tags is None:
                self.kwargs.pop("tags")
            else:
                self.kwargs["tags"] = shared_tags


def _mlflow(spec: SweepSpec, options: dict[str, Any]) -> tune.Callback:
    return GroupedMLflow(
        tracking_uri=options.get("tracking_uri", os.environ.get("MLFLOW_TRACKING_URI")),
        experiment_name=options.get("experiment_name", spec.name),
        tags={"tuneable_gan.sweep": spec.name, **options.get("tags", {})},
        save_artifact=options.get("save_artifact", False))


def _wandb(spec: SweepSpec, options: dict[str, Any]) -> tune.Callback:
    rest = {k: v for k, v in options.items() if k != "project"}
    return GroupedWandb(project=options.get("project", spec.name), **rest)


def _wandb_can_log_in(options: dict[str, Any]) -> str | None:
    """Why W&B cannot log in, or None: online mode needs an API key in the environment or
    from ``wandb login``."""
    if options.get("mode", os.environ.get("WANDB_MODE", "online")) != "online":
        return None
    if os.environ.get("WANDB_API_KEY"):
        return None
    import wandb

    try:
        wandb.ensure_configured()
        if wandb.api.api_key:
            return None
    except AttributeError:  # wandb versions without ensure_configured
        pass
    return ("wandb needs an API key (WANDB_API_KEY or `wandb login`); or set "
            "tune.callbacks.wandb.mode: offline")


# name -> (the package it needs, the pip extra that installs it, the builder, a check of what
# else it needs, None when nothing)
TRACKERS: dict[str, tuple[str, str, Callable[[SweepSpec, dict[str, Any]], tune.Callback],
                          Callable[[dict[str, Any]], str | None]]] = {
    "mlflow": ("mlflow", "mlflow", _mlflow, lambda options: None),
    "wandb": ("wandb", "wandb", _wandb, _wandb_can_log_in),
}


def check_trackers(spec: SweepSpec) -> None:
    """UserError (one line) when a tracker of ``tune.callbacks`` cannot run here: its package is
    not installed, or W&B online has no API key. A sweep checks this before it writes anything."""
    for t in spec.tune.callbacks:
        package, extra, _, needs = TRACKERS[t.name]
        if importlib.util.find_spec(package) is None:
            raise UserError(f"tune.callbacks: {t.name} needs the {package} package "
                            f"(pip install 'tuneable-gan[{extra}]')")
        why = needs(t.options)
        if why is not None:
            raise UserError(f"tune.callbacks: {why}")


def tracker_callbacks(spec: SweepSpec) -> list[tune.Callback]:
    """The Ray callbacks of the sweep's ``tune.callbacks`` (``check_trackers`` first)."""
    check_trackers(spec)
    return [TRACKERS[t.name][2](spec, t.options) for t in spec.tune.callbacks]
