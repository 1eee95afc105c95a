"""An experiment directory -> one tidy pandas frame (one row per trial x report) -> parquet.

Reads what Ray Tune and ``tuneable_gan.tune.launch`` wrote, file by file, through pyarrow's
filesystems (a local path or a URI such as ``s3://bucket/prefix/name``), without importing ray:

* ``tuneable_gan_sweep.yaml``: the sweep (axes -> the swept factors; train.steps; tune settings);
* ``tuneable_gan_driver.yaml``: whether the sweep's driver is running or has ended;
* ``experiment_state-*.json``: each trial's status (TERMINATED, ERROR, RUNNING, PENDING ...),
  its failure count and its last result as Ray saw them (read as plain JSON, never unpickled);
* ``trial_<id>/result.json`` (one JSON row per report), ``params.json``, ``error.txt``.

Every row carries the trial's config as dotted columns, every metric it reported, and the
trial's ``status`` (see ``STATUSES``), ``stopped_at`` (the step an early-stopped trial reached),
``status_reason``, ``log_problem`` (a torn or missing ``result.json`` line, said once per
trial; "" when the log is whole) and ``last_report``. A trial that never reported gets one row
with ``step`` NaN, so trial counts stay complete. Rows repeated by a restore after a hard kill
are de-duplicated on (trial, step), keeping the last (docs/ray.md 5.1); a last report that
``result.json`` lost but Ray's experiment state holds is taken from there.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import yaml

from analysis import output
from analysis.trial_status import (
    StateEntry,
    Trial,
    decide,
    last_line,
    parse_failures,
    parse_rows,
    recover,
)
from tuneable_gan.constants import SEED_KEY, SPEC_FILE
from tuneable_gan.errors import UserError
from tuneable_gan.tune import driver_state

STATUSES = ("finished", "stopped", "diverged", "errored", "running")
META_KEY = b"tuneable_gan"
# Ray rewrites its experiment state every ~10 s while the driver lives, and syncs it to remote
# storage every 300 s; a quarter hour without any write means the driver is gone.
STALE_AFTER_S = 900.0
_DROP = ("config",)  # the nested copy of the swept keys; the flat dotted columns hold them all
# The driver-side report log (tuneable_gan.tune.result_log.RESULT_LOG; not imported: this
# package never imports ray).
RESULT_LOG = "tuneable_gan_result.jsonl"
_TRIAL_FILES = {"result.json", RESULT_LOG, "params.json", "error.txt", "error.pkl"}
def filesystem(experiment: str | os.PathLike[str]) -> tuple[pafs.FileSystem, str]:
    """(pyarrow filesystem, path inside it) for a local path or a URI."""
    text = os.fspath(experiment)
    if "://" in text:
        try:
            fs, path = pafs.FileSystem.from_uri(text)
        except (pa.ArrowInvalid, OSError) as e:
            raise UserError(f"cannot open {text}: {str(e).splitlines()[0]}") from None
        return fs, path.rstrip("/")
    return pafs.LocalFileSystem(), str(Path(text).expanduser().resolve())


def _read(fs: pafs.FileSystem, path: str) -> str:
    with fs.open_input_stream(path) as f:
        return f.read().decode("utf-8", errors="replace")


def _info(fs: pafs.FileSystem, path: str) -> list[pafs.FileInfo]:
    try:
        return fs.get_file_info(pafs.FileSelector(path, allow_not_found=True))
    except (FileNotFoundError, OSError):
        return []


def read_sweep(experiment: str | os.PathLike[str]) -> dict[str, Any]:
    """The sweep document stored beside the results (``SweepSpec.to_dict()`` as YAML)."""
    fs, root = filesystem(experiment)
    try:
        with fs.open_input_stream(f"{root}/{SPEC_FILE}") as f:
            doc = yaml.safe_load(f.read().decode())
    except (FileNotFoundError, OSError):
        raise UserError(f"{os.fspath(experiment)} is not a tuneable-gan experiment "
                        f"(no {SPEC_FILE}; run `tuneable-gan sweep` to make one)") from None
    except UnicodeDecodeError:
        raise UserError(f"{os.fspath(experiment)}/{SPEC_FILE} is not text (a binary file?): "
                        "not a stored sweep") from None
    except yaml.YAMLError:
        raise UserError(f"{os.fspath(experiment)}/{SPEC_FILE} is not valid YAML") from None
    if not isinstance(doc, dict):
        raise UserError(f"{os.fspath(experiment)}/{SPEC_FILE} is not a sweep document")
    return doc


def swept_factors(doc: dict[str, Any]) -> list[str]:
    """The axes of a sweep document, minus the seed (seeds are replicates, not a factor)."""
    return [k for k in (doc.get("space") or {}) if k != SEED_KEY]


def _load_state(fs: pafs.FileSystem, files: list[pafs.FileInfo]) -> dict[str, StateEntry]:
    """trial_id -> what the newest experiment state file says of it."""
    states = sorted((f for f in files if f.base_name.startswith("experiment_state-")
                     and f.base_name.endswith(".json")), key=lambda f: (f.mtime_ns or 0, f.path))
    if not states:
        return {}
    try:
        doc = json.loads(_read(fs, states[-1].path))
    except (json.JSONDecodeError, OSError):
        return {}  # caught mid-write; statuses then come from the trial files alone
    out = {}
    for entry in doc.get("trial_data", []) if isinstance(doc, dict) else []:
        try:
            info = json.loads(entry[0]) if isinstance(entry[0], str) else entry[0]
            cfg = info.get("config") if isinstance(info.get("config"), dict) else {}
            state = StateEntry(str(info.get("status")), str(info.get("relative_logdir") or ""), cfg)
            out[str(info["trial_id"])] = state
        except (KeyError, TypeError, IndexError, AttributeError, json.JSONDecodeError):
            continue
        try:  # the run metadata: failures and the last result (cloudpickled parts unread)
            meta = json.loads(entry[1]) if isinstance(entry[1], str) else entry[1]
            if isinstance(meta.get("num_failures"), int):
                state.failures = meta["num_failures"]
            last = meta.get("last_result")
            if isinstance(last, dict) and isinstance(last.get("step"), (int, float)):
                state.last_result = last
        except (TypeError, IndexError, AttributeError, json.JSONDecodeError):
            pass
    return out


def _driver_ended(fs: pafs.FileSystem, root: str) -> bool:
    """Whether the sweep's driver recorded its end (``tuneable_gan.tune.driver_state``)."""
    try:
        found = driver_state.parse(_read(fs, f"{root}/{driver_state.DRIVER_FILE}"))
    except (FileNotFoundError, OSError):
        return False
    return found is not None and found[0] == "ended"


def _scan(fs: pafs.FileSystem, root: str) -> tuple[list[Trial], float]:
    files = _info(fs, root)
    if not files:
        raise UserError(f"{root}: no such experiment directory")
    latest = max((f.mtime.timestamp() for f in files if f.mtime and
                  f.base_name.startswith("experiment_state-")), default=0.0)
    state = _load_state(fs, files)
    by_dir = {st.dirname: tid for tid, st in state.items() if st.dirname}
    trials: dict[str, Trial] = {}
    for d in files:
        if d.type != pafs.FileType.Directory or d.base_name.startswith("."):
            continue
        inside = {f.base_name: f for f in _info(fs, d.path)}
        if not set(inside) & _TRIAL_FILES and d.base_name not in by_dir:
            continue  # not a trial directory (e.g. a report written into the experiment)
        t = Trial(trial_id=by_dir.get(d.base_name) or d.base_name.removeprefix("trial_"),
                   dirname=d.base_name)
        # The driver's own log holds every report; Ray's result.json loses the rows since the
        # last sync whenever a trial restarts (tuneable_gan.tune.result_log), e.g. under PBT.
        log = next((n for n in (RESULT_LOG, "result.json") if n in inside), None)
        if log is not None:
            t.rows, t.torn, t.torn_step = parse_rows(_read(fs, inside[log].path))
            mt = inside[log].mtime
            t.mtime = mt.timestamp() if mt else 0.0
        if "params.json" in inside:
            try:
                t.params = json.loads(_read(fs, inside["params.json"].path))
            except json.JSONDecodeError:
                t.params = {}
        if "error.txt" in inside:
            text = _read(fs, inside["error.txt"].path)
            t.error = last_line(text)
            t.failures, t.failed_at = parse_failures(text)
        elif "error.pkl" in inside:
            t.error, t.failures = "error.pkl present", 1
        if t.rows and "trial_id" in t.rows[-1]:
            t.trial_id = str(t.rows[-1]["trial_id"])
        trials[t.trial_id] = t
    for tid, st in state.items():
        t = trials.setdefault(tid, Trial(trial_id=tid, dirname=st.dirname or None))
        t.state, t.params = st.status, t.params or st.config
        t.state_failures, t.state_result = st.failures, st.last_result
    latest = max([latest, *(t.mtime for t in trials.values())])
    return sorted(trials.values(), key=lambda t: t.trial_id), latest


def collect(experiment: str | os.PathLike[str], out: str | os.PathLike[str] | None = None, *,
            now: float | None = None, stale_after_s: float = STALE_AFTER_S) -> pd.DataFrame:
    """The experiment as a tidy frame, one row per trial x report; written to ``out`` (parquet)
    when given.

    ``df.attrs`` (also stored in the parquet metadata) holds ``experiment``, ``name``,
    ``factors`` (swept axes minus the seed), ``axes``, ``seeds``, ``tune`` (metric, mode, search,
    scheduler ...) and ``base``. The experiment counts as running while something in it was
    written in the last ``stale_after_s`` seconds (``now`` defaults to the clock).
    """
    fs, root = filesystem(experiment)
    doc = read_sweep(experiment)
    trials, latest = _scan(fs, root)
    # The driver's recorded end wins; a driver killed outright is told by the silence.
    alive = not _driver_ended(fs, root) and \
        (time.time() if now is None else now) - latest < stale_after_s
    base = dict(doc.get("base") or {})
    fifo = (doc.get("tune") or {}).get("scheduler", "fifo") == "fifo"
    records: list[dict[str, Any]] = []
    for t in trials:
        rows, problem = recover(t, t.rows)
        rows = _dedup(rows)
        cfg_steps = (rows[-1] if rows else {}).get("train.steps", base.get("train.steps"))
        status, stopped_at, reason = decide(t, rows, cfg_steps, alive, fifo)
        if status == "finished" and reason:  # finished, though result.json lacks reports
            problem = "; ".join(p for p in (problem, reason) if p)
        extra = {"trial_id": t.trial_id, "trial_dir": t.dirname, "status": status,
                 "stopped_at": stopped_at, "status_reason": reason,
                 "log_problem": problem}
        if not rows:
            records.append(_config(doc, t.params) | {"step": None, "last_report": True} | extra)
        for i, r in enumerate(rows):
            r = {k: v for k, v in r.items() if k not in _DROP}
            records.append(r | {"last_report": i == len(rows) - 1} | extra)
    df = pd.DataFrame.from_records(records)
    if df.empty:
        raise UserError(f"{os.fspath(experiment)} holds no trials yet")
    df["stopped_at"] = df["stopped_at"].astype("Int64")
    df["step"] = pd.to_numeric(df["step"])
    df.attrs.update(_attrs(experiment, doc))
    if out is not None:
        write_parquet(df, out)
    return df


def _config(doc: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
    """The run config of a trial that never reported, from its params as the trainable builds
    it (base document, cell rules, presets; optuna's trial index -> seed included); if the
    stored spec no longer validates, the base document, the matching rules and the params
    merged, the preset expanded when it still exists."""
    try:
        from tuneable_gan.tune.space import spec_from_dict

        return spec_from_dict(doc, source=SPEC_FILE).trial_config(params).flat()
    except Exception:  # noqa: BLE001 - any failure here only costs precision, never the report
        from tuneable_gan.config import expand_preset
        from tuneable_gan.tune.space_cells import CellRule, compose

        plain = {k: v for k, v in params.items() if not k.startswith("__")}
        try:
            rules = tuple(CellRule(dict(r.get("when") or {}), dict(r.get("set") or {}))
                          for r in doc.get("cells") or [])
            return expand_preset(compose(dict(doc.get("base") or {}), rules, plain))[0]
        except Exception:  # noqa: BLE001
            return dict(doc.get("base") or {}) | plain


def _dedup(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Keep the last row of each step (a restored trial re-reports the steps after its
    checkpoint), ordered by step."""
    by_step: dict[Any, dict[str, Any]] = {}
    for r in rows:
        by_step.pop(r.get("step"), None)
        by_step[r.get("step")] = r
    return sorted(by_step.values(), key=lambda r: (r.get("step") is None, r.get("step") or 0))


def _attrs(experiment: str | os.PathLike[str], doc: dict[str, Any]) -> dict[str, Any]:
    space = doc.get("space") or {}
    return {"experiment": os.fspath(experiment), "name": str(doc.get("name", "")),
            "description": str(doc.get("description") or ""),
            "factors": swept_factors(doc),
            "axes": {k: v for k, v in space.items() if k != SEED_KEY},
            "seeds": int((space.get(SEED_KEY) or {}).get("seeds", 1)),
            "tune": doc.get("tune") or {}, "base": doc.get("base") or {},
            # The cell the space declares as its baseline (empty: the report's default rule).
            "baseline": dict(doc.get("baseline") or {}),
            # The paper's numbers for the cells (tuneable_gan.tune.space_paper), if given.
            "paper": doc.get("paper")}


def scheduler_of(attrs: dict[str, Any]) -> tuple[str | None, dict[str, Any]]:
    """(name, settings) of the sweep's ``tune.scheduler`` as ``collect`` recorded it
    (``("fifo", {})`` for FIFO; ``(None, {})`` when the sweep recorded none)."""
    sched = attrs.get("tune", {}).get("scheduler")
    if isinstance(sched, dict) and len(sched) == 1:
        name, params = next(iter(sched.items()))
        return str(name), dict(params) if isinstance(params, dict) else {}
    return (str(sched), {}) if isinstance(sched, str) else (None, {})


def trial_table(df: pd.DataFrame) -> pd.DataFrame:
    """One row per trial: its last report (config, metrics, status, stopped_at)."""
    last = df[df["last_report"]].copy()
    last.attrs = dict(df.attrs)
    return last.reset_index(drop=True)


def write_parquet(df: pd.DataFrame, out: str | os.PathLike[str]) -> None:
    """Write ``df`` with pyarrow, ``df.attrs`` in the file's metadata; odd object columns
    (mixed types from a changed schema) are stored as JSON text rather than failing."""
    frame = df.copy()
    for col in frame.columns:
        if frame[col].dtype == object:
            try:
                pa.array(frame[col], from_pandas=True)
            except (pa.ArrowInvalid, pa.ArrowTypeError):
                frame[col] = frame[col].map(lambda v: None if v is None else json.dumps(v))
    table = pa.Table.from_pandas(frame, preserve_index=False)
    meta = dict(table.schema.metadata or {})
    meta[META_KEY] = json.dumps(df.attrs, default=str).encode()
    fs, path = filesystem(out)
    table = table.replace_schema_metadata(meta)
    if not isinstance(fs, pafs.LocalFileSystem):
        pq.write_table(table, path, filesystem=fs)
        return
    output.make_dir(Path(path).parent)
    buf = pa.BufferOutputStream()
    pq.write_table(table, buf)
    output.write_bytes(Path(path), buf.getvalue().to_pybytes())


def read_collected(path: str | os.PathLike[str]) -> pd.DataFrame:
    """A frame written by ``collect(..., out=path)``, with its ``attrs`` restored."""
    fs, p = filesystem(path)
    table = pq.read_table(p, filesystem=fs)
    df = table.to_pandas()
    raw = (table.schema.metadata or {}).get(META_KEY)
    if raw:
        df.attrs.update(json.loads(raw))
    return df
