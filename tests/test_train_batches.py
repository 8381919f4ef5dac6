"""Reproducible per-step batches: epochs, loader worker processes, seeded item randomness, plain iterables."""

from __future__ import annotations

import random

import numpy as np
import torch
from helpers import gmm_prior, make_trainer

from exactps.train.batches import StepBatches


def test_step_batches_cover_each_epoch_and_are_reproducible():
    data = torch.arange(10.0).reshape(10, 1, 1, 1)
    source = StepBatches(data, micro_batch=3, n_shards=2, seed=0)
    got = torch.cat([source[(k, j)] for k in range(5) for j in range(2)]).flatten()  # 30 = 3 epochs
    for epoch in range(3):
        assert sorted(got[10 * epoch : 10 * epoch + 10].tolist()) == list(range(10))
    assert torch.equal(source[(3, 1)], StepBatches(data, 3, 2, 0)[(3, 1)])
    assert not torch.equal(got[:10], got[10:20])  # a new permutation every epoch


def test_loader_worker_processes_give_the_same_batches():
    from exactps.data import BuiltinSource

    data = BuiltinSource(8, channels=1)
    serial = make_trainer(batch_size=4, micro_batch=2, num_workers=0)
    parallel = make_trainer(batch_size=4, micro_batch=2, num_workers=2)
    assert serial.data_workers() == 0 and parallel.data_workers() == 2
    assert make_trainer().data_workers() == 0  # default on the CPU
    for a, b in zip(serial.batches(data, 3), parallel.batches(data, 3), strict=True):
        assert len(a) == len(b) == 2 and all(torch.equal(u, v) for u, v in zip(a, b, strict=True))


def test_dataset_item_randomness_is_seeded_and_global_rng_untouched():
    class Flippy(torch.utils.data.Dataset):
        def __len__(self):
            return 4

        def __getitem__(self, i):
            return torch.full((1, 2, 4), float(i)) + torch.rand(()) + random.random() + np.random.rand()  # noqa: NPY002

    torch.manual_seed(123)
    state = torch.get_rng_state()
    a = StepBatches(Flippy(), 2, 1, seed=5)[(1, 0)]
    assert torch.equal(torch.get_rng_state(), state)
    b = StepBatches(Flippy(), 2, 1, seed=5)[(1, 0)]
    assert torch.equal(a, b)


def test_plain_iterable_of_batches():
    prior = gmm_prior()
    batches = [prior.sample(32, torch.Generator().manual_seed(i)) for i in range(3)]
    trainer = make_trainer()
    assert len(trainer.fit(batches, 10)) == 3  # stops when the iterable ends
