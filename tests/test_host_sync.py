"""No host synchronisation inside a training step, and the DIG probe only where it is read.

A G iteration that nobody reads (``GANTrainer.train_step`` with ``record_every_step`` off, away
from a log or eval step) must not read a value from the device: every ``Tensor.item``,
``.tolist``, ``.cpu``, ``.numpy``, ``float()``, ``int()``, ``bool()`` and ``index()`` of a
tensor is counted by patching ``torch.Tensor``. On CUDA each of these waits for the stream; on
the CPU they are counted all the same. The one exclusion is Adam's per-parameter ``step``
counter, a host tensor by design (torch keeps it on the CPU for the non-fused Adam so that
reading it does not synchronise; the fused CUDA Adam never reads it). At a read iteration the
values come back in one transfer: exactly one ``tolist``.
"""

from __future__ import annotations

import math

import pytest
import torch

from tuneable_gan.errors import Diverged
from tuneable_gan.trainer import GANTrainer
from tuneable_gan.training_stats import StepStats

READS = ("item", "tolist", "cpu", "numpy", "__float__", "__int__", "__bool__", "__index__")


class ReadCounter:
    """Counts device reads through ``torch.Tensor`` methods, except on the ``ignored``
    tensors; ``calls`` lists (method, caller file:line) of each."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, ignored: list[torch.Tensor]) -> None:
        self.calls: list[str] = []
        self._ignored = {id(t) for t in ignored}
        for name in READS:
            orig = getattr(torch.Tensor, name)
            monkeypatch.setattr(torch.Tensor, name, self._wrap(name, orig))

    def _wrap(self, name, orig):
        import sys

        def counted(t, *args, **kwargs):
            if id(t) not in self._ignored:
                f = sys._getframe(1)
                self.calls.append(f"{name} at {f.f_code.co_filename}:{f.f_lineno}")
            return orig(t, *args, **kwargs)
        return counted


def step_counters(t: GANTrainer) -> list[torch.Tensor]:
    return [s["step"] for opt in (t.opt_g, t.opt_d) for s in opt.state.values()]


def unread_trainer(tiny, **kw) -> GANTrainer:
    """A trainer that reads only log/eval steps (log and eval every 4), one iteration run."""
    t = GANTrainer(tiny(train__log_every=4, train__eval_every=4, train__steps=8, **kw))
    t.record_every_step = False
    t.train_step()  # Adam's state (and its step counters) exist from the first update on
    return t


@pytest.mark.parametrize("kw", [
    {"regularizer__name": "none"},
    {"regularizer__name": "none", "augment__diffaugment": ""},
    {"regularizer__name": "diggan"},
    {"regularizer__name": "r1"},
    {"regularizer__name": "lecam", "regularizer__start": 0},
], ids=["none", "none-noaug", "diggan", "r1", "lecam"])
def test_unread_iterations_read_nothing_from_the_device_and_a_read_one_reads_once(
        tiny, monkeypatch, kw):
    t = unread_trainer(tiny, **kw)
    counter = ReadCounter(monkeypatch, step_counters(t))
    for _ in range(2):  # phase steps 2 and 3 are not logged
        assert set(t.train_step()) == {"step", "images_seen", "sparsity"}
    assert counter.calls == []
    logged = t.train_step()  # step 4: log and eval step
    assert logged["step"] == 4 and {"d_loss", "g_loss", "dig"} <= set(logged)
    assert len(counter.calls) == 1 and counter.calls[0].startswith("tolist"), counter.calls


def test_the_counter_sees_a_read(tiny, monkeypatch):
    """The patching itself works: the pre-change StepStats (``float(v)`` per value) and the
    LeCam anchors as python floats (``.item()``) would each be seen."""
    counter = ReadCounter(monkeypatch, [])
    x = torch.ones(())
    float(x), x.item(), bool(x)
    assert [c.split()[0] for c in counter.calls] == ["__float__", "item", "__bool__"]


def test_unread_iterations_run_no_probe_backward(tiny, monkeypatch):
    """Baseline: the DIG probe's input-gradient backward runs only in read iterations (once,
    on the first D step); DigGAN's own runs on every first D step, as its schedule says."""
    grads = []
    orig = torch.autograd.grad
    monkeypatch.setattr(torch.autograd, "grad", lambda *a, **k: grads.append(1) or orig(*a, **k))
    for reg, unread, read in (("none", 0, 1), ("diggan", 1, 1)):
        t = unread_trainer(tiny, regularizer__name=reg)
        grads.clear()
        t.train_step()  # step 2: not read
        assert len(grads) == unread, reg
        t.train_step()  # step 3: not read
        grads.clear()
        t.train_step()  # step 4: read
        assert len(grads) == read, reg


@pytest.mark.parametrize("reg", ["none", "diggan"])
def test_reading_at_the_log_cadence_changes_no_logged_value_and_no_weight(tiny, reg):
    """Rows at log steps equal those of a run that reads every step, bit for bit, and so do
    the weights: skipping the probe changes no arithmetic of the step."""
    cfg = tiny(regularizer__name=reg, train__log_every=3, train__eval_every=6)
    every, logged = GANTrainer(cfg), GANTrainer(cfg)
    logged.record_every_step = False
    rows_every = [every.train_step() for _ in range(6)]
    rows_logged = [logged.train_step() for _ in range(6)]
    assert [rows_every[i] for i in (2, 5)] == [rows_logged[i] for i in (2, 5)]
    assert "dig" in rows_logged[2] and "dig" not in rows_logged[3]
    for a, b in ((every.G, logged.G), (every.D, logged.D), (every.G_ema, logged.G_ema)):
        for (k, x), y in zip(a.state_dict().items(), b.state_dict().values()):
            assert torch.equal(x, y), k


def test_a_nan_in_an_unread_iteration_is_raised_at_the_next_read_one(tiny):
    t = unread_trainer(tiny, regularizer__name="none")
    with torch.no_grad():
        next(t.D.parameters()).fill_(math.nan)
    assert "d_loss" not in t.train_step()  # step 2 diverges, unread: no error yet
    t.train_step()
    with pytest.raises(Diverged) as e:
        t.train_step()
    assert e.value.step == 4 and math.isnan(e.value.values["d_loss"])


def test_stats_keep_the_finiteness_of_discarded_values():
    s = StepStats()
    s.report("a", torch.tensor(math.inf))
    s.discard()
    s.report("a", torch.tensor(1.0))
    s.report("a", 2.0)
    assert s.collect() == {"a": 1.5} and not s.unread_finite
    s.report("a", torch.tensor(3.0))
    s.discard()
    s.report("a", math.nan)  # a python number in a discarded iteration counts too
    s.discard()
    assert s.collect() == {} and not s.unread_finite
    s.report("a", torch.tensor(3.0, dtype=torch.bfloat16))
    assert s.collect() == {"a": 3.0} and s.unread_finite

