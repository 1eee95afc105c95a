"""Seed-group ASHA against plain ASHA, replayed from a full grid's recorded results.

Give it an experiment in which every trial ran to the end (a FIFO run of the space, e.g.
``tuneable-gan sweep search_spaces/diggan_asha.yaml --set tune.scheduler=fifo``). Each repetition
replays those per-report results through both schedulers, built by the project's own launch code
from the space's ASHA settings, on a simulated cluster: trials start in a random order, ``-c``
at a time, and each report takes its recorded duration times a random factor, so results reach
the scheduler in another order each time (the same order for both schedulers in a repetition).
A stopped trial frees its slot for the next one.

Printed per scheduler: how often the configuration the full grid ranks best (mean final metric
over its seeds) still had a finished seed, how often the sweep would report it as the winner
(best mean over its finished seeds), and the compute used, as a share of the full grid's.

    python benchmarks/seed_asha_vs_asha.py EXPERIMENT [--space search_spaces/diggan_asha.yaml]
        [--seeds N] [--reps 20] [-c 2] [--jitter 0.3]

``--space``: the space whose ``tune.scheduler`` (ASHA settings) is replayed.
"""

from __future__ import annotations

import argparse
import heapq
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from analysis.collect import collect  # noqa: E402
from tuneable_gan.constants import SEED_KEY  # noqa: E402


@dataclass
class Recorded:
    """One trial of the full grid: its configuration key, seed, metric and seconds per report."""

    trial_id: str
    config: dict[str, Any]
    group: tuple[Any, ...]
    values: list[float]
    seconds: list[float]


def load(experiment: str, metric: str) -> list[Recorded]:
    """Every trial's reports; refuses a grid whose trials did not all finish."""
    df = collect(experiment)
    factors = [f for f in df.attrs["factors"] if f != SEED_KEY]
    out = []
    for tid, g in df[df["step"].notna()].sort_values("step").groupby("trial_id", sort=True):
        if g["status"].iloc[-1] != "finished":
            raise SystemExit(f"trial {tid} did not finish ({g['status'].iloc[-1]}): replay needs "
                             "a full grid (run the space with --set tune.scheduler=fifo)")
        config = {k: g[k].iloc[0] for k in [*factors, SEED_KEY]}
        out.append(Recorded(tid, config, tuple(config[k] for k in factors),
                            g[metric].astype(float).tolist(),
                            g["time_this_iter_s"].astype(float).tolist()))
    return out


class FakeTrial:
    """What the schedulers read of a Ray trial."""

    def __init__(self, rec: Recorded) -> None:
        self.trial_id, self.config, self.status = rec.trial_id, dict(rec.config), "RUNNING"

    def __repr__(self) -> str:
        return self.trial_id


def replay(trials: list[Recorded], scheduler: Any, metric: str, concurrency: int,
           rng: np.random.Generator, jitter: float) -> tuple[set[str], float]:
    """Run the simulated sweep; returns (finished trial ids, seconds of reports consumed)."""
    pending = [trials[i] for i in rng.permutation(len(trials))]
    scale = {t.trial_id: rng.lognormal(0.0, jitter, size=len(t.values)) for t in trials}
    fake = {t.trial_id: FakeTrial(t) for t in trials}
    for t in trials:
        scheduler.on_trial_add(None, fake[t.trial_id])
    events: list[tuple[float, int, str, int]] = []
    seq, now, used, finished = 0, 0.0, 0.0, set()
    by_id = {t.trial_id: t for t in trials}

    def start(t: Recorded, at: float) -> None:
        nonlocal seq
        heapq.heappush(events, (at + t.seconds[0] * scale[t.trial_id][0], seq, t.trial_id, 0))
        seq += 1

    for _ in range(min(concurrency, len(pending))):
        start(pending.pop(0), 0.0)
    while events:
        now, _, tid, i = heapq.heappop(events)
        t = by_id[tid]
        used += t.seconds[i] * scale[tid][i]
        result = {"training_iteration": i + 1, metric: t.values[i], "trial_id": tid}
        decision = scheduler.on_trial_result(None, fake[tid], result)
        last = i + 1 == len(t.values)
        if last or decision == "STOP":
            fake[tid].status = "TERMINATED"
            scheduler.on_trial_complete(None, fake[tid], result)
            if last:
                finished.add(tid)
            if pending:
                start(pending.pop(0), now)
        else:
            heapq.heappush(events, (now + t.seconds[i + 1] * scale[tid][i + 1], seq, tid, i + 1))
            seq += 1
    return finished, used


def compare(trials: list[Recorded], build: Callable[[str], Any], metric: str, mode: str,
            reps: int, concurrency: int, jitter: float, seed: int = 0,
            names: tuple[str, ...] = ("asha", "seed_asha")) -> list[tuple[str, int, int, float]]:
    """Per scheduler name: (name, replays whose best configuration had a finished seed,
    replays that would report it as the winner, mean share of the full grid's compute)."""
    sign = 1.0 if mode == "min" else -1.0
    groups: dict[tuple[Any, ...], list[Recorded]] = {}
    for t in trials:
        groups.setdefault(t.group, []).append(t)
    truth = min(groups, key=lambda g: sign * np.mean([t.values[-1] for t in groups[g]]))
    full = sum(sum(t.seconds) for t in trials)
    out = []
    for name in names:
        kept = picked = 0
        share = 0.0
        for r in range(reps):
            rng = np.random.default_rng([seed, r])  # the same orders for every scheduler
            done, used = replay(trials, build(name), metric, concurrency, rng, jitter)
            means = {g: np.mean([t.values[-1] for t in ts if t.trial_id in done])
                     for g, ts in groups.items() if any(t.trial_id in done for t in ts)}
            kept += truth in means
            picked += bool(means) and min(means, key=lambda g: sign * means[g]) == truth
            share += used / full
        out.append((name, kept, picked, share / reps))
    return out


def main(argv: list[str] | None = None) -> str:
    """Replay the experiment through plain and seed-group ASHA; print and return the table."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("experiment")
    ap.add_argument("--space", default=str(Path(__file__).resolve().parents[1]
                                           / "search_spaces" / "diggan_asha.yaml"))
    ap.add_argument("--seeds", type=int, default=0,
                    help="use only the first N seeds of each configuration (0: all)")
    ap.add_argument("--reps", type=int, default=20)
    ap.add_argument("-c", "--concurrency", type=int, default=2)
    ap.add_argument("--jitter", type=float, default=0.3, help="lognormal sigma of report times")
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)

    from tuneable_gan.tune.launch import _scheduler
    from tuneable_gan.tune.space import load_space

    spec = load_space(args.space)
    metric, mode = spec.tune.metric, spec.tune.mode
    if spec.tune.scheduler.name not in ("asha", "seed_asha"):
        raise SystemExit(f"{args.space}: tune.scheduler is {spec.tune.scheduler.name}, not ASHA")
    params = dict(spec.tune.scheduler.params)
    trials = load(args.experiment, metric)
    if args.seeds:
        seeds = sorted({t.config[SEED_KEY] for t in trials})[:args.seeds]
        trials = [t for t in trials if t.config[SEED_KEY] in seeds]
    n_seeds = len({t.config[SEED_KEY] for t in trials})
    sched_spec = spec.with_overrides([f"space.{SEED_KEY}={{seeds: {n_seeds}}}"])

    def build(name: str) -> Any:
        s = sched_spec.with_overrides([f"tune.scheduler={{{name}: {params}}}"])
        sched = _scheduler(s)
        sched.set_search_properties(metric, mode)
        return sched

    rows = compare(trials, build, metric, mode, args.reps, args.concurrency, args.jitter,
                   args.seed)
    groups = {t.group for t in trials}
    lines = [f"{len(trials)} trials, {len(groups)} configurations x {n_seeds} seeds; {metric} "
             f"({mode}); ASHA settings {params}; {args.reps} replays, concurrency "
             f"{args.concurrency}, jitter {args.jitter}",
             "| scheduler | best config finished | sweep picks the best | compute vs full grid |",
             "|---|---|---|---|"]
    lines += [f"| {name} | {kept}/{args.reps} | {picked}/{args.reps} | {100 * used:.0f}% |"
              for name, kept, picked, used in rows]
    text = "\n".join(lines)
    print(text)
    return text


if __name__ == "__main__":
    main()
