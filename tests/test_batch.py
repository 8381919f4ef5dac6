"""Per-batch values: broadcast to (B,) and reshaped against images."""

import pytest
import torch

from exactps.batch import as_batch, per_batch


def test_as_batch_takes_scalars_shared_and_per_element_values():
    like = torch.zeros(3, 1, 2, 2, dtype=torch.float64)
    for v in (0.5, torch.tensor(0.5), torch.tensor([0.5])):
        out = as_batch(v, like)
        assert out.shape == (3,) and out.dtype == torch.float64 and bool((out == 0.5).all())
    per_element = torch.tensor([1.0, 2.0, 3.0])
    assert torch.equal(as_batch(per_element, like), per_element.double())
    with pytest.raises(RuntimeError):
        as_batch(torch.tensor([1.0, 2.0]), like)


def test_per_batch_broadcasts_against_images():
    x = torch.ones(2, 3, 4, 5)
    v = per_batch(torch.tensor([1.0, 2.0]), x.ndim)
    assert v.shape == (2, 1, 1, 1) and torch.equal((v * x)[1], torch.full((3, 4, 5), 2.0))
