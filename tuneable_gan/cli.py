"""``tuneable-gan``: train | validate | sweep | resume | report.

User errors print one line each (``tuneable-gan: error: ...``) and exit 2 with nothing
half-written: every check runs before the output directory is touched.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tuneable_gan.clip import clip_line, clip_lines
from tuneable_gan.config import expand_preset, flatten, parse_override, read_yaml
from tuneable_gan.constants import NOISE_FLOOR_SETS
from tuneable_gan.errors import ConfigError, UserError

EXIT_USER = 2


_EPILOG = """\
a sweep, then its report (the README's quickstart, about 8 minutes on 2 CPUs):
  tuneable-gan sweep search_spaces/quickstart.yaml
  tuneable-gan report results/quickstart

one run, and a space checked before it runs:
  tuneable-gan train configs/digits_diggan.yaml --out runs/digits
  tuneable-gan validate search_spaces/sparsity.yaml

'tuneable-gan COMMAND -h' lists a command's options; docs/ holds the methods and the design."""


def _version() -> str:
    """This package's version and the two libraries a result depends on most, read from the
    installed metadata (importing torch or ray for a version string would take seconds)."""
    from importlib.metadata import PackageNotFoundError, version

    from tuneable_gan import __version__

    def have(dist: str) -> str:
        try:
            return version(dist)
        except PackageNotFoundError:
            return "not installed"

    return (f"tuneable-gan {__version__} (torch {have('torch')}, ray {have('ray')}, "
            f"Python {sys.version.split()[0]})")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="tuneable-gan", epilog=_EPILOG, formatter_class=argparse.RawDescriptionHelpFormatter,
        description="Hyperparameter and ablation sweeps for data-efficient GAN training:\n"
        "train one run, validate a config or a search space, sweep a space with Ray Tune\n"
        "(resume it after an interruption), report an experiment as tables, plots and HTML.")
    p.add_argument("--version", action="version", version=_version())
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
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
    rp.add_argument("--noise-floor", type=int, default=NOISE_FLOOR_SETS, metavar="N",
                    help="re-score the best checkpoint on N independent evaluation latent sets "
                    f"to state the metric's evaluation noise (default {NOISE_FLOOR_SETS}; "
                    "0: skip)")
    r = sub.add_parser("resume", help="continue an interrupted sweep")
    r.add_argument("experiment", help="the experiment directory (<storage>/<name>)")
    r.add_argument("--address", help="Ray cluster address, or auto for the cluster on this machine "
                   "(default: RAY_ADDRESS, else a new local instance)")
    r.add_argument("--trust-experiment-dir", action="store_true",
                   help="resume although the experiment's integrity record does not vouch for "
                   "the pickles Ray will load (runs any code planted there; only for a "
                   "directory nobody else can write to)")
    return p


def cmd_train(args: argparse.Namespace) -> int:
    """Run (or resume) one training run; see the module docstring for the exit codes. A key
    the config sets that its methods do not read is refused before anything runs."""
    from tuneable_gan.reads import check_run
    from tuneable_gan.run_dir import train

    if _is_space(args.config):
        raise ConfigError(f"{args.config} is a search space, not a run config; run it with "
                          "tuneable-gan sweep (or train its base)")
    cfg, warnings = check_run(flatten(read_yaml(args.config)),
                              dict(parse_override(o) for o in args.overrides))
    for w in warnings:
        print(clip_line(f"tuneable-gan: warning: {w}"), file=sys.stderr)
    # The EMA warning only once the run is sure to start: a refused run prints its one error.
    return train(args.config, args.overrides, Path(args.out), resume=args.resume,
                 quiet=args.quiet, warnings=_ema_warning(cfg))


def _is_space(path: str) -> bool:
    doc = read_yaml(path)  # a bad file is refused before anything is imported for it
    from tuneable_gan.tune.space_checks import is_space_document

    return is_space_document(doc)


def cmd_validate(args: argparse.Namespace) -> int:
    """Check a run config or a search space as ``train`` and ``sweep`` would: the schema, the
    keys the chosen methods read, and every check ``train`` runs before its first step (without
    training or writing; what this machine cannot check is said), then summarise it."""
    if not _is_space(args.config):
        from tuneable_gan.preflight import preflight
        from tuneable_gan.reads import check_run

        doc = flatten(read_yaml(args.config))
        overrides = dict(parse_override(o) for o in args.overrides)
        cfg, warnings = check_run(doc, overrides)
        warnings += _ema_warning(cfg)
        notes = preflight(cfg)
        print(cfg.to_yaml(), end="")
        _, from_preset = expand_preset(doc | overrides)
        for key, name in from_preset.items():
            print(f"# {key}: {cfg.flat()[key]!r} from preset {name}", file=sys.stderr)
        for line in [*(f"tuneable-gan: warning: {w}" for w in warnings),
                     *(f"# {n}" for n in notes)]:
            print(clip_line(line), file=sys.stderr)
        print(f"# {args.config}: valid (train's checks before its first step pass"
              f"{', but for what is noted' if notes else ''})", file=sys.stderr)
        return 0
    from tuneable_gan.tune.space import load_space

    spec = load_space(args.config).with_overrides(args.overrides)
    problems, notes = spec.preflight()
    if problems:
        raise ConfigError(problems)
    for w in [*spec.warnings, *_space_ema_warnings(spec)]:
        print(clip_line(f"tuneable-gan: warning: {w}"), file=sys.stderr)
    print(f"{spec.name}: {spec.expected_trials()} trials "
          f"(search {spec.tune.search}, seeds {spec.seeds}, scheduler {spec.tune.scheduler.name})")
    for k, v in spec.axes.items():
        print(f"  {k}: {v}")
    preset = spec.base_doc.get("preset")
    print(f"base: preset {preset}" if preset else "base: no preset")
    if spec.cells:
        print("cells (applied in order, a later rule wins):")
    for i, rule in enumerate(spec.cells):
        print(f"  [{i}] {rule.describe()}")
    limit = 200
    cells = spec.grid_cells(limit + 1)
    if "train.steps" in spec.axes:
        print("train.steps per cell: swept (see its axis)")
    elif cells:
        print("train.steps per cell:")
    for params in cells[:limit] if "train.steps" not in spec.axes else []:
        doc = spec.trial_base().document(params)
        rules = [f"cells[{i}]" for i, r in enumerate(spec.cells) if r.matches(params)]
        what = ", ".join(f"{k}={v!r}" for k, v in params.items()) or "every trial"
        tail = f", preset {doc['preset']}" if doc.get("preset") else ""
        tail += f" ({', '.join(rules)})" if rules else ""
        print(f"  {what}: {spec.trial_config(params).train.steps}{tail}")
    if len(cells) > limit:
        print(f"  ... (first {limit} cells shown)")
    for n in notes:
        print(clip_line(f"# {n}"), file=sys.stderr)
    print(f"# {args.config}: valid (train's checks before its first step pass in every cell "
          f"checked{', but for what is noted' if notes else ''})", file=sys.stderr)
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    """Run a search space with Ray Tune and print where the results are."""
    from tuneable_gan.tune.launch import check_name, experiment_path, run_sweep
    from tuneable_gan.tune.space import load_space

    if args.name is not None:
        check_name(args.name, "--name")
    overrides = list(args.overrides)
    if args.storage:
        overrides.append(f"tune.storage={args.storage}")
    spec = load_space(args.space).with_overrides(overrides)
    if args.name:
        spec = spec.with_overrides([f"name={args.name}"])
    if args.smoke:
        spec = spec.smoke()
    for line in spec.warnings:
        print(clip_line(f"tuneable-gan: warning: {line}"), file=sys.stderr)
    # What validate refuses, sweep refuses, before Ray starts (train's pre-step checks per cell).
    problems, _ = spec.preflight()
    if problems:
        raise ConfigError(problems)
    from tuneable_gan.tune.progress import StartLines

    # Once per space, printed when the experiment starts (after run_sweep's own checks, so a
    # refused sweep is still its one error line); the trials print none, or each would. A
    # smoke run's few steps would warn for any EMA, and its FID is not what it is for.
    ema = [] if args.smoke else _space_ema_warnings(spec)
    results = run_sweep(spec, address=args.address, callbacks=[StartLines(
        [clip_line(f"tuneable-gan: warning: {w}") for w in ema])])
    return _summarise(results, experiment_path(spec), spec.tune.metric, spec.tune.mode)


def _ema_warning(cfg: Any) -> list[str]:
    """The G EMA warning of a run config (``tuneable_gan.ema_warning``), if it has one."""
    from tuneable_gan.ema_warning import ema_warning

    w = ema_warning(cfg)
    return [w] if w else []


def _space_ema_warnings(spec: Any) -> list[str]:
    """The G EMA warnings of a space's probe cells (``preflight``'s cells), once each."""
    from tuneable_gan.ema_warning import cell_warnings
    from tuneable_gan.tune.space_checks import probe_cells
    from tuneable_gan.tune.space_parse import MAX_COMBOS

    cells, _ = probe_cells(spec.axes, MAX_COMBOS)
    return cell_warnings((params, spec.trial_config(params)) for params in cells)


def cmd_resume(args: argparse.Namespace) -> int:
    """Continue an interrupted sweep from its trials' checkpoints, once its integrity record
    vouches for every file Ray will unpickle (or ``--trust-experiment-dir``)."""
    from tuneable_gan.tune.launch import resume_sweep

    results, spec = resume_sweep(args.experiment, address=args.address,
                                 trust=args.trust_experiment_dir)
    return _summarise(results, args.experiment, spec.tune.metric, spec.tune.mode)


def _summarise(results: Any, path: str, metric: str, mode: str) -> int:
    """Print the experiment, its trial and error counts and its best report: the best value
    of ``metric`` any trial reported and at which step (not that trial's last report)."""
    import pandas as pd

    errors = results.num_errors
    print(f"experiment: {path}")
    print(f"trials: {len(results)}, errored: {errors}")
    try:
        best = results.get_best_result(metric=metric, mode=mode, scope="all")
    except (RuntimeError, KeyError, ValueError):
        print(f"no trial reported {metric}")
        return 1 if errors else 0
    shown = {k: v for k, v in best.config.items() if not k.startswith("__")}
    last, last_step = best.metrics.get(metric), best.metrics.get("step")
    value, step = last, last_step  # without its history, the last report is all there is
    df = best.metrics_dataframe
    if df is not None and metric in df and "step" in df:
        values = pd.to_numeric(df[metric], errors="coerce")
        if values.notna().any():
            # idxmin/idxmax keep the first of equal values: the earliest step with the best.
            i = values.idxmin() if mode == "min" else values.idxmax()
            value, step = float(values[i]), df.loc[i, "step"]
            step = int(step) if pd.notna(step) else None
    fmt = {k: f"{v:.6g}" if isinstance(v, (int, float)) else v
           for k, v in (("value", value), ("last", last))}
    print(f"best {metric}: {fmt['value']} at step {step} (the best of the trial's reports; "
          f"its last: {fmt['last']} at step {last_step}) with {shown}")
    return 1 if errors else 0


def cmd_report(args: argparse.Namespace) -> int:
    """Write the experiment's report (HTML, Markdown, tables, plots, parquet)."""
    from analysis.report import run

    return run(args.experiment, args.out, args.baseline, args.metric, args.noise_floor)


COMMANDS = {"train": cmd_train, "validate": cmd_validate, "sweep": cmd_sweep,
            "resume": cmd_resume, "report": cmd_report}


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``tuneable-gan`` console script."""
    args = _parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except UserError as e:
        # Capped: a problem quotes the user's input, which may be a megabyte long.
        for line in clip_lines(e.problems):
            print(clip_line(f"tuneable-gan: error: {line}"), file=sys.stderr)
        return EXIT_USER
    except BrokenPipeError:  # output piped into `head` and the like
        sys.stderr.close()
        return 0


if __name__ == "__main__":
    sys.exit(main())
