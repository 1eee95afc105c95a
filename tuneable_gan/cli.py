"""``tuneable-gan``: train | validate.

User errors print one line each (``tuneable-gan: error: ...``) and exit 2 with nothing
half-written: every check runs before the output directory is touched.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tuneable_gan.config import Config, from_dict, load_config, read_yaml
from tuneable_gan.errors import CheckpointError, ConfigError, Diverged, UserError

EXIT_USER = 2
EXIT_DIVERGED = 3
EXIT_INTERRUPTED = 130

# What --resume may change: none of these alters the run's mathematics.
RESUMABLE_KEYS = frozenset({"train.steps", "train.eval_every", "train.checkpoint_every",
                            "train.log_every"})


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="tuneable-gan", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    t = sub.add_parser("train", help="train one GAN run")
    t.add_argument("config", help="run config YAML")
    t.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="dotted override, e.g. regularizer.weight=100 (repeatable)")
    t.add_argument("--out", required=True, help="run directory")
    t.add_argument("--resume", action="store_true", help="continue the run in --out")
    t.add_argument("--quiet", action="store_true", help="no progress bar")
    v = sub.add_parser("validate", help="check a run config or a search space")
    v.add_argument("config", help="run config YAML, or a search-space YAML (has 'space:')")
    v.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    s = sub.add_parser("sweep", help="run a search space as a Ray Tune experiment")
    s.add_argument("space", help="search-space YAML (see search_spaces/)")
    s.add_argument("--address", help="Ray cluster address, or auto for the cluster on this machine "
                   "(default: RAY_ADDRESS, else a new local instance)")
    s.add_argument("--storage", help="experiment storage: a path or a URI such as s3://b/p")
    s.add_argument("--name", help="experiment name (default: the space's name)")
    s.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a base-config key or a tune.* key (repeatable)")
    s.add_argument("--smoke", action="store_true",
                   help="shrink steps, trials and grids to try any space in about a minute")
    rp = sub.add_parser("report", help="tables, plots and an HTML report of an experiment")
    rp.add_argument("experiment", help="the experiment directory (<storage>/<name>) or URI")
    rp.add_argument("--out", help="report directory (default: <experiment>/report)")
    rp.add_argument("--baseline", nargs="*", default=[], metavar="KEY=VALUE",
                    help="the cell every other is compared with (default: none / weight 0)")
    rp.add_argument("--metric", help="the metric of the tables (default: the sweep's)")
    r = sub.add_parser("resume", help="continue an interrupted sweep")
    r.add_argument("experiment", help="the experiment directory (<storage>/<name>)")
    r.add_argument("--address", help="Ray cluster address, or auto for the cluster on this machine "
                   "(default: RAY_ADDRESS, else a new local instance)")
    return p


def config_diff(old: Config, new: Config) -> list[str]:
    """Dotted keys whose values differ between two configs."""
    a, b = old.flat(), new.flat()
    return sorted(k for k in a if a[k] != b[k])


def _check_out_dir(out: Path, cfg: Config, resume: bool) -> Path | None:
    """Validate --out against --resume; the checkpoint to resume from, if any."""
    from tuneable_gan.checkpoint import CheckpointStore

    stored = out / "config.yaml"
    if not resume:
        if stored.exists():
            raise UserError(f"--out {out} holds a run already; pass --resume to continue it, "
                            "or choose another --out")
        if out.exists() and (not out.is_dir() or any(out.iterdir())):
            raise UserError(f"--out {out} is not an empty directory; choose another --out")
        return None
    if not stored.is_file():
        raise CheckpointError(f"--resume: {out} holds no run (no config.yaml); "
                              "drop --resume to start one")
    try:
        old = from_dict(read_yaml(stored))
    except ConfigError as e:
        raise CheckpointError(f"--resume: stored {stored} is invalid: {e.problems[0]}") from None
    changed = [k for k in config_diff(old, cfg) if k not in RESUMABLE_KEYS]
    if changed:
        raise UserError(f"--resume: {out} holds a different run; these keys differ from its "
                        f"config: {', '.join(changed)} (only {', '.join(sorted(RESUMABLE_KEYS))} "
                        "may change)")
    latest = CheckpointStore(out).latest()
    if latest is None:
        raise CheckpointError(f"--resume: {out} has no checkpoint to resume from")
    return latest


def _append_jsonl(path: Path, rows: list[dict[str, Any]]) -> None:
    with open(path, "a") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")


def _truncate_log(path: Path, step: int) -> None:
    """Drop rows logged after the checkpoint we resume from, so the log matches the state."""
    if not path.exists():
        return
    keep = [ln for ln in path.read_text().splitlines()
            if ln.strip() and json.loads(ln).get("step", 0) <= step]
    tmp = path.with_suffix(".tmp")
    tmp.write_text("".join(ln + "\n" for ln in keep))
    os.replace(tmp, path)


def _eval_line(m: dict[str, Any]) -> str:
    shown = [k for k in ("fid", "fid_best", "is_mean", "kid", "modes_covered", "w1", "w1_best")
             if k in m]
    return f"step {m['step']}: " + "  ".join(f"{k}={m[k]:.4g}" for k in shown)


def cmd_train(args: argparse.Namespace) -> int:
    """Run (or resume) one training run; see the module docstring for the exit codes."""
    from tqdm import tqdm

    from tuneable_gan.checkpoint import CheckpointStore, read_checkpoint
    from tuneable_gan.tickets import round_length
    from tuneable_gan.trainer import GANTrainer
    from tuneable_gan.viz import save_samples

    cfg = load_config(args.config, args.overrides)
    out = Path(args.out)
    ckpt = _check_out_dir(out, cfg, args.resume)
    trainer = GANTrainer(cfg)  # lottery tickets: tickets.default_root()
    trainer.evaluator  # noqa: B018  (built now: its errors must come before anything is written)
    if ckpt is not None:
        state, old = read_checkpoint(ckpt, map_location=trainer.device)
        if cfg.sparsity.level > 0 and round_length(old) != round_length(cfg):
            raise UserError("--resume: train.steps is the ticket round length of this run "
                            "(sparsity.round_steps is unset), so it cannot change")
        trainer.load_state_dict(state)
    out.mkdir(parents=True, exist_ok=True)
    (out / "config.yaml").write_text(cfg.to_yaml())
    (out / "run.json").write_text(json.dumps({
        "regularizer": {"name": cfg.regularizer.name, **trainer.reg.describe()},
        "device": str(trainer.device)}, indent=1))
    log = out / "metrics.jsonl"
    # Lottery runs: rows of the ticket rounds carry step -K*L+1 .. 0 (trainer.log_step), and
    # checkpoints are named by G steps on the whole schedule (trainer.progress).
    _truncate_log(log, trainer.log_step)
    store = CheckpointStore(out)
    tc = cfg.train
    bar = tqdm(total=trainer.total_steps, initial=trainer.progress, disable=args.quiet,
               unit="step", dynamic_ncols=True)
    t0, ran, code = time.perf_counter(), 0, 0
    try:
        while not trainer.finished:
            m = trainer.train_step()
            ran += 1
            bar.update(trainer.progress - bar.n)  # reused ticket rounds are skipped
            evaluate = trainer.at_boundary(tc.eval_every)
            if evaluate or trainer.at_boundary(tc.log_every):
                now = time.perf_counter()
                m["steps_per_s"] = ran / max(now - t0, 1e-9)
                m.update(trainer.describe_stage(), sparsity=trainer.sparsity())
                if evaluate:
                    m.update(trainer.evaluate())
                    if trainer.stage == "train" and trainer.best["step"] == trainer.step:
                        store.save_best(trainer.state_dict(), cfg)
                    bar.write(_eval_line(m) if trainer.stage == "train" else
                              f"ticket round {trainer.round}, " + _eval_line(
                                  {k.removeprefix("ticket_"): v for k, v in m.items()}))
                t0, ran = time.perf_counter(), 0
                _append_jsonl(log, [m | {"diverged": False}])
                bar.set_postfix(d=f"{m['d_loss']:.3f}", g=f"{m['g_loss']:.3f}",
                                dig=f"{m.get('dig', float('nan')):.3g}")
            if trainer.at_boundary(tc.checkpoint_every):
                store.save(trainer.progress, trainer.state_dict(), cfg)
    except Diverged as e:
        _append_jsonl(log, [{"step": e.step, "diverged": True, **e.values}])
        print(f"tuneable-gan: {e}; the run stopped (last checkpoint: {store.latest()})",
              file=sys.stderr)
        code = EXIT_DIVERGED
    except KeyboardInterrupt:
        store.save(trainer.progress, trainer.state_dict(), cfg)
        print(f"tuneable-gan: interrupted at step {trainer.log_step}; checkpoint saved, "
              f"continue with --resume", file=sys.stderr)
        code = EXIT_INTERRUPTED
    finally:
        bar.close()
        trainer.close()
    save_samples(trainer.samples(64), out / "samples.png",
                 real=trainer.data.images if trainer.data.images.dim() == 2 else None)
    return code


def _is_space(path: str) -> bool:
    return "space" in read_yaml(path)


def cmd_validate(args: argparse.Namespace) -> int:
    """Check a run config or a search space (schema and availability) and summarise it."""
    from tuneable_gan.trainer import check_available

    if not _is_space(args.config):
        cfg = load_config(args.config, args.overrides)
        check_available(cfg)
        print(cfg.to_yaml(), end="")
        print(f"# {args.config}: valid", file=sys.stderr)
        return 0
    from tuneable_gan.tune.space import load_space

    spec = load_space(args.config).with_overrides(args.overrides)
    check_available(spec.base)
    print(f"{spec.name}: {spec.expected_trials()} trials "
          f"(search {spec.tune.search}, seeds {spec.seeds}, scheduler {spec.tune.scheduler.name})")
    for k, v in spec.axes.items():
        print(f"  {k}: {v}")
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    """Run a search space with Ray Tune and print where the results are."""
    from tuneable_gan.trainer import check_available
    from tuneable_gan.tune.launch import experiment_path, run_sweep
    from tuneable_gan.tune.space import load_space

    overrides = list(args.overrides)
    if args.storage:
        overrides.append(f"tune.storage={args.storage}")
    spec = load_space(args.space).with_overrides(overrides)
    if args.name:
        spec = spec.with_overrides([f"name={args.name}"])
    if args.smoke:
        spec = spec.smoke()
    check_available(spec.base)
    results = run_sweep(spec, address=args.address)
    return _summarise(results, experiment_path(spec), spec.tune.metric, spec.tune.mode)


def cmd_resume(args: argparse.Namespace) -> int:
    """Continue an interrupted sweep from its trials' checkpoints."""
    from tuneable_gan.tune.launch import resume_sweep

    results, spec = resume_sweep(args.experiment, address=args.address)
    return _summarise(results, args.experiment, spec.tune.metric, spec.tune.mode)


def _summarise(results: Any, path: str, metric: str, mode: str) -> int:
    errors = results.num_errors
    print(f"experiment: {path}")
    print(f"trials: {len(results)}, errored: {errors}")
    try:
        best = results.get_best_result(metric=metric, mode=mode, scope="all")
        shown = {k: v for k, v in best.config.items() if not k.startswith("__")}
        print(f"best {metric}: {best.metrics.get(metric)} with {shown}")
    except (RuntimeError, KeyError, ValueError):
        print(f"no trial reported {metric}")
    return 1 if errors else 0


def cmd_report(args: argparse.Namespace) -> int:
    """Write the experiment's report (HTML, Markdown, tables, plots, parquet)."""
    from analysis.report import run

    return run(args.experiment, args.out, args.baseline, args.metric)


COMMANDS = {"train": cmd_train, "validate": cmd_validate, "sweep": cmd_sweep,
            "resume": cmd_resume, "report": cmd_report}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``tuneable-gan`` console script."""
    args = _parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except UserError as e:
        for line in e.problems:
            print(f"tuneable-gan: error: {line}", file=sys.stderr)
        return EXIT_USER
    except BrokenPipeError:  # output piped into `head` and the like
        sys.stderr.close()
        return 0


if __name__ == "__main__":
    sys.exit(main())
