"""Aggregate training throughput of 1, 2, 4 and 8 processes sharing one GPU, as Ray packs trials
given ``tune.resources.gpu`` of 1, 0.5, 0.25 and 0.125.

Each process is one trial's trainer (``vs_reference.ours_config``: the biggan_cifar preset with
DigGAN on the first of 4 D steps, DiffAugment translation,cutout, batch 50) capped at its share
of the device's memory by the project's own ``tuneable_gan.device.cap_memory``, as a packed trial
caps itself. All processes of a count build and warm up, meet at a barrier, then train for the
same wall-clock window; the aggregate is the sum of their G iterations per second. No Ray is
needed: Ray only starts the processes and sets CUDA_VISIBLE_DEVICES.

    python benchmarks/pack.py [--counts 1,2,4,8] [--seconds 20] [--device cuda]
        [--precision fp32|bf16] [--threads N] [--smoke]
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import queue
import sys
import tempfile
import time
import traceback
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from noise_cifar import write_noise_cifar  # noqa: E402
from vs_reference import ours_config  # noqa: E402

from tuneable_gan.config import from_dict  # noqa: E402
from tuneable_gan.device import cap_memory  # noqa: E402
from tuneable_gan.trainer import GANTrainer  # noqa: E402

# A worker that has not reached the barrier by then (a hung CUDA init) fails its count.
BARRIER_TIMEOUT_S = 300


def worker(rank: int, n: int, job: dict[str, Any], barrier: Any, results: Any) -> None:
    """One packed trial: cap, build, warm up, wait for the others, train for the window."""
    try:
        torch.set_num_threads(job["threads"])
        share = cap_memory(job["device"], 1.0 / n)
        trainer = GANTrainer(from_dict(job["config"] | {"train.seed": rank}))
        cuda = trainer.device.type == "cuda"
        for _ in range(job["warmup"]):
            trainer.train_step()
        if cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
        barrier.wait(BARRIER_TIMEOUT_S)
        steps, t0 = 0, time.perf_counter()
        while steps < job["min_steps"] or time.perf_counter() - t0 < job["seconds"]:
            trainer.train_step()
            steps += 1
            if cuda:
                torch.cuda.synchronize()
        elapsed = time.perf_counter() - t0
        peak = torch.cuda.max_memory_reserved() / 2**20 if cuda else float("nan")
        results.put({"rank": rank, "steps": steps, "seconds": elapsed, "share": share,
                     "peak_mib": peak})
    except BaseException as e:  # the parent reports it in the table and goes on
        barrier.abort()
        results.put({"rank": rank, "error": f"{type(e).__name__}: {e}",
                     "trace": traceback.format_exc()})


def run_count(n: int, job: dict[str, Any], timeout: float) -> list[dict[str, Any]]:
    """Start ``n`` workers together and collect their results (or errors)."""
    # CUDA: fresh processes, each with its own CUDA context as Ray's workers have (CUDA cannot
    # start in a forked child anyway). CPU: forked, so a smoke run pays no imports again.
    ctx = mp.get_context("spawn" if job["device"].startswith("cuda") else "fork")
    barrier, results = ctx.Barrier(n), ctx.Queue()
    procs = [ctx.Process(target=worker, args=(r, n, job, barrier, results)) for r in range(n)]
    for p in procs:
        p.start()
    out: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    try:
        while len(out) < n:
            try:
                out.append(results.get(timeout=max(0.1, deadline - time.monotonic())))
            except queue.Empty:
                out.append({"rank": -1, "error": f"timed out after {timeout:g} s"})
                break
    finally:
        for p in procs:
            p.join(timeout=10)
            if p.is_alive():
                p.kill()
    return out


def row(n: int, res: list[dict[str, Any]], base: float | None) -> tuple[str, float | None]:
    """One Markdown row for ``n`` processes, and their aggregate rate."""
    errors = [r["error"] for r in res if "error" in r]
    if errors:
        return f"| {n} | {1 / n:.3g} | error: {errors[0]} | | | |", None
    rates = [r["steps"] / r["seconds"] for r in res]
    total = sum(rates)
    peak = max(r["peak_mib"] for r in res)
    vs = f"{total / base:.2f}x" if base else ("1.00x" if n == 1 else "n/a")
    cap = "none" if res[0]["share"] is None else f"{res[0]['share']:.3g}"
    mib = f"{peak:.0f}" if peak == peak else "n/a"  # NaN: no CUDA, nothing reserved
    return (f"| {n} | {cap} | {total / n:.3f} | {total:.3f} | {vs} | {mib} |", total)


def main(argv: list[str] | None = None) -> str:
    """Run every count; prints and returns the Markdown table."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--counts", default="1,2,4,8")
    p.add_argument("--seconds", type=float, default=20.0, help="timed window per count")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--precision", default="fp32", choices=("fp32", "bf16"))
    # One thread, as a trial with tune.resources.cpu 1: the GPU does the work.
    p.add_argument("--threads", type=int, default=1, help="CPU threads per process")
    p.add_argument("--timeout", type=float, default=240.0, help="per count")
    p.add_argument("--smoke", action="store_true", help="widths 16, batch 10, 1 s window")
    args = p.parse_args(argv)
    counts = [int(c) for c in args.counts.split(",")]
    if args.smoke:
        args.seconds = 1.0
    lines = ["| processes | memory cap each | G it/s each | aggregate G it/s | vs 1 process | "
             "peak MiB reserved (max) |", "|---|---|---|---|---|---|"]
    with tempfile.TemporaryDirectory() as tmp:
        root = write_noise_cifar(tmp, train_rows=1000, test_rows=10)
        base = None
        for n in counts:
            job = {"config": ours_config(root, args.device, args.precision, smoke=args.smoke),
                   "device": args.device, "threads": args.threads, "seconds": args.seconds,
                   "warmup": 1 if args.smoke else 3, "min_steps": 1}
            line, total = row(n, run_count(n, job, args.timeout), base)
            if base is None and total is not None and n == 1:
                base = total
            lines.append(line)
    # Named only now: CUDA starts in this process after the workers have had the device.
    name = torch.cuda.get_device_name(0) if args.device.startswith("cuda") else "CPU"
    head = (f"device: {name}; {args.precision}; {args.seconds:g} s window per count"
            + (" (smoke: widths 16, batch 10)" if args.smoke else ""))
    out = "\n".join([head, "", *lines])
    print(out)
    return out


if __name__ == "__main__":
    main()
