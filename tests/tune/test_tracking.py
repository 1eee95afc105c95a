"""``tune.callbacks``: the section's parsing, the configuration a trial is grouped under, and one
real sweep handed to MLflow (its local file store) and W&B (offline mode) at once: the seed
replicates of a configuration sit together in both."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from conftest import TINY

from tuneable_gan.errors import ConfigError, UserError
from tuneable_gan.tune import tracking
from tuneable_gan.tune.groups import LABEL_MAX, configuration_id, configuration_label
from tuneable_gan.tune.launch import run_sweep
from tuneable_gan.tune.space import load_space, spec_from_dict
from tuneable_gan.tune.space_tracking import TrackerSpec


def write_space(tmp_path: Path, callbacks, space=None, base=None) -> Path:
    doc = {"name": "tracked", "base": base or TINY, "space": space or {},
           "tune": {"storage": str(tmp_path / "results"), "resources": {"cpu": 1},
                    "search": "grid", "callbacks": callbacks}}
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


# -- the section ----------------------------------------------------------------------------------


def test_a_list_of_names_and_a_mapping_of_options_both_parse(tmp_path):
    spec = load_space(write_space(tmp_path, ["mlflow", "wandb"]))
    assert spec.tune.callbacks == (TrackerSpec("mlflow"), TrackerSpec("wandb"))
    spec = load_space(write_space(tmp_path, {"wandb": {"mode": "offline", "tags": ["a"]},
                                             "mlflow": {"tracking_uri": "file:///x"}}))
    assert spec.tune.callbacks == (TrackerSpec("wandb", {"mode": "offline", "tags": ["a"]}),
                                   TrackerSpec("mlflow", {"tracking_uri": "file:///x"}))
    # The stored spec reads back equal; a sweep without trackers stores no such key.
    assert spec_from_dict(spec.to_dict(), source="stored").tune == spec.tune
    assert "callbacks" not in load_space(write_space(tmp_path, None)).to_dict()["tune"]


@pytest.mark.parametrize("callbacks, line", [
    (["comet"], "tune.callbacks: unknown tracker 'comet'; valid: mlflow, wandb"),
    ({"mlflow": {"uri": "x"}},
     "tune.callbacks.mlflow.uri: unknown option; valid: tracking_uri, experiment_name, tags, "
     "save_artifact"),
    ({"wandb": {"mode": "sometimes"}},
     "tune.callbacks.wandb.mode must be one of online, offline, disabled; got 'sometimes'"),
    ({"wandb": {"project": 3}}, "tune.callbacks.wandb.project must be a non-empty str, got 3"),
    (["wandb", "wandb"], "tune.callbacks: wandb is named twice"),
    ("mlflow", "tune.callbacks must be a list of tracker names (mlflow, wandb) or a mapping"),
])
def test_bad_sections_are_one_line_naming_the_key(tmp_path, callbacks, line):
    with pytest.raises(ConfigError) as e:
        load_space(write_space(tmp_path, callbacks))
    assert any(p.startswith(f"s.yaml: {line}") for p in e.value.problems), e.value.problems


def test_a_missing_package_or_key_stops_the_sweep_before_it_writes(tmp_path, monkeypatch):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.setenv("WANDB_CONFIG_DIR", str(tmp_path / "wandb-config"))  # no `wandb login`
    monkeypatch.setenv("HOME", str(tmp_path))  # nor a ~/.netrc
    spec = load_space(write_space(tmp_path, ["wandb"]))
    with pytest.raises(UserError, match=r"^tune.callbacks: wandb needs an API key .*"
                                        r"tune.callbacks.wandb.mode: offline$"):
        run_sweep(spec)
    monkeypatch.setattr(tracking.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(UserError, match=r"mlflow needs the mlflow package \(pip install "
                                        r"'tuneable-gan\[mlflow\]'\)"):
        run_sweep(load_space(write_space(tmp_path, ["mlflow"])))
    assert not (tmp_path / "results").exists()


def test_seeds_share_a_configuration_and_other_values_do_not():
    a0 = {"regularizer.weight": 10.0, "train.seed": 0}
    a1 = {"regularizer.weight": 10.0, "train.seed": 1}
    b0 = {"regularizer.weight": 100.0, "train.seed": 0}
    assert configuration_id(a0) == configuration_id(a1) != configuration_id(b0)
    assert configuration_label(a0) == configuration_label(a1) == "regularizer.weight=10.0"
    assert configuration_label({"train.seed": 3}) == "seeds"
    assert configuration_label({"__sample__": 2, "optim.g_lr": 1e-4}) == (
        "optim.g_lr=0.0001 sample=2")
    long = {f"k{i:03d}": "v" * 10 for i in range(20)}
    label = configuration_label(long)
    assert len(label) <= LABEL_MAX
    assert label.endswith(configuration_id(long))


# -- a sweep handed to both trackers ------------------------------------------------------------


BLOCK, HEADER = 32768, 7  # W&B's transaction log: LevelDB's log format after a 7-byte header
FULL, FIRST, MIDDLE, LAST = 1, 2, 3, 4


def log_records(path: Path) -> list[bytes]:
    """The records of a W&B transaction log (``run-*.wandb``): 32 KiB blocks of chunks, each
    with a 7-byte header (crc32, little-endian length, type), a record split over blocks as
    first / middle / last chunks (the LevelDB log format; wandb ships no reader of it)."""
    data = path.read_bytes()
    assert data[:4] == b":W&B", f"{path} is not a W&B transaction log"
    pos, out, partial = HEADER, [], b""
    while pos + 7 <= len(data):
        if BLOCK - pos % BLOCK < 7:  # a block's tail too short for a chunk header is padding
            pos += BLOCK - pos % BLOCK
            continue
        length, kind = int.from_bytes(data[pos + 4:pos + 6], "little"), data[pos + 6]
        chunk, pos = data[pos + 7:pos + 7 + length], pos + 7 + length
        if kind == FULL:
            out.append(chunk)
        elif kind == FIRST:
            partial = chunk
        elif kind == MIDDLE:
            partial += chunk
        elif kind == LAST:
            out.append(partial + chunk)
    return out


def wandb_runs(root: Path) -> list[dict]:
    """Each offline W&B run under ``root``: its group, tags and the logged steps of fid, read
    from the run's transaction log with wandb's own protos."""
    from wandb.proto import wandb_internal_pb2 as pb

    runs = []
    for f in sorted(root.rglob("offline-run-*/run-*.wandb")):
        run: dict = {"fid_steps": []}
        for data in log_records(f):
            rec = pb.Record.FromString(data)
            if rec.WhichOneof("record_type") == "run":
                run.update(group=rec.run.run_group, tags=list(rec.run.tags))
            elif rec.WhichOneof("record_type") == "history":
                items = {i.key or "/".join(i.nested_key): json.loads(i.value_json)
                         for i in rec.history.item}
                if "fid" in items:
                    run["fid_steps"].append(items["step"])
        runs.append(run)
    return runs


@pytest.mark.slow
def test_a_sweep_files_each_seed_under_its_configuration(ray_2cpu, tmp_path, monkeypatch):
    pytest.importorskip("mlflow")
    pytest.importorskip("wandb")
    # MLflow 3 keeps the file store only on request (its default is a database).
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")
    store = tmp_path / "mlruns"
    callbacks = {"mlflow": {"tracking_uri": store.as_uri()},
                 "wandb": {"mode": "offline", "dir": str(tmp_path / "wandb")}}
    space = {"regularizer.weight": {"grid": [1.0, 10.0]}, "train.seed": {"seeds": 2}}
    base = TINY | {"train.steps": 4, "train.eval_every": 2, "train.checkpoint_every": 4,
                   "eval.num_samples": 64, "eval.batch_size": 64}
    results = run_sweep(load_space(write_space(tmp_path, callbacks, space, base)))
    assert results.num_errors == 0

    from mlflow.tracking import MlflowClient

    client = MlflowClient(store.as_uri())
    (exp,) = [e for e in client.search_experiments() if e.name == "tracked"]
    runs = client.search_runs([exp.experiment_id])
    groups = {r.data.tags["tuneable_gan.configuration"]: r for r in runs
              if r.data.tags.get("tuneable_gan.role") == "group"}
    trials = [r for r in runs if r.data.tags.get("tuneable_gan.role") == "trial"]
    assert len(groups) == 2 and len(trials) == 4
    assert {g.info.run_name for g in groups.values()} == {"regularizer.weight=1.0",
                                                         "regularizer.weight=10.0"}
    assert all(g.info.status == "FINISHED" for g in groups.values())
    for cid, group in groups.items():
        mine = [t for t in trials if t.data.tags["tuneable_gan.configuration"] == cid]
        assert sorted(t.data.tags["tuneable_gan.seed"] for t in mine) == ["0", "1"]
        assert {t.data.tags["mlflow.parentRunId"] for t in mine} == {group.info.run_id}
        for t in mine:  # one fid per evaluation, at its G step
            history = client.get_metric_history(t.info.run_id, "fid")
            assert [m.step for m in history] == [2, 4]

    wb = wandb_runs(tmp_path / "wandb")
    assert len(wb) == 4
    assert sorted(r["group"] for r in wb) == ["regularizer.weight=1.0"] * 2 + [
        "regularizer.weight=10.0"] * 2
    for r in wb:
        seeds = [t for t in r["tags"] if t.startswith("seed=")]
        assert len(seeds) == 1 and r["fid_steps"] == [2, 4]
    assert sorted(t for r in wb for t in r["tags"] if t.startswith("seed=")) == [
        "seed=0", "seed=0", "seed=1", "seed=1"]
