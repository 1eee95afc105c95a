"""An experiment directory -> one tidy pandas frame (one row per trial x report) -> parquet.

Reads what Ray Tune and ``tuneable_gan.tune.launch`` wrote, file by file, through pyarrow's
filesystems (a local path or a URI such as ``s3://bucket/prefix/name``), without importing ray:

* ``tuneable_gan_sweep.yaml``: the sweep (axes -> the swept factors; train.steps; tune settings);
* ``experiment_state-*.json``: each trial's status (TERMINATED, ERROR, RUNNING, PENDING ...);
* ``trial_<id>/result.json`` (one JSON row per report), ``params.json``, ``error.txt``.

Every row carries the trial's config as dotted columns, every metric it reported, and the
trial's ``status`` (see ``STATUSES``), ``stopped_at`` (the step an early-stopped trial reached),
``status_reason`` and ``last_report``. A trial that never reported gets one row with ``step``
NaN, so trial counts stay complete. Rows repeated by a restore after a hard kill are
de-duplicated on (trial, step), keeping the last (docs/ray.md 5.1).
"""

from __future__ import annotations

import json
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import yaml

from tuneable_gan.constants import SEED_KEY, SPEC_FILE
from tuneable_gan.errors import UserError

STATUSES = ("finished", "stopped", "diverged", "errored", "running")
META_KEY = b"tuneable_gan"
# Ray rewrites its experiment state every ~10 s while the driver lives, and syncs it to remote
# storage every 300 s; a quarter hour without any write means the driver is gone.
STALE_AFTER_S = 900.0
_LIVE = ("RUNNING", "PENDING", "PAUSED")
_DROP = ("config",)  # the nested copy of the swept keys; the flat dotted columns hold them all
_TRIAL_FILES = {"result.json", "params.json", "error.txt", "error.pkl"}


@dataclass
class _Trial:
    trial_id: str
    dirname: str | None = None
    state: str | None = None
    error: str | None = None
    params: dict[str, Any] = field(default_factory=dict)
    rows: list[dict[str, Any]] = field(default_factory=list)
    mtime: float = 0.0


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
        doc = yaml.safe_load(_read(fs, f"{root}/{SPEC_FILE}"))
    except (FileNotFoundError, OSError):
        raise UserError(f"{os.fspath(experiment)} is not a tuneable-gan experiment "
                        f"(no {SPEC_FILE}; run `tuneable-gan sweep` to make one)") from None
    except yaml.YAMLError:
        raise UserError(f"{os.fspath(experiment)}/{SPEC_FILE} is not valid YAML") from None
    if not isinstance(doc, dict):
        raise UserError(f"{os.fspath(experiment)}/{SPEC_FILE} is not a sweep document")
    return doc


def swept_factors(doc: dict[str, Any]) -> list[str]:
    """The axes of a sweep document, minus the seed (seeds are replicates, not a factor)."""
    return [k for k in (doc.get("space") or {}) if k != SEED_KEY]


def _parse_rows(text: str) -> list[dict[str, Any]]:
    rows = []
    for line in text.splitlines():
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            # A running trial's last line can be half-written; the next collect will read it.
            continue
        if isinstance(row, dict):
            rows.append(row)
    return rows


def _last_line(text: str) -> str:
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return lines[-1][:200] if lines else "error"


def _load_state(fs: pafs.FileSystem,
                files: list[pafs.FileInfo]) -> dict[str, tuple[str, str, dict[str, Any]]]:
    """trial_id -> (status, relative dir, config) from the newest experiment state file."""
    states = sorted((f for f in files if f.base_name.startswith("experiment_state-")
                     and f.base_name.endswith(".json")), key=lambda f: (f.mtime_ns or 0, f.path))
    if not states:
        return {}
    try:
        doc = json.loads(_read(fs, states[-1].path))
    except (json.JSONDecodeError, OSError):
        return {}  # caught mid-write; statuses then come from the trial files alone
    out = {}
    for entry in doc.get("trial_data", []):
        try:
            info = json.loads(entry[0]) if isinstance(entry[0], str) else entry[0]
            cfg = info.get("config") if isinstance(info.get("config"), dict) else {}
            out[str(info["trial_id"])] = (str(info.get("status")),
                                          str(info.get("relative_logdir") or ""), cfg)
        except (KeyError, TypeError, IndexError, json.JSONDecodeError):
            continue
    return out


def _scan(fs: pafs.FileSystem, root: str) -> tuple[list[_Trial], float]:
    files = _info(fs, root)
    if not files:
        raise UserError(f"{root}: no such experiment directory")
    latest = max((f.mtime.timestamp() for f in files if f.mtime and
                  f.base_name.startswith("experiment_state-")), default=0.0)
    state = _load_state(fs, files)
    by_dir = {d: tid for tid, (_, d, _) in state.items() if d}
    trials: dict[str, _Trial] = {}
    for d in files:
        if d.type != pafs.FileType.Directory or d.base_name.startswith("."):
            continue
        inside = {f.base_name: f for f in _info(fs, d.path)}
        if not set(inside) & _TRIAL_FILES and d.base_name not in by_dir:
            continue  # not a trial directory (e.g. a report written into the experiment)
        t = _Trial(trial_id=by_dir.get(d.base_name) or d.base_name.removeprefix("trial_"),
                   dirname=d.base_name)
        if "result.json" in inside:
            t.rows = _parse_rows(_read(fs, inside["result.json"].path))
            mt = inside["result.json"].mtime
            t.mtime = mt.timestamp() if mt else 0.0
        if "params.json" in inside:
            try:
                t.params = json.loads(_read(fs, inside["params.json"].path))
            except json.JSONDecodeError:
                t.params = {}
        if "error.txt" in inside:
            t.error = _last_line(_read(fs, inside["error.txt"].path))
        elif "error.pkl" in inside:
            t.error = "error.pkl present"
        if t.rows and "trial_id" in t.rows[-1]:
            t.trial_id = str(t.rows[-1]["trial_id"])
        trials[t.trial_id] = t
    for tid, (status, d, cfg) in state.items():
        t = trials.setdefault(tid, _Trial(trial_id=tid, dirname=d or None))
        t.state, t.params = status, t.params or cfg
    latest = max([latest, *(t.mtime for t in trials.values())])
    return sorted(trials.values(), key=lambda t: t.trial_id), latest


def _status(t: _Trial, rows: list[dict[str, Any]], steps: int | None,
            alive: bool) -> tuple[str, int | None, str]:
    """(status, stopped_at, reason) of one trial; the order of the rules is the decision."""
    rows = [r for r in rows if r.get("step") is not None]
    last = rows[-1] if rows else None
    step = int(last["step"]) if last else None
    if any(bool(r.get("diverged")) for r in rows):
        return "diverged", None, f"losses became NaN/inf at step {step}"
    # Reaching train.steps is final whatever a lagging experiment state says (docs/ray.md 5.1).
    if step is not None and steps is not None and step >= steps:
        return "finished", None, ""
    if t.state == "ERROR":
        return "errored", None, t.error or "Tune marked the trial ERROR"
    if alive and (t.state in _LIVE or (t.state is None and not (last or {}).get("done"))):
        return "running", None, "pending" if t.state == "PENDING" else ""
    if step is not None and (t.state == "TERMINATED" or (t.state is None and last.get("done"))):
        return "stopped", step, f"stopped early at step {step} of {steps}"
    if t.error:
        return "errored", None, t.error
    where = f"step {step}" if step is not None else "no report"
    return "errored", None, f"experiment not running and trial ended at {where} without a " \
                            "final report (interrupted? `tuneable-gan resume` continues it)"


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
    alive = (time.time() if now is None else now) - latest < stale_after_s
    base = dict(doc.get("base") or {})
    records: list[dict[str, Any]] = []
    for t in trials:
        rows = _dedup(t.rows)
        cfg_steps = (rows[-1] if rows else {}).get("train.steps", base.get("train.steps"))
        status, stopped_at, reason = _status(t, rows, cfg_steps, alive)
        extra = {"trial_id": t.trial_id, "trial_dir": t.dirname, "status": status,
                 "stopped_at": stopped_at, "status_reason": reason}
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
            "tune": doc.get("tune") or {}, "base": doc.get("base") or {}}


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
    if isinstance(fs, pafs.LocalFileSystem):
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    pq.write_table(table.replace_schema_metadata(meta), path, filesystem=fs)


def read_collected(path: str | os.PathLike[str]) -> pd.DataFrame:
    """A frame written by ``collect(..., out=path)``, with its ``attrs`` restored."""
    fs, p = filesystem(path)
    table = pq.read_table(p, filesystem=fs)
    df = table.to_pandas()
    raw = (table.schema.metadata or {}).get(META_KEY)
    if raw:
        df.attrs.update(json.loads(raw))
    return df
