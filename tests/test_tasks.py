"""The task registry: every entry builds its operator, draws what it should, and says what it needs."""

import pytest
import torch

from exactps.baselines import DIFFPIR_ZETA, DPS_ZETA
from exactps.bench import published_settings
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
    with pytest.raises(ValueError, match="needs the kernel"):
        check_task_inputs("deblur", has_mask=False, has_kernel=False)
    with pytest.raises(ValueError, match="a mask only applies to the tasks inpaint-box, inpaint-random, inpaint"):
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
