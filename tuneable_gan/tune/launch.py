"""Build and run (or resume) a Tune experiment from a SweepSpec.

Searcher (random | grid | optuna), scheduler (fifo | asha | seed_asha), per-trial resources,
concurrency, failure policy, checkpoint retention, local or remote storage, and an existing
cluster. Every check a user can fail (name, storage, resources) runs before anything is
written; the stored spec, the integrity record (``integrity``) and the driver state
(``driver_state``) are written with ``disk.writing``, and resume verifies the record before
Ray unpickles anything.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import pyarrow.fs
import ray
import yaml
from ray import tune
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, TrialScheduler

from tuneable_gan.constants import SPEC_FILE
from tuneable_gan.disk import blocked, writing
from tuneable_gan.errors import ConfigError, UserError
from tuneable_gan.tune import driver_state, integrity, progress, scheduler_state, tracking
from tuneable_gan.tune.groups import configuration_of
from tuneable_gan.tune.pbt import population_based
from tuneable_gan.tune.result_log import ResultLog
from tuneable_gan.tune.seed_asha import SeedGroupASHA
from tuneable_gan.tune.space import SweepSpec, spec_from_dict
from tuneable_gan.tune.space_pbt import PBT_SCHEDULERS
from tuneable_gan.tune.trainable import TrialContext, ticket_root, train_gan

TUNER_FILE = "tuner.pkl"  # Ray's own name (ray.tune.impl.tuner_internal)


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


def check_name(name: str, what: str = "name") -> None:
    """Refuse an experiment name that is not one directory inside the storage (``..``, ``.``,
    an absolute path, ``a/b``): the experiment would be written elsewhere."""
    if name in ("", ".", "..") or any(c in name for c in "/\\\0") or name != name.strip():
        raise ConfigError(f"{what} {name!r}: an experiment name must be one directory name "
                          "inside the storage (letters, digits, '_', '-', '.'; not '.' or "
                          "'..', no '/'), else the experiment would be written outside it")


def check_storage(spec: SweepSpec) -> None:
    """Refuse a local storage that is a file or cannot be written, before anything is."""
    if "://" in spec.tune.storage:
        return  # remote: the first write (the stored spec) reports a failure in one line
    why = blocked(experiment_path(spec))
    if why and why[1] == "file":
        raise ConfigError(f"tune.storage (--storage): {why[0]} is a file, not a directory; "
                          "choose a directory for the experiments")
    if why:
        raise ConfigError(f"tune.storage (--storage): cannot write in {why[0]} (permission "
                          "denied); choose a directory you can write to")


def _fs(uri: str) -> tuple[pyarrow.fs.FileSystem, str]:
    return pyarrow.fs.FileSystem.from_uri(uri) if "://" in uri else (
        pyarrow.fs.LocalFileSystem(), uri)


def _write_text(uri: str, text: str) -> None:
    """Write ``text`` to ``uri`` (atomically on a local disk); a failure is one line."""
    fs, path = _fs(uri)
    data = text.encode()
    local = isinstance(fs, pyarrow.fs.LocalFileSystem)
    tmp = f"{path}.{os.getpid()}.tmp" if local else path
    try:
        with writing(path, need=len(data)):
            fs.create_dir(str(Path(path).parent), recursive=True)
            with fs.open_output_stream(tmp) as f:
                f.write(data)
            if local:
                os.replace(tmp, path)
    except (OSError, pyarrow.ArrowException) as e:
        raise UserError(f"cannot write {uri}: {_why(e)}") from None
    finally:
        if local:
            Path(tmp).unlink(missing_ok=True)


def _why(e: BaseException) -> str:
    return (getattr(e, "strerror", None) or str(e).splitlines()[0] or type(e).__name__).strip()


def _read_text(uri: str) -> str:
    fs, path = _fs(uri)
    with fs.open_input_stream(path) as f:
        return f.read().decode()


def _scheduler(spec: SweepSpec) -> TrialScheduler:
    s = spec.tune.scheduler
    if s.name == "fifo":
        return FIFOScheduler()
    if s.name in PBT_SCHEDULERS:
        return population_based(s.name, dict(s.params))
    params = {"max_t": spec.reports_per_trial()} | dict(s.params)
    if s.name == "seed_asha":
        # A module-level group function: tuner.pkl pickles the scheduler.
        return SeedGroupASHA(time_attr="training_iteration", group_of=configuration_of,
                             group_size=spec.seeds, **params)
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


def build_tuner(spec: SweepSpec, fn: Callable[..., None] = train_gan,
                callbacks: Sequence[tune.Callback] = ()) -> tune.Tuner:
    """A Tuner for ``spec`` running ``fn`` (default ``train_gan``); call ``.fit()``. It keeps
    the experiment's integrity record (``integrity.IntegrityRecorder``) besides ``callbacks``."""
    t = spec.tune
    scheduler = _scheduler(spec)
    reporter, end_lines = progress.reporting(spec)
    return tune.Tuner(
        trainable(spec, fn),
        param_space=spec.param_space(),
        tune_config=tune.TuneConfig(
            metric=t.metric, mode=t.mode, num_samples=spec.tuner_num_samples(),
            search_alg=_searcher(spec), scheduler=scheduler,
            max_concurrent_trials=t.max_concurrent or None,
            trial_dirname_creator=lambda trial: f"trial_{trial.trial_id}",
            reuse_actors=True),
        run_config=tune.RunConfig(
            name=spec.name, storage_path=storage_root(t.storage),
            # The scheduler's state first: the integrity recorder seals it in the same step.
            callbacks=[ResultLog(), scheduler_state.SchedulerRecorder(scheduler),
                       integrity.IntegrityRecorder(), *tracking.tracker_callbacks(spec),
                       *callbacks, end_lines],
            # The best by the sweep metric are kept (Tune always keeps the newest too, for
            # resume): the report's samples and best config come from the best evaluation.
            checkpoint_config=tune.CheckpointConfig(
                num_to_keep=t.num_to_keep, checkpoint_score_attribute=t.metric,
                checkpoint_score_order=t.mode),
            failure_config=tune.FailureConfig(max_failures=t.max_failures),
            # What a trial writes in its directory (the TensorBoard sample grids) reaches the
            # storage with its checkpoints.
            sync_config=tune.SyncConfig(sync_artifacts=True),
            # Ray's legacy engine at verbose=1 (progress.use_reporter_engine): our table, one
            # line per ended trial, and none of Ray's per-trial config and result dumps.
            progress_reporter=reporter, verbose=1),
    )


def run_sweep(spec: SweepSpec, address: str | None = None,
              fn: Callable[..., None] = train_gan,
              callbacks: Sequence[tune.Callback] = ()) -> tune.ResultGrid:
    """Check the name and the storage, connect, check resources, store the spec beside the
    results, seal it and Ray's ``tuner.pkl`` in the integrity record, run the sweep."""
    check_name(spec.name)
    check_storage(spec)
    tracking.check_trackers(spec)
    integrity.load_key(create=True)  # a key problem stops the sweep before it starts
    connect(address)
    check_resources(spec)
    _warn_tickets(spec)
    path = experiment_path(spec)
    _write_text(f"{path}/{SPEC_FILE}", yaml.safe_dump(spec.to_dict(), sort_keys=False))
    tuner = build_tuner(spec, fn, callbacks)
    integrity.seal(path, [SPEC_FILE, TUNER_FILE])
    return _fit(tuner, path)


def _fit(tuner: tune.Tuner, path: str) -> tune.ResultGrid:
    """``tuner.fit()`` between the driver-state marks "running" and "ended"."""
    _write_text(f"{path}/{driver_state.DRIVER_FILE}", driver_state.render("running"))
    try:
        return tuner.fit()
    finally:
        _write_text(f"{path}/{driver_state.DRIVER_FILE}", driver_state.render("ended"))


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
    where = f"{path}/{SPEC_FILE}"
    try:
        text = _read_text(where)
    except IsADirectoryError:
        raise UserError(f"{where} is a directory, not a stored sweep") from None
    except (FileNotFoundError, NotADirectoryError):
        raise UserError(f"{experiment} is not a tuneable-gan experiment (no {SPEC_FILE})") from None
    except UnicodeDecodeError:
        raise UserError(f"{where} is not text (a binary file?): not a stored sweep") from None
    except (OSError, pyarrow.ArrowException) as e:
        raise UserError(f"cannot read {where}: {_why(e)}") from None
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError:
        raise UserError(f"{where} is not valid YAML: not a stored sweep") from None
    if not isinstance(doc, dict):
        raise UserError(f"{where} is not a sweep document (a mapping with name, base, space, "
                        "tune)")
    return spec_from_dict(doc, source=where)


def resume_sweep(experiment: str, address: str | None = None,
                 fn: Callable[..., None] = train_gan,
                 trust: bool = False) -> tuple[tune.ResultGrid, SweepSpec]:
    """Continue an interrupted experiment: unfinished and errored trials go on from their
    checkpoints; finished ones are not rerun. Every file Ray would unpickle must match the
    experiment's integrity record under this user's key (``integrity.verify``), unless
    ``trust``: then the directory's files are adopted into a new record."""
    path = storage_root(experiment)
    spec = load_experiment_spec(experiment)
    if not tune.Tuner.can_restore(path):  # only looks for tuner.pkl, reads nothing
        raise UserError(f"{experiment} has no Tune experiment state to resume")
    if trust:
        integrity.seal(path)
    else:
        integrity.verify(path)
    tracking.check_trackers(spec)  # tuner.pkl holds the trackers: unpickling needs them
    connect(address)
    check_resources(spec)
    _warn_tickets(spec)
    tuner = tune.Tuner.restore(path, trainable=trainable(spec, fn), resume_unfinished=True,
                               resume_errored=True, restart_errored=False)
    _keep_recording(tuner)
    _restore_scheduler(tuner, path)
    return _fit(tuner, path), spec


def _restore_scheduler(tuner: tune.Tuner, path: str) -> None:
    """Put the stored scheduler state (``scheduler_state``) into the restored scheduler and
    keep recording it: without it a resumed ASHA sweep starts with empty rungs."""
    internal = getattr(tuner, "_local_tuner", None)
    if internal is None:
        return  # Ray Client: the scheduler lives on the cluster, as tuner.pkl left it
    # Tuner.restore has no public way to reach the scheduler it unpickled; fit() uses this one.
    scheduler = internal._tune_config.scheduler
    doc = scheduler_state.load(path)
    if doc is not None:
        try:
            scheduler_state.set_state(scheduler, doc)
        except (ValueError, KeyError, TypeError) as e:
            raise UserError(f"{path}/{scheduler_state.STATE_FILE}: cannot restore the "
                            f"scheduler ({e})") from None
    run_config = internal.get_run_config()
    others = [c for c in run_config.callbacks or []
              if not isinstance(c, (scheduler_state.SchedulerRecorder, ResultLog))]
    run_config.callbacks = [ResultLog(), scheduler_state.SchedulerRecorder(scheduler), *others]


def _keep_recording(tuner: tune.Tuner) -> None:
    """Make sure the restored run keeps the record current (an experiment sealed by a trusted
    resume may come from a sweep that had no recorder)."""
    # Tuner.restore takes the RunConfig, callbacks included, from tuner.pkl and has no public
    # way to add one; the internal tuner's RunConfig is what fit() reads.
    internal = getattr(tuner, "_local_tuner", None)
    if internal is None:
        return  # Ray Client: the run config lives on the cluster, as tuner.pkl left it
    run_config = internal.get_run_config()
    callbacks = list(run_config.callbacks or [])
    if not any(isinstance(c, integrity.IntegrityRecorder) for c in callbacks):
        run_config.callbacks = [integrity.IntegrityRecorder(), *callbacks]
