"""Values recorded where they are computed, collected once per G iteration.

In the spirit of stylegan2-ada-pytorch's ``torch_utils/training_stats.report``: a term calls
``stats.report("dig", value)`` at the line that computes ``value``; nothing threads metric dicts
through return values. ``collect()`` at the end of the iteration gives each name's mean over the
reports of that iteration (one D-step value per D step, averaged; a value reported once is
itself) and starts the next iteration empty.

Values are kept as detached tensors until ``collect``, so a step reads them from the device once.
"""

from __future__ import annotations

import torch


class StepStats:
    """The values of one G iteration, by name, in report order."""

    def __init__(self) -> None:
        self._values: dict[str, list[torch.Tensor | float]] = {}

    def report(self, name: str, value: torch.Tensor | float) -> None:
        """Record one value of ``name`` (a scalar tensor or a number)."""
        if isinstance(value, torch.Tensor):
            value = value.detach()
        self._values.setdefault(name, []).append(value)

    def collect(self) -> dict[str, float]:
        """Mean of each name over this iteration (python floats, summed in report order), then
        empty."""
        out = {k: sum(float(v) for v in vs) / len(vs) for k, vs in self._values.items()}
        self._values = {}
        return out

    def clear(self) -> None:
        """Drop what was recorded (a step that raised)."""
        self._values = {}
