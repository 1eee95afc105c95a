"""Build and run (or resume) a Tune experiment from a SweepSpec.

Searcher (random | grid | optuna), scheduler (fifo | asha), per-trial resources, concurrency,
failure policy, checkpoint retention, local or remote storage, and an existing cluster.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow.fs
import ray
import yaml
from ray import tune
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, TrialScheduler

from tuneable_gan.constants import SPEC_FILE
from tuneable_gan.errors import UserError
from tuneable_gan.tune.space import SweepSpec, spec_from_dict
from tuneable_gan.tune.trainable import TrialContext, ticket_root, train_gan


def connect(address: str | None = None, num_cpus: int | None = None,
            num_gpus: int | None = None) -> None:
    """Attach to a cluster (``address``, or RAY_ADDRESS) or start a local Ray instance.

    Token auth must match the cluster's: a token-mode driver on a cluster without auth
    connects, but every actor (every trial) then dies with a misleading ActorDiedError.
    """
    if ray.is_initialized():
        return
    address = address or os.environ.get("RAY_ADDRESS")
    has_token = (os.environ.get("RAY_AUTH_TOKEN") or os.environ.get("RAY_AUTH_TOKEN_PATH")
                 or (Path.home() / ".ray" / "auth_token").exists())
    if address and address != "auto" and has_token:
        # Ray >= 2.59: an explicit address never turns token auth on by itself, although a
        # head started where a token exists uses it.
        os.environ.setdefault("RAY_AUTH_MODE", "token")
    if address:
        ray.init(address=address, log_to_driver=False)
    else:
        # "local": always a fresh instance; a bare init() would join any cluster another
        # process on this machine started (use --address auto for that).
        ray.init(address="local", num_cpus=num_cpus, num_gpus=num_gpus, include_dashboard=False,
                 log_to_driver=False)


def check_resources(spec: SweepSpec) -> None:
    """Refuse per-trial resources that no node can ever satisfy (Ray would wait forever)."""
    want = spec.tune.resources
    nodes = [n["Resources"] for n in ray.nodes() if n.get("Alive")]
    fits = [n for n in nodes if n.get("CPU", 0) >= want.get("cpu", 1)
            and n.get("GPU", 0) >= want.get("gpu", 0)]
    if not fits:
        best_cpu = max((n.get("CPU", 0) for n in nodes), default=0)
        best_gpu = max((n.get("GPU", 0) for n in nodes), default=0)
        raise UserError(
            f"tune.resources asks for cpu={want.get('cpu', 1):g}, gpu={want.get('gpu', 0):g} per "
            f"trial, but the largest node has {best_cpu:g} CPUs and {best_gpu:g} GPUs; "
            "lower tune.resources or add nodes")


def storage_root(storage: str) -> str:
    """Absolute path or URI: Tune and pyarrow reject relative paths."""
    return storage if "://" in storage else str(Path(storage).expanduser().resolve())


def experiment_path(spec: SweepSpec) -> str:
    """Where the experiment lives: ``<storage>/<name>``."""
    return f"{storage_root(spec.tune.storage).rstrip('/')}/{spec.name}"


def _write_text(uri: str, text: str) -> None:
    fs, path = pyarrow.fs.FileSystem.from_uri(uri) if "://" in uri else (
        pyarrow.fs.LocalFileSystem(), uri)
    fs.create_dir(str(Path(path).parent), recursive=True)
    with fs.open_output_stream(path) as f:
        f.write(text.encode())


def _read_text(uri: str) -> str:
    fs, path = pyarrow.fs.FileSystem.from_uri(uri) if "://" in uri else (
        pyarrow.fs.LocalFileSystem(), uri)
    with fs.open_input_stream(path) as f:
        return f.read().decode()


def _scheduler(spec: SweepSpec) -> TrialScheduler:
    s = spec.tune.scheduler
    if s.name == "fifo":
        return FIFOScheduler()
    params = {"max_t": spec.reports_per_trial()} | dict(s.params)
    return ASHAScheduler(time_attr="training_iteration", **params)


def _searcher(spec: SweepSpec) -> Any:
    if spec.tune.search != "optuna":
        return None  # Tune's BasicVariantGenerator: random draws and grid_search expansion
    from ray.tune.search import Repeater
    from ray.tune.search.optuna import OptunaSearch

    search = OptunaSearch(metric=spec.tune.metric, mode=spec.tune.mode,
                          seed=spec.base.train.seed)
    # Seed replicas of one Optuna suggestion; the searcher sees their mean.
    return Repeater(search, repeat=spec.seeds, set_index=True) if spec.seeds > 1 else search


def trainable(spec: SweepSpec, fn: Callable[..., None] = train_gan) -> Any:
    """``fn`` (the trainable) bound to the sweep's ``TrialContext`` (built once, here) and its
    per-trial resources; the function's name is what ``Tuner.restore`` checks."""
    res = spec.tune.resources
    fn = tune.with_parameters(fn, ctx=TrialContext.of(spec))
    return tune.with_resources(fn, {"cpu": res.get("cpu", 1), "gpu": res.get("gpu", 0)})


def build_tuner(spec: SweepSpec, fn: Callable[..., None] = train_gan) -> tune.Tuner:
    """A Tuner for ``spec`` running ``fn`` (default ``train_gan``); call ``.fit()``."""
    t = spec.tune
    return tune.Tuner(
        trainable(spec, fn),
        param_space=spec.param_space(),
        tune_config=tune.TuneConfig(
            metric=t.metric, mode=t.mode, num_samples=spec.tuner_num_samples(),
            search_alg=_searcher(spec), scheduler=_scheduler(spec),
            max_concurrent_trials=t.max_concurrent or None,
            trial_dirname_creator=lambda trial: f"trial_{trial.trial_id}",
            reuse_actors=True),
        run_config=tune.RunConfig(
            name=spec.name, storage_path=storage_root(t.storage),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=t.num_to_keep),
            failure_config=tune.FailureConfig(max_failures=t.max_failures),
            verbose=1),
    )


def run_sweep(spec: SweepSpec, address: str | None = None,
              fn: Callable[..., None] = train_gan) -> tune.ResultGrid:
    """Connect, check resources, store the spec beside the results, run the sweep."""
    connect(address)
    check_resources(spec)
    _warn_tickets(spec)
    _write_text(f"{experiment_path(spec)}/{SPEC_FILE}",
                yaml.safe_dump(spec.to_dict(), sort_keys=False))
    return build_tuner(spec, fn).fit()


def _warn_tickets(spec: SweepSpec) -> None:
    """Say where lottery tickets go when the experiment's storage cannot hold them (the
    trials' own warnings never reach the driver)."""
    lottery = any(v > 0 for v in spec.values("sparsity.level"))
    _, warning = ticket_root(spec)
    if lottery and warning:
        warnings.warn(warning, stacklevel=3)


def load_experiment_spec(experiment: str) -> SweepSpec:
    """The SweepSpec stored beside an experiment's results by ``run_sweep``."""
    path = storage_root(experiment)
    try:
        text = _read_text(f"{path}/{SPEC_FILE}")
    except (FileNotFoundError, OSError):
        raise UserError(f"{experiment} is not a tuneable-gan experiment (no {SPEC_FILE})") from None
    return spec_from_dict(yaml.safe_load(text), source=f"{path}/{SPEC_FILE}")


def resume_sweep(experiment: str, address: str | None = None,
                 fn: Callable[..., None] = train_gan) -> tuple[tune.ResultGrid, SweepSpec]:
    """Continue an interrupted experiment: unfinished and errored trials go on from their
    checkpoints; finished ones are not rerun."""
    path = storage_root(experiment)
    spec = load_experiment_spec(experiment)
    if not tune.Tuner.can_restore(path):
        raise UserError(f"{experiment} has no Tune experiment state to resume")
    connect(address)
    check_resources(spec)
    _warn_tickets(spec)
    tuner = tune.Tuner.restore(path, trainable=trainable(spec, fn), resume_unfinished=True,
                               resume_errored=True, restart_errored=False)
    return tuner.fit(), spec
