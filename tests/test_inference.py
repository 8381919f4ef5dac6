"""Posterior samples from trained models (:func:`exactps.inference.posterior_samples`): noiseless
inpainting passes ``y`` through, seeds, conditional and unconditional models, input checks.

The models are the ``tiny`` U-Net runs of the ``runs`` fixture (``conftest.py``).
"""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch
from helpers import IMAGE_SHAPE as SHAPE
from helpers import _x0

from exactps.inference import posterior_samples
from exactps.loading import load_model
from exactps.operators import Inpaint, SeparableSR, random_masks


@pytest.mark.parametrize("per_element", [True, False])
def test_noiseless_inpainting_samples_pass_y_through(eps, per_element):
    """EPS at s_y = 0: measured pixels have zero variance in S_t, so every sample equals y there."""
    x0 = _x0(2)
    masks = random_masks(SHAPE, 2 if per_element else 1, 0.5, torch.Generator().manual_seed(3))
    op = Inpaint(masks, SHAPE)
    y = op.measure(x0, 0.0)
    samples = posterior_samples(eps, op, y, 0.0, num_samples=3, nfe=6, generator=0)
    assert samples.shape == (3, 2, *SHAPE)
    observed = op.physics.mask.expand(2, *SHAPE).bool()
    assert (samples - y)[:, observed].abs().max() < 1e-5
    holes = ~observed
    assert (samples[0] - samples[1])[holes].abs().min() > 0  # the unobserved pixels are sampled


def test_noisy_samples_depend_on_the_seed_only(eps):
    op = SeparableSR(SHAPE, 4)
    y = op.measure(_x0(2), 0.1, torch.Generator().manual_seed(1))
    a = posterior_samples(eps, op, y, 0.1, num_samples=2, sampler="dpmpp-2m", nfe=5, generator=1)
    b = posterior_samples(eps, op, y, 0.1, num_samples=2, sampler="dpmpp-2m", nfe=5, generator=1)
    c = posterior_samples(eps, op, y, 0.1, num_samples=2, sampler="dpmpp-2m", nfe=5, generator=2)
    assert torch.equal(a, b) and (a - c).abs().max() > 0.1
    assert (a[0] - a[1]).abs().max() > 0.1  # samples of one measurement differ
    chunked = posterior_samples(eps, op, y, torch.tensor([0.1, 0.2]), 2, "dpmpp-2m", 5, generator=1, batch_size=3)
    assert chunked.shape == (2, 2, *SHAPE) and torch.isfinite(chunked).all()


def test_conditional_and_unconditional_models(runs):
    cond = load_model(runs["conditional"], device="cpu")
    op = Inpaint(random_masks(SHAPE, 2, 0.5, torch.Generator().manual_seed(0)), SHAPE)
    y = op.measure(_x0(2), 0.05, torch.Generator().manual_seed(1))
    a = posterior_samples(cond, op, y, 0.05, num_samples=2, nfe=4, generator=5)
    assert a.shape == (2, 2, *SHAPE) and torch.equal(a, posterior_samples(cond, op, y, 0.05, 2, nfe=4, generator=5))
    assert posterior_samples(cond, None, None, num_samples=2, nfe=4).shape == (2, 1, *SHAPE)
    den = load_model(runs["denoiser"], device="cpu")
    assert den.objective == "denoiser" and den.tasks == ("none",)
    with pytest.raises(ValueError, match="not trained for measurements"):
        posterior_samples(den, op, y, 0.05)
    prior = posterior_samples(den, None, None, num_samples=3, nfe=4, generator=0)
    assert prior.shape == (3, 1, *SHAPE) and torch.isfinite(prior).all()


def test_posterior_samples_checks_its_inputs(eps):
    op = Inpaint(random_masks(SHAPE, 2, 0.5, torch.Generator().manual_seed(0)), SHAPE)
    y = op.measure(_x0(2), 0.05)
    with pytest.raises(ValueError, match="batch size 3"):
        posterior_samples(eps, op, torch.cat([y, y[:1]]), 0.05)
    with pytest.raises(ValueError, match="shape"):
        posterior_samples(eps, SeparableSR(SHAPE, 4), y, 0.05)
    with pytest.raises(ValueError, match="NaN"):
        posterior_samples(eps, op, y.clone().fill_(float("nan")), 0.05)
    with pytest.raises(ValueError, match=">= 0"):
        posterior_samples(eps, op, y, -0.1)
    with pytest.raises(ValueError, match="without an operator"):
        posterior_samples(eps, None, y, 0.05)
    with pytest.raises(ValueError, match="1-channel"):
        posterior_samples(eps, Inpaint(torch.ones(1, 16, 16), (1, 16, 16)), y[:, :1], 0.05)
    with pytest.raises(ValueError, match="num_samples"):
        posterior_samples(eps, op, y, 0.05, num_samples=0)


def test_sampling_does_not_import_the_training_loop():
    """Loading and sampling a model must not pull in exactps.train (a fresh interpreter checks it)."""
    code = "import sys, exactps.inference, exactps.loading; print([m for m in sys.modules if 'exactps.train' in m])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_requests_that_cannot_fit_are_refused_before_allocating(eps):
    """A huge ``num_samples`` is a named error saying what does not fit and what to change, not an
    allocator traceback; ``check_sample_memory`` is a lower bound that lets small requests through."""
    from exactps.inference import SampleMemoryError, check_sample_memory

    op = SeparableSR(SHAPE, 4)
    y = op.measure(_x0(1), 0.1, torch.Generator().manual_seed(1))
    with pytest.raises(SampleMemoryError, match=r"draw fewer samples \(--num-samples"):
        posterior_samples(eps, op, y, 0.1, num_samples=10**9, sampler="ddim", nfe=2, generator=0)
    with pytest.raises(SampleMemoryError, match="can be allocated"):
        posterior_samples(eps, None, None, 0.0, num_samples=10**9, sampler="ddim", nfe=2, generator=0)
    check_sample_memory(eps, 8, None, available=10**9)  # small: fits
    with pytest.raises(SampleMemoryError, match=r"--batch / batch_size, e\.g\. \d+"):
        check_sample_memory(eps, 100_000, None, available=2 * 10**9)
    check_sample_memory(eps, 100_000, 1000, available=2 * 10**9)  # in calls of 1000 images: fits


def test_calls_are_split_to_fit_and_images_of_any_size_are_sampled(eps):
    """``fitting_call_size``: all images at once when they fit, fewer per call otherwise, an error when
    one does not fit; ``posterior_samples`` restores an 18x22 image with the 16x16 model (padded U-Net)."""
    from exactps.inference import SampleMemoryError, fitting_call_size

    shape = (3, 64, 64)
    assert fitting_call_size(eps, 8, shape, available=10**9) == 8
    small = fitting_call_size(eps, 1000, shape, available=2 * 10**8)
    assert 1 <= small < 1000
    check = __import__("exactps.inference", fromlist=["check_sample_memory"]).check_sample_memory
    check(eps, 1000, small, available=2 * 10**8, img_shape=shape)  # the chosen call size fits
    with pytest.raises(SampleMemoryError):
        check(eps, 1000, small + 1, available=2 * 10**8, img_shape=shape)
    with pytest.raises(SampleMemoryError, match="can be allocated"):
        fitting_call_size(eps, 4, (3, 4096, 4096), available=10**8)
    op = Inpaint(random_masks((3, 18, 22), 1, 0.5, torch.Generator().manual_seed(0)), (3, 18, 22))
    x0 = torch.rand(1, 3, 18, 22, generator=torch.Generator().manual_seed(1)) * 2 - 1
    xs = posterior_samples(eps, op, op.measure(x0, 0.0), 0.0, num_samples=2, sampler="ddim", nfe=3, generator=0)
    assert xs.shape == (2, 1, 3, 18, 22) and torch.isfinite(xs).all()
    observed = op.physics.mask[0].bool().expand(3, -1, -1)
    assert torch.allclose(xs[0, 0][observed], x0[0][observed], atol=1e-5)
