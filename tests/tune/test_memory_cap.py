"""A trial given a fraction of a GPU caps its CUDA memory at that fraction (mocked CUDA: no GPU
here); a whole GPU, no GPU or a CPU trial sets no cap."""

from __future__ import annotations

from pathlib import Path
from unittest import mock

import pytest
import torch
import yaml
from conftest import TINY

from tuneable_gan.device import cap_memory
from tuneable_gan.tune import trainable
from tuneable_gan.tune.space import load_space
from tuneable_gan.tune.trainable import TrialContext, train_gan


class Built(Exception):
    """Raised by the stand-in GANTrainer: the trial got as far as building its trainer."""


def context(tmp_path: Path, gpu: float | None, device: str = "auto") -> TrialContext:
    resources = {"cpu": 1} | ({} if gpu is None else {"gpu": gpu})
    doc = {"name": "cap", "base": TINY | {"train.device": device},
           "space": {"regularizer.weight": {"grid": [1.0]}},
           "tune": {"search": "grid", "scheduler": "fifo", "resources": resources,
                    "storage": str(tmp_path / "results")}}
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(doc))
    return TrialContext.of(load_space(tmp_path / "s.yaml"))


def run_trial(ctx: TrialContext, gpu_ids: list[int]) -> tuple[mock.Mock, list[str]]:
    """train_gan up to its trainer on a machine that seems to have CUDA and ``gpu_ids`` from
    Ray; returns the set_per_process_memory_fraction mock and the order of the calls."""
    order: list[str] = []
    cap = mock.Mock(side_effect=lambda *a: order.append("cap"))

    def build(cfg: object, device: str, tickets: str) -> None:
        order.append(f"trainer:{device}")
        raise Built

    with mock.patch.object(trainable.ray, "get_gpu_ids", return_value=gpu_ids), \
            mock.patch.object(torch.cuda, "is_available", return_value=True), \
            mock.patch.object(torch.cuda, "set_per_process_memory_fraction", cap), \
            mock.patch.object(trainable, "GANTrainer", side_effect=build), \
            pytest.raises(Built):
        train_gan({"regularizer.weight": 1.0}, ctx)
    return cap, order


@pytest.mark.parametrize("gpu", [0.25, 0.5, 0.125])
def test_a_fractional_gpu_trial_caps_its_memory_at_its_share_before_building(tmp_path, gpu):
    ctx = context(tmp_path, gpu)
    assert ctx.gpu == gpu
    cap, order = run_trial(ctx, gpu_ids=[0])
    cap.assert_called_once_with(gpu, torch.device("cuda:0"))
    assert order == ["cap", "trainer:cuda:0"]


@pytest.mark.parametrize("gpu, gpu_ids, device", [
    (1, [0], "auto"),         # a whole GPU is the trial's own
    (2, [0, 1], "auto"),
    (None, [], "auto"),       # no GPU asked: Ray gives no id, the trial runs on the CPU
    (0.25, [0], "cpu"),       # train.device=cpu: never on the GPU, so nothing to cap
])
def test_no_cap_for_whole_gpus_or_cpu_trials(tmp_path, gpu, gpu_ids, device):
    cap, order = run_trial(context(tmp_path, gpu, device), gpu_ids)
    cap.assert_not_called()
    assert len(order) == 1 and order[0].startswith("trainer:")


def test_cap_memory_sets_exactly_the_fraction_on_cuda_only():
    with mock.patch.object(torch.cuda, "set_per_process_memory_fraction") as cap:
        assert cap_memory("cuda:1", 0.25) == 0.25
        cap.assert_called_once_with(0.25, torch.device("cuda:1"))
        cap.reset_mock()
        for device, gpu in (("cpu", 0.25), ("cuda:0", 1.0), ("cuda:0", 0.0), ("cuda:0", 3.0)):
            assert cap_memory(device, gpu) is None
        cap.assert_not_called()
