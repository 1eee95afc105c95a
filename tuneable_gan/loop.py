"""The one training loop, shared by ``tuneable-gan train`` and the Ray Tune trainable.

Every cadence lives here, at one level of one flat loop (as in nanoGPT's ``train.py``): after each
G iteration the loop decides which of log, eval and checkpoint fall due (``Events``, counted in
G steps of the current phase, and always at a phase's end) and hands the step to its sinks.
What differs between a command-line run and a Tune trial is only where the numbers and the
checkpoints go, and that is a sink (``Sink``):

* ``cli.RunDirSink``: ``metrics.jsonl`` rows at the log cadence, a progress bar, checkpoints in
  the run directory;
* ``tune.trainable.TuneSink``: one ``tune.report`` per evaluation with the training metrics
  of the logged iterations averaged since the last one, and a ``tune.Checkpoint`` attached
  when one fell due.

A row holds the step's training metrics (recorded by the step's terms where they are computed,
``training_stats``), the phase's description, the measured sparsity and, at an evaluation, the
evaluation's metrics. A NaN or inf stops the loop: each sink is told once (``on_diverged``).

A caller may also ask the loop to stop (``should_stop``, e.g. the command line's Ctrl-C): the
request is read only between complete G iterations, after the sinks ran, so whatever the caller
saves then is the state of a step boundary and a resumed run continues bitwise as if never
stopped.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from tuneable_gan.errors import Diverged
from tuneable_gan.trainer import GANTrainer


@dataclass(frozen=True)
class Events:
    """What falls due after a G iteration."""

    log: bool
    eval: bool
    checkpoint: bool

    @property
    def row(self) -> bool:
        """A row is written when anything is logged (an evaluation is logged too)."""
        return self.log or self.eval


def events(trainer: GANTrainer) -> Events:
    """The cadences of ``train.*`` (all in G steps, restarting in every phase) after the step
    the trainer just ran."""
    tc = trainer.cfg.train
    at = trainer.at_boundary
    return Events(log=at(tc.log_every), eval=at(tc.eval_every),
                  checkpoint=at(tc.checkpoint_every))


class Sink(Protocol):
    """Where a loop's steps, rows and checkpoints go."""

    def on_step(self, trainer: GANTrainer, metrics: dict[str, float],
                row: dict[str, Any] | None, due: Events) -> None:
        """After every G iteration: its metrics, the row (None when nothing is logged) and
        what fell due."""
        ...

    def on_diverged(self, trainer: GANTrainer, error: Diverged) -> None:
        """The step raised ``Diverged``: the loop stops after this call."""
        ...


def never() -> bool:
    """The default ``should_stop``: train to the end."""
    return False


def run(trainer: GANTrainer, sinks: Sequence[Sink],
        should_stop: Callable[[], bool] = never) -> bool:
    """Train until the trainer's schedule is done or ``should_stop()`` (asked before every G
    iteration, so never inside one); False if it diverged, else True (``trainer.finished``
    tells a finished run from a stopped one)."""
    while not trainer.finished and not should_stop():
        try:
            metrics = trainer.train_step()
        except Diverged as e:
            for s in sinks:
                s.on_diverged(trainer, e)
            return False
        due = events(trainer)
        row = None
        if due.row:
            row = {**metrics, **trainer.phase.describe(), "sparsity": trainer.sparsity()}
            if due.eval:
                row.update(trainer.evaluate())
        for s in sinks:
            s.on_step(trainer, metrics, row, due)
    return True
