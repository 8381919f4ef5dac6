"""The task registry: every entry builds its operator, draws what it should, and says what it needs."""

import math

import numpy as np
import pytest
import torch

from exactps.baselines import DIFFPIR_ZETA, DPS_ZETA, published_settings
from exactps.operators import Blur, Inpaint, LinearOperator, gaussian_kernel
from exactps.tasks import (
    NO_MEASUREMENT,
    STANDARD_TASKS,
    TASKS,
    build_operator,
    check_task_inputs,
    get_task,
    make_task_operator,
    training_tasks,
)

SHAPE = (3, 16, 16)
DRAWN = [n for n in training_tasks() if TASKS[n].measures]


def _op(name: str, seed: int, batch: int = 3, shape=SHAPE) -> LinearOperator:
    op = make_task_operator(name, shape, torch.Generator().manual_seed(seed), batch=batch)
    assert isinstance(op, LinearOperator)
    return op


@pytest.mark.parametrize("name", DRAWN)
def test_every_task_builds_a_working_operator(name):
    op = _op(name, 0)
    assert op.img_shape == SHAPE
    x = torch.randn(3, *SHAPE, generator=torch.Generator().manual_seed(1))
    y = op.measure(x, 0.05, torch.Generator().manual_seed(2))
    assert y.shape == (3, *op.meas_shape) and bool(torch.isfinite(y).all())
    m, noise = op.pivot(x, torch.ones(3), y, torch.full((3,), 0.05))  # what the EPS network sees
    assert m.shape == x.shape and noise.diagonal(torch.sqrt, x).shape == x.shape


@pytest.mark.parametrize("name", DRAWN)
def test_random_tasks_draw_per_element_and_reproducibly(name):
    x = torch.randn(3, *SHAPE, generator=torch.Generator().manual_seed(1))
    a, b, c = _op(name, 0), _op(name, 0), _op(name, 1)
    assert torch.equal(a.A(x), b.A(x))  # the generator decides every draw
    if TASKS[name].random:
        assert a.batch == 3  # one mask / kernel per image
        assert not torch.equal(a.A(x), c.A(x))
    else:
        assert a.batch == 1 and torch.equal(a.A(x), c.A(x))  # fixed: may be cached


def test_none_is_no_measurement():
    assert NO_MEASUREMENT in TASKS and not TASKS[NO_MEASUREMENT].measures
    assert make_task_operator(NO_MEASUREMENT, SHAPE) is None
    assert all(TASKS[n].measures for n in STANDARD_TASKS)


def test_unknown_and_input_only_tasks_say_why():
    with pytest.raises(ValueError, match=r"unknown task 'sr3'.*sr4"):
        make_task_operator("sr3", SHAPE)
    for name, what in (("inpaint", "mask"), ("deblur", "kernel")):
        with pytest.raises(ValueError, match=f"needs the measurement's {what}"):
            make_task_operator(name, SHAPE)
    with pytest.raises(ValueError, match="colorize needs 3-channel"):
        make_task_operator("colorize", (1, 16, 16))
    assert set(training_tasks()) == {n for n, t in TASKS.items() if t.build is not None}


def test_what_a_real_measurement_needs():
    """Random tasks need their mask / kernel for a real measurement, not for a simulation."""
    for task in TASKS.values():
        if task.accepts is None:
            assert not task.needs_input(True) and not task.needs_input(False)
        else:
            assert task.needs_input(False) == (task.random or task.build is None)
            assert task.needs_input(True) == (task.build is None)
    check_task_inputs("inpaint-box", has_mask=False, has_kernel=False, random_ok=True)
    with pytest.raises(ValueError, match="needs the mask"):
        check_task_inputs("inpaint-box", has_mask=False, has_kernel=False, random_ok=False)
    with pytest.raises(ValueError, match="needs the blur kernel"):
        check_task_inputs("deblur", has_mask=False, has_kernel=False)
    with pytest.raises(ValueError, match=r"a mask only applies to the inpainting tasks \(inpaint-box, inpaint-random"):
        check_task_inputs("sr4", has_mask=True, has_kernel=False)
    with pytest.raises(ValueError, match="a kernel only applies"):
        check_task_inputs("inpaint", has_mask=True, has_kernel=True)


def test_build_operator_uses_the_users_mask_or_kernel():
    mask = (torch.rand(1, 1, 16, 16, generator=torch.Generator().manual_seed(0)) > 0.5).float()
    op = build_operator("inpaint", SHAPE, mask=mask)
    assert isinstance(op, Inpaint) and torch.equal(op.physics.mask[:, :1], mask)
    kernel = gaussian_kernel(1.0, 5)
    op = build_operator("deblur-gauss", SHAPE, kernel=kernel)
    assert isinstance(op, Blur) and torch.equal(op.kernels, kernel.reshape(op.kernels.shape))
    assert build_operator(NO_MEASUREMENT, SHAPE) is None


def test_published_keys_name_the_baselines_settings():
    for name, task in TASKS.items():
        if task.published is not None:
            assert task.published in DPS_ZETA
            assert published_settings("diffpir", name)["zeta"] in DIFFPIR_ZETA.values()
    assert published_settings("dps", "sr2-avg") == {}


def test_get_task():
    assert get_task("sr4") is TASKS["sr4"]
    with pytest.raises(ValueError, match="unknown task"):
        get_task(None)  # type: ignore[arg-type]


# -- the paper's task set (BENCHMARK.md section 2), against independent references ------------------------


def _circular_conv(x: np.ndarray, k: np.ndarray) -> np.ndarray:
    """``y[i, j] = sum_uv k[u, v] x[i - u + c, j - v + c]`` (periodic), ``c`` the kernel centre."""
    c = (k.shape[0] - 1) // 2
    y = np.zeros_like(x)
    for u in range(k.shape[0]):
        for v in range(k.shape[1]):
            y += k[u, v] * np.roll(x, (u - c, v - c), axis=(-2, -1))
    return y


def _gaussian(sigma: float, size: int) -> np.ndarray:
    r = np.arange(size) - (size - 1) / 2
    g = np.exp(-0.5 * (r / sigma) ** 2)
    k = np.outer(g, g)
    return k / k.sum()


@pytest.mark.parametrize(("h", "size", "sigma"), [(64, 11, 0.75), (32, 5, 0.375)])
def test_paper_deblur_gauss_is_the_scaled_dps_blur(h, size, sigma):
    op = make_task_operator("paper-deblur-gauss", (3, h, h), dtype=torch.float64)
    assert tuple(op.kernels.shape[-2:]) == (size, size)
    np.testing.assert_allclose(op.kernels[0, 0].double().numpy(), _gaussian(sigma, size), rtol=1e-6, atol=1e-9)
    x = torch.randn(2, 3, h, h, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    want = _circular_conv(x.numpy(), op.kernels[0, 0].double().numpy())
    np.testing.assert_allclose(op.A(x).numpy(), want, rtol=1e-6, atol=1e-6)


def test_paper_sr4_is_4x4_average_pooling():
    op = make_task_operator("paper-sr4", (3, 32, 32), dtype=torch.float64)
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    want = x.numpy().reshape(2, 3, 8, 4, 8, 4).mean(axis=(3, 5))
    np.testing.assert_allclose(op.A(x).numpy(), want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("h", [64, 32])
def test_paper_inpaint_box_draws_one_box_of_the_stated_sides(h):
    op = make_task_operator("paper-inpaint-box", (3, h, h), torch.Generator().manual_seed(0), batch=64)
    masks = op.physics.mask
    assert torch.equal(masks[:, :1].expand_as(masks), masks)  # one mask for all channels
    sides = set()
    for m in masks[:, 0]:
        rows, cols = torch.nonzero(m == 0, as_tuple=True)
        top, bottom, left, right = int(rows.min()), int(rows.max()), int(cols.min()), int(cols.max())
        bh, bw = bottom - top + 1, right - left + 1
        assert int((m == 0).sum()) == bh * bw  # a single filled rectangle
        assert h // 4 <= bh <= h // 2 and h // 4 <= bw <= h // 2
        assert min(top, left, h - 1 - bottom, h - 1 - right) >= h // 16
        sides.add((bh, bw))
    assert len(sides) > 10  # the sides are drawn, not fixed
    x = torch.randn(64, 3, h, h, generator=torch.Generator().manual_seed(1))
    assert torch.equal(op.A(x), x * masks)


def test_paper_inpaint_random_drops_70_percent_per_image():
    op = make_task_operator("paper-inpaint-random", (3, 64, 64), torch.Generator().manual_seed(0), batch=8)
    masks = op.physics.mask
    assert torch.equal(masks[:, :1].expand_as(masks), masks) and not torch.equal(masks[0], masks[1])
    missing = 1 - masks[:, 0].mean(dim=(-2, -1))
    assert bool(((missing - 0.7).abs() < 4 * math.sqrt(0.21 / 4096)).all())  # 4 binomial standard errors


@pytest.mark.parametrize(("h", "lengths"), [(64, range(7, 16)), (32, range(4, 9))])
def test_paper_deblur_motion_draws_centred_lines(h, lengths):
    op = make_task_operator("paper-deblur-motion", (3, h, h), torch.Generator().manual_seed(0), batch=48)
    k = op.kernels[:, 0].double()
    side = max(lengths) if max(lengths) % 2 else max(lengths) + 1  # the smallest odd size that holds them
    assert tuple(k.shape[-2:]) == (side, side)
    torch.testing.assert_close(k.sum(dim=(-2, -1)), torch.ones(48, dtype=torch.float64))
    assert bool((k >= 0).all())
    torch.testing.assert_close(k, k.flip(-1, -2))  # centred segments: point symmetric
    size = k.shape[-1]
    r = torch.arange(size, dtype=torch.float64) - (size - 1) / 2
    yy, xx = torch.meshgrid(r, r, indexing="ij")
    angles, extents = [], []
    for ki in k:  # the principal axis of the kernel's mass: the line's direction and length
        cov = torch.stack([torch.stack([(ki * yy * yy).sum(), (ki * yy * xx).sum()]),
                           torch.stack([(ki * xx * yy).sum(), (ki * xx * xx).sum()])])  # fmt: skip
        evals, evecs = torch.linalg.eigh(cov)
        extents.append(math.sqrt(12 * float(evals[1])))  # a uniform segment of length L has variance L^2/12
        angles.append(math.degrees(math.atan2(-float(evecs[0, 1]), float(evecs[1, 1]))) % 180)
    assert all(min(lengths) - 1.5 <= e <= max(lengths) + 0.5 for e in extents)
    assert max(angles) - min(angles) > 120  # angles spread over [0, 180)
    x = torch.randn(2, 3, h, h, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    op64 = op.select(0).to_dtype(torch.float64)
    want = _circular_conv(x.numpy(), op64.kernels[0, 0].double().numpy())
    np.testing.assert_allclose(op64.A(x).numpy(), want, rtol=1e-6, atol=1e-6)


def test_scale_factor_is_the_image_to_measurement_ratio():
    for name, task in TASKS.items():
        if task.build is None or not task.measures:
            continue
        op = task.build((3, 16, 16), torch.Generator().manual_seed(0), torch.float32, 1)
        assert op.meas_shape[-1] * task.scale_factor == 16, name
