"""Values recorded where they are computed, collected once per G iteration that is read.

In the spirit of stylegan2-ada-pytorch's ``torch_utils/training_stats.report``: a term calls
``stats.report("dig", value)`` at the line that computes ``value``; nothing threads metric dicts
through return values. At the end of an iteration the trainer either ``collect``s (the mean of
each name over the reports of that iteration: one D-step value per D step, averaged; a value
reported once is itself) or ``discard``s (an iteration nobody reads); either way the next
iteration starts empty.

Values stay detached tensors on the device until ``collect``, which reads them all in ONE
transfer (the only host synchronisation of a read step). ``discard`` reads nothing: it folds the
iteration's values into a device-side sum whose finiteness ``collect`` reads in that same
transfer, so a NaN or inf between two read iterations is still seen, at the next read one.
"""

from __future__ import annotations

import math

import torch

Tensor = torch.Tensor


class StepStats:
    """The values of one G iteration, by name, in report order."""

    def __init__(self) -> None:
        self._values: dict[str, list[Tensor | float]] = {}
        self._unread: Tensor | None = None  # sum of the discarded values: non-finite iff one was
        self._unread_finite = True          # the same for values reported as python numbers
        # Set by ``collect``: whether every value discarded since the previous one was finite.
        self.unread_finite = True

    def report(self, name: str, value: Tensor | float) -> None:
        """Record one value of ``name`` (a scalar tensor or a number)."""
        if isinstance(value, Tensor):
            value = value.detach()
        self._values.setdefault(name, []).append(value)

    def collect(self) -> dict[str, float]:
        """Mean of each name over this iteration (python floats, summed in report order), then
        empty; sets ``unread_finite``. One device read for everything."""
        tensors = [v for vs in self._values.values() for v in vs if isinstance(v, Tensor)]
        if self._unread is not None:
            tensors.append(self._unread)
        # float64 holds every float32 / bf16 value exactly: the floats are those float(v) gave.
        read = (torch.stack([t.reshape(()).to(torch.float64) for t in tensors]).tolist()
                if tensors else [])
        self.unread_finite = self._unread_finite and (
            self._unread is None or math.isfinite(read[-1]))
        self._unread, self._unread_finite = None, True
        it = iter(read)
        out = {k: sum(next(it) if isinstance(v, Tensor) else float(v) for v in vs) / len(vs)
               for k, vs in self._values.items()}
        self._values = {}
        return out

    def discard(self) -> None:
        """Drop this iteration's values without reading them; keep (on the device) whether they
        were all finite, for the next ``collect``."""
        tensors = [v.reshape(()).float() for vs in self._values.values() for v in vs
                   if isinstance(v, Tensor)]
        self._unread_finite = self._unread_finite and all(
            math.isfinite(v) for vs in self._values.values() for v in vs
            if not isinstance(v, Tensor))
        if tensors:
            # A sum is finite iff every addend is (NaN and inf propagate; finite losses cannot
            # overflow fp32's 3e38): one reduction instead of a flag per name.
            s = torch.stack(tensors).sum()
            self._unread = s if self._unread is None else self._unread + s
        self._values = {}

    def clear(self) -> None:
        """Drop what was recorded (a step that raised)."""
        self._values = {}
