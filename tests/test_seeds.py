"""Seeds: pure functions of integers, one stream per purpose, global generators restored."""

import random

import numpy as np
import pytest
import torch

from exactps.seeds import EvalSeed, SampleSeed, TrainSeed, derive_seed, seeded_global_rng


def test_derive_seed_is_a_pure_function_with_one_stream_per_purpose():
    assert derive_seed(0, TrainSeed.SHARD, 5, 1) == derive_seed(0, 2, 5, 1)
    seeds = {derive_seed(7, p, 3) for p in TrainSeed}
    assert len(seeds) == len(TrainSeed)  # distinct purposes never share a stream
    assert all(0 <= s < 2**63 for s in seeds)
    assert derive_seed(7, 1, 3) != derive_seed(7, 3, 1)
    with pytest.raises(ValueError, match="non-negative"):
        derive_seed(0, -1)


def test_purposes_are_distinct_within_each_table():
    for table in (TrainSeed, SampleSeed, EvalSeed):
        values = [int(p) for p in table]
        assert len(values) == len(set(values)), table


def test_seeded_global_rng_is_reproducible_and_restores_the_global_state():
    torch.manual_seed(1)
    random.seed(1)
    np.random.seed(1)  # noqa: NPY002 (the global generator is what is restored)
    with seeded_global_rng(123):
        a = (torch.rand(2), random.random(), np.random.rand())  # noqa: NPY002
    with seeded_global_rng(123):
        b = (torch.rand(2), random.random(), np.random.rand())  # noqa: NPY002
    assert torch.equal(a[0], b[0]) and a[1:] == b[1:]
    torch.manual_seed(1)
    random.seed(1)
    np.random.seed(1)  # noqa: NPY002
    expected = (torch.rand(2), random.random(), np.random.rand())  # noqa: NPY002
    torch.manual_seed(1)
    random.seed(1)
    np.random.seed(1)  # noqa: NPY002
    with seeded_global_rng(123):
        torch.rand(5)
    after = (torch.rand(2), random.random(), np.random.rand())  # noqa: NPY002
    assert torch.equal(after[0], expected[0]) and after[1:] == expected[1:]
