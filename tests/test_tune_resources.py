"""GPU packing with fake GPUs, and a real multi-node cluster on this machine (slow)."""

from __future__ import annotations

import os
import tempfile
import threading
import time
from pathlib import Path

import pytest
import ray
import yaml
from conftest import TINY

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
def test_cluster_spreads_trials_and_survives_losing_a_node(cache_env, tmp_path):
    """A head and 2 worker nodes (1 CPU each) on this machine: trials spread over the nodes;
    removing a worker mid-sweep makes its trial fail over and finish on another node from its
    checkpoint."""
    from ray.cluster_utils import Cluster

    from tuneable_gan.tune.launch import connect

    cluster = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 1, "include_dashboard": False,
        "_temp_dir": tempfile.mkdtemp(prefix="ray", dir="/tmp")})
    workers = [cluster.add_node(num_cpus=1) for _ in range(2)]
    cluster.wait_for_nodes()
    base = BASE | {"train.steps": 60, "train.eval_every": 4, "train.checkpoint_every": 4}
    spec = space(tmp_path, 3, {"resources": {"cpu": 1}, "max_failures": 3}, base=base)
    exp = tmp_path / "results" / "r"
    victim = workers[0]

    def kill_when_running():
        deadline = time.time() + 180
        while time.time() < deadline:
            for d in exp.glob("trial_*"):
                f = d / "result.json"
                lines = f.read_text().splitlines() if f.exists() else []
                if len(lines) >= 2 and all(len((x / "result.json").read_text().splitlines()) >= 2
                                           for x in exp.glob("trial_*")
                                           if (x / "result.json").exists()):
                    cluster.remove_node(victim)
                    return
            time.sleep(0.2)

    try:
        connect(cluster.address)
        killer = threading.Thread(target=kill_when_running)
        killer.start()
        results = run_sweep(spec)
        killer.join()
    finally:
        ray.shutdown()
        cluster.shutdown()
    assert results.num_errors == 0 and len(results) == 3
    import json

    nodes_seen, failed_over = set(), 0
    for r in results:
        rows = [json.loads(ln) for ln in (Path(r.path) / "result.json").read_text().splitlines()]
        assert rows[-1]["step"] == 60
        nodes = [x["node_id"] for x in rows]
        nodes_seen |= set(nodes)
        if len(set(nodes)) > 1:
            failed_over += 1
            steps = [x["step"] for x in rows]
            assert steps.count(4) == 1, steps  # continued from a checkpoint, not from scratch
    assert len(nodes_seen) == 3 and failed_over >= 1
