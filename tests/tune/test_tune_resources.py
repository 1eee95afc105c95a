"""GPU packing with fake GPUs, and a real multi-node cluster on this machine (slow)."""

from __future__ import annotations

import json
import os
import secrets
import tempfile
import threading
import time
from pathlib import Path

import pytest
import ray
import yaml
from conftest import TINY, assert_resumed_rows

from tuneable_gan.tune.launch import run_sweep
from tuneable_gan.tune.space import load_space

BASE = TINY | {"train.steps": 4, "train.eval_every": 2, "train.checkpoint_every": 2,
               "eval.num_samples": 64, "eval.batch_size": 64}


def space(tmp_path: Path, n: int, tune: dict, base: dict | None = None):
    doc = {"name": "r", "base": base or BASE,
           "space": {"regularizer.weight": {"grid": [float(i) for i in range(n)]}},
           "tune": {"search": "grid", "scheduler": "fifo",
                    "storage": str(tmp_path / "results")} | tune}
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(doc))
    return load_space(tmp_path / "s.yaml")


@pytest.fixture
def cache_env(tmp_path_factory):
    os.environ["TUNEABLE_GAN_CACHE"] = str(tmp_path_factory.getbasetemp() / "cache")
    yield


@pytest.fixture
def token_auth(monkeypatch):
    """Token auth for the whole test cluster and the driver, as ``ray start --head`` gives when a
    token exists. connect() turns token auth on for an explicit address, but Cluster() (unlike
    ray.init() or ``ray start``) never does: with the modes mismatched the driver connects fine,
    then rejects the raylets' calls into it ("Missing authorization header in request!") and
    every trial dies with ActorDiedError ("The actor never ran - it was cancelled before it
    started running"). Cluster() also talks to its GCS from this process, whose RayConfig caches
    the mode read at import, hence the reset."""
    from ray._private.authentication_test_utils import reset_auth_token_state

    monkeypatch.setenv("RAY_AUTH_MODE", "token")
    if not (os.environ.get("RAY_AUTH_TOKEN") or os.environ.get("RAY_AUTH_TOKEN_PATH")
            or (Path.home() / ".ray" / "auth_token").exists()):
        monkeypatch.setenv("RAY_AUTH_TOKEN", secrets.token_hex(32))
    reset_auth_token_state()
    yield
    monkeypatch.undo()
    reset_auth_token_state()


@pytest.mark.slow
def test_fractional_gpus_pack_8_trials_on_4_gpus(cache_env, tmp_path):
    """num_gpus=4 (logical; no GPU here) and gpu=0.5 per trial: 8 trials run at once, two per
    GPU id, and each trial still trains on the CPU because torch sees no CUDA device."""
    ray.init(num_cpus=8, num_gpus=4, include_dashboard=False, log_to_driver=False,
             _temp_dir=tempfile.mkdtemp(prefix="ray", dir="/tmp"))
    try:
        spec = space(tmp_path, 8, {"resources": {"cpu": 1, "gpu": 0.5}, "max_concurrent": 0})
        peak, stop = [0], threading.Event()

        def watch():
            while not stop.is_set():
                used = ray.cluster_resources().get("GPU", 0) - ray.available_resources().get(
                    "GPU", 0)
                peak[0] = max(peak[0], used)
                time.sleep(0.05)

        t = threading.Thread(target=watch)
        t.start()
        results = run_sweep(spec)
        stop.set()
        t.join()
    finally:
        ray.shutdown()
    assert results.num_errors == 0 and len(results) == 8
    ids = sorted(r.metrics["gpu_ids"] for r in results)
    assert ids == ["0", "0", "1", "1", "2", "2", "3", "3"]
    assert peak[0] == 4.0  # all 8 half-GPU trials held their GPUs at the same time
    assert {r.metrics["device"] for r in results} == {"cpu"}


@pytest.mark.slow
def test_cluster_spreads_trials_and_survives_losing_a_node(cache_env, token_auth, tmp_path):
    """A head and 2 worker nodes (1 CPU each) on this machine: trials spread over the nodes;
    removing a worker mid-sweep makes its trial fail over and finish on another node from its
    checkpoint."""
    from ray.cluster_utils import Cluster

    from tuneable_gan.tune.launch import connect

    steps = 100  # ~25 reports: a trial is still running well after all have reported twice
    # Ray writes the current cluster's address under the default temp root (<tmp>/ray) even
    # when the head gets its own temp_dir; on a fresh machine that directory does not exist.
    os.makedirs(os.path.join(tempfile.gettempdir(), "ray"), exist_ok=True)
    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 1, "include_dashboard": False,
        "temp_dir": tempfile.mkdtemp(prefix="ray", dir="/tmp")})
    base = BASE | {"train.steps": steps, "train.eval_every": 4, "train.checkpoint_every": 4}
    spec = space(tmp_path, 3, {"resources": {"cpu": 1}, "max_failures": 3}, base=base)
    exp = tmp_path / "results" / "r"
    done, removed = threading.Event(), {}

    def rows(trial_dir: Path) -> list[dict]:
        try:
            lines = (trial_dir / "result.json").read_text().splitlines()
        except OSError:
            return []
        out = []
        for ln in lines:
            try:
                out.append(json.loads(ln))
            except ValueError:  # a line still being written
                break
        return out

    def remove_a_busy_worker():
        """Once every trial has reported twice (each report carries a checkpoint), remove the
        worker node whose trial is furthest from finishing."""
        by_id = {n.node_id: n for n in cluster.worker_nodes}
        try:
            while not done.wait(0.2):
                trials = [rows(d) for d in exp.glob("trial_*")]
                if len(trials) < 3 or any(len(r) < 2 for r in trials):
                    continue
                busy = sorted((r[-1]["step"], r[-1]["node_id"]) for r in trials
                              if r[-1]["step"] < steps and r[-1]["node_id"] in by_id)
                if busy:
                    step, node_id = busy[0]
                    cluster.remove_node(by_id[node_id])
                    removed.update(node_id=node_id, step=step)
                    return
        except Exception as e:  # surfaced by the asserts below
            removed["error"] = repr(e)

    killer = threading.Thread(target=remove_a_busy_worker, daemon=True)
    try:
        for _ in range(2):
            cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
        connect(cluster.address)
        killer.start()
        results = run_sweep(spec)
    finally:
        done.set()
        if killer.is_alive():
            killer.join()
        ray.shutdown()
        cluster.shutdown()
    assert "error" not in removed, removed["error"]
    assert removed, "no worker node was still running a trial after every trial reported twice"
    assert results.num_errors == 0 and len(results) == 3

    nodes_seen, failed_over = set(), []
    for r in results:
        trial_rows = rows(Path(r.path))
        assert trial_rows[-1]["step"] == steps
        nodes = [x["node_id"] for x in trial_rows]
        nodes_seen |= set(nodes)
        if len(set(nodes)) > 1:
            failed_over.append(trial_rows)
    assert len(nodes_seen) == 3  # one trial per 1-CPU node
    assert len(failed_over) == 1
    trial_rows = failed_over[0]
    before = [x for x in trial_rows if x["node_id"] == removed["node_id"]]
    after = [x for x in trial_rows if x["node_id"] != removed["node_id"]]
    assert trial_rows == before + after  # ran on the removed node, then only on another one
    # Continued from its last checkpoint, none skipped; a node lost between a result and its
    # checkpoint costs the interval in flight (CI hit this: steps 4, 8, 12, 16, 16, 20, ...).
    assert_resumed_rows(trial_rows, 4, steps)
    last = before[-1]["step"]
    assert last >= removed["step"] >= 8 and after[0]["step"] in (last, last + 4), (removed, last)
