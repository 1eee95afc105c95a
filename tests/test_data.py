"""Datasets, fraction subsets and the resumable sampler."""

from __future__ import annotations

import numpy as np
import torch

from tuneable_gan.config import DataConfig
from tuneable_gan.data import Sampler, fraction_indices, load_data


def test_digits_train_test_split_and_range():
    train, test = load_data(DataConfig(resolution=16)), load_data(DataConfig(), "test")
    assert len(train) + len(test) == 1797 and len(test) == 359
    assert train.shape == (1, 16, 16) and train.num_classes == 10
    assert train.images.min() >= -1 and train.images.max() <= 1
    assert set(train.labels.tolist()) == set(range(10))


def test_fraction_subset_is_the_reference_recipe():
    n, f = 1438, 0.1
    np.random.seed(0)
    want = np.random.choice(n, int(n * f), replace=False)
    assert np.array_equal(fraction_indices(n, f, 0), want)
    assert len(set(fraction_indices(n, f, 0).tolist())) == 143
    assert not np.array_equal(fraction_indices(n, f, 1), want)
    sub = load_data(DataConfig(fraction=0.1))
    assert len(sub) == int(len(load_data(DataConfig())) * 0.1)


def test_toy2pt_is_the_two_points():
    d = load_data(DataConfig(name="toy2pt"))
    assert d.images.flatten().tolist() == [0.0, 4.0]


def test_sampler_resumes_exactly_and_covers_each_epoch():
    a = Sampler(10, 4, seed=3)
    seq = [a.next() for _ in range(5)]
    assert sorted(torch.cat(seq)[:10].tolist()) == list(range(10))  # first epoch is a permutation
    b = Sampler(10, 4, seed=3)
    b.next(), b.next()
    c = Sampler(10, 4, seed=3)
    c.load_state_dict(b.state_dict())
    assert all(torch.equal(c.next(), s) for s in seq[2:])
