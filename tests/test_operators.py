"""The measurement operators against independent references (float64).

Every operator is checked for adjointness, against a reference implementation of ``A`` that
does not go through its SVD (masks, ``avg_pool2d``, deepinv's ``Downsampling``, circular
convolution by rolls, channel weights, orthonormal rows), for the structure of its SVD
``A = U diag(k) V^T``, for per-batch selection, for input validation and for the random
mask and kernel generators.
"""

import functools
import math

import deepinv as dinv
import pytest
import torch
import torch.nn.functional as F

from exactps.operators import (
    AvgPoolSR,
    Blur,
    Colorize,
    Denoise,
    Inpaint,
    MatrixFreeOperator,
    OrthogonalCS,
    SeparableSR,
    SpectralOperator,
    box_masks,
    from_physics,
    gaussian_kernel,
    motion_kernels,
    random_masks,
)
from exactps.priors import dense_matrix

F64 = torch.float64
C3, C1 = (3, 8, 8), (1, 8, 8)


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return ((a - b).norm() / b.norm()).item()


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@functools.cache
def _inputs():
    """Masks and kernels shared by the operator cases (built once; fixed seeds)."""
    return {
        "mask1": random_masks(C3, 1, 0.4, _gen(1)).to(F64),
        "masks3": random_masks(C3, 3, 0.5, _gen(2), per_channel=True).to(F64),
        "motion3": motion_kernels(3, 5, _gen(3)).to(F64),
        "gauss2": torch.cat([gaussian_kernel(0.6, 5), gaussian_kernel(0.8, 5)]).to(F64),
        "chan2": torch.rand(2, 3, 3, 4, generator=_gen(4), dtype=F64),
    }


def _make(name: str) -> SpectralOperator:
    i = _inputs()
    if name == "denoise":
        return Denoise(C3, F64)
    if name == "inpaint":
        return Inpaint(i["mask1"], C3)
    if name == "inpaint-batch":
        return Inpaint(i["masks3"], C3)
    if name == "avgpool":
        return AvgPoolSR(C3, 2, F64)
    if name == "bicubic":
        return SeparableSR(C1, 2, dtype=F64)
    if name == "bilinear-rect":
        return SeparableSR((2, 8, 12), 4, filter="bilinear", dtype=F64)
    if name == "blur-gauss":
        return Blur(gaussian_kernel(0.7).to(F64), C3)
    if name == "blur-motion-batch":
        return Blur(i["motion3"], C3)
    if name == "blur-gauss-batch":
        return Blur(i["gauss2"], C1)
    if name == "blur-per-channel-batch":
        return Blur(i["chan2"], C3)
    if name == "colorize":
        return Colorize(C3, dtype=F64)
    if name == "cs":
        return OrthogonalCS(C1, 20, _gen(5), F64)
    if name == "from-physics-inpainting":
        return from_physics(dinv.physics.Inpainting(img_size=C3, mask=i["mask1"][0]), C3)
    raise KeyError(name)


NAMES = [
    "denoise",
    "inpaint",
    "inpaint-batch",
    "avgpool",
    "bicubic",
    "bilinear-rect",
    "blur-gauss",
    "blur-motion-batch",
    "blur-gauss-batch",
    "blur-per-channel-batch",
    "colorize",
    "cs",
    "from-physics-inpainting",
]
THIN = {"avgpool", "bicubic", "bilinear-rect", "colorize", "cs"}


@pytest.fixture(params=NAMES)
def case(request):
    return request.param, _make(request.param)


def _batch(op) -> int:
    return op.batch if op.batch > 1 else 2


def _x(op, seed: int = 0) -> torch.Tensor:
    return torch.randn(_batch(op), *op.img_shape, generator=_gen(seed), dtype=F64)


def _y(op, seed: int = 1) -> torch.Tensor:
    return torch.randn(_batch(op), *op.meas_shape, generator=_gen(seed), dtype=F64)


def _dot(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    return (u * v).flatten(1).sum(1)


# -- adjointness and SVD structure ----------------------------------------------------------------


def test_adjoint(case):
    _, op = case
    x, y = _x(op), _y(op)
    lhs, rhs = _dot(op.A(x), y), _dot(x, op.At(y))
    assert op.A(x).dtype == F64 and op.At(y).shape == x.shape
    assert (lhs - rhs).abs().max() < 1e-12 * (op.A(x).norm() * y.norm())


def test_svd_reproduces_operator(case):
    """``U diag(k) V^T = A`` and ``V diag(k^2) V^T = A^T A``, with ``k = singular_values >= 0``."""
    _, op = case
    x = _x(op)
    c = op.Vt(x)
    k = op.singular_values(c.ndim)
    assert (k >= 0).all()
    assert _rel(op.physics.U(k * c), op.A(x)) < 1e-12
    assert _rel(op.V(k**2 * c), op.At(op.A(x))) < 1e-12


def test_basis_is_orthonormal(case):
    """Full basis: ``V V^T = I``. Thin basis: ``V^T V = I`` on coefficients, ``V V^T`` an
    orthogonal projector whose range contains ``range(A^T)``."""
    name, op = case
    assert op.full_basis == (name not in THIN)
    x, z = _x(op, 0), _x(op, 7)
    if op.full_basis:
        assert _rel(op.V(op.Vt(x)), x) < 1e-12
        return
    coef = torch.randn(op.Vt(x).shape, generator=_gen(3), dtype=F64)
    assert _rel(op.Vt(op.V(coef)), coef) < 1e-12
    assert abs(_dot(op.V(coef), x) - _dot(coef, op.Vt(x))).max() < 1e-12 * coef.norm() * x.norm()
    proj = op.V(op.Vt(x))
    assert _rel(op.V(op.Vt(proj)), proj) < 1e-12
    assert abs(_dot(proj, z) - _dot(x, op.V(op.Vt(z)))).max() < 1e-12 * x.norm() * z.norm()
    aty = op.At(_y(op))
    assert _rel(op.V(op.Vt(aty)), aty) < 1e-12
    assert _rel(proj, x) > 0.1  # a thin basis really drops directions


def test_svd_matches_dense_singular_values(case):
    """The nonzero singular values of the dense matrix equal those of the closed form."""
    _, op = case
    for b in range(op.batch):
        sub = op.select(b)
        a = dense_matrix(sub)
        dense_sv = torch.linalg.svdvals(a)
        # A^T A = V diag(k^2) V^T: its eigenvalues, read off through the closed form, must agree
        d = math.prod(op.img_shape)
        eye = torch.eye(d, dtype=F64).reshape(d, *op.img_shape)
        c = sub.Vt(eye)
        ata = sub.V(sub.singular_values(c.ndim) ** 2 * c).reshape(d, d)
        eig = torch.linalg.eigvalsh(ata).flip(0)[: dense_sv.numel()].clamp_min(0).sqrt()
        torch.testing.assert_close(eig, dense_sv, rtol=1e-10, atol=1e-10)


# -- the forward operators against independent references ----------------------------------------


def _circular_conv(x: torch.Tensor, k: torch.Tensor) -> torch.Tensor:
    """``y[i] = sum_u k[u] x[i - u + c]`` with ``c = size // 2`` (kernel centred on the pixel)."""
    h, w = k.shape[-2:]
    out = torch.zeros_like(x)
    for u in range(h):
        for v in range(w):
            out = out + k[..., u, v, None, None] * torch.roll(
                x, shifts=(u - h // 2, v - w // 2), dims=(-2, -1)
            )
    return out


def _rec601():
    return torch.tensor([0.299, 0.587, 0.114], dtype=F64)


def test_denoise_is_identity():
    op = Denoise(C3, F64)
    x = _x(op)
    assert torch.equal(op.A(x), x) and torch.equal(op.At(x), x)


@pytest.mark.parametrize("name", ["inpaint", "inpaint-batch"])
def test_inpaint_multiplies_by_mask(name):
    op = _make(name)
    masks = _inputs()["mask1" if name == "inpaint" else "masks3"]
    x = _x(op)
    torch.testing.assert_close(op.A(x), masks * x, rtol=0, atol=0)


def test_inpaint_broadcasts_single_channel_mask_over_channels():
    mask = random_masks(C3, 2, 0.5, _gen(11)).to(F64)  # (2, 1, H, W)
    op = Inpaint(mask, C3)
    x = torch.randn(2, *C3, generator=_gen(12), dtype=F64)
    assert op.batch == 2
    torch.testing.assert_close(op.A(x), mask.expand_as(x) * x, rtol=0, atol=0)


@pytest.mark.parametrize("factor", [2, 4])
def test_avgpool_matches_avg_pool2d(factor):
    shape = (3, 8, 12)
    op = AvgPoolSR(shape, factor, F64)
    x = torch.randn(2, *shape, generator=_gen(13), dtype=F64)
    torch.testing.assert_close(op.A(x), F.avg_pool2d(x, factor), rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize(
    ("shape", "factor", "filt"),
    [
        ((3, 8, 8), 2, "bicubic"),
        ((1, 8, 12), 2, "bicubic"),
        ((2, 8, 8), 4, "bicubic"),
        ((3, 8, 12), 4, "bilinear"),
    ],
)
def test_separable_sr_matches_deepinv_downsampling(shape, factor, filt):
    op = SeparableSR(shape, factor, filter=filt, dtype=F64)
    ref = dinv.physics.Downsampling(img_size=(1, *shape[1:]), filter=filt, factor=factor, padding="circular")
    ref.filter = ref.filter.to(F64)
    x = torch.randn(2, *shape, generator=_gen(14), dtype=F64)
    expected = torch.cat([ref.A(x[:, c : c + 1]) for c in range(shape[0])], dim=1)
    assert op.meas_shape == (shape[0], shape[1] // factor, shape[2] // factor)
    assert _rel(op.A(x), expected) < 1e-12
    y = torch.randn(2, *op.meas_shape, generator=_gen(15), dtype=F64)
    expected_t = torch.cat([ref.A_adjoint(y[:, c : c + 1]) for c in range(shape[0])], dim=1)
    assert _rel(op.At(y), expected_t) < 1e-12


def test_separable_sr_float32_is_close_to_float64():
    x = torch.randn(2, *C3, generator=_gen(16), dtype=F64)
    y64 = SeparableSR(C3, 2, dtype=F64).A(x)
    y32 = SeparableSR(C3, 2).A(x.float())
    assert y32.dtype == torch.float32
    assert _rel(y32.double(), y64) < 1e-5


@pytest.mark.parametrize(
    "name", ["blur-gauss", "blur-motion-batch", "blur-gauss-batch", "blur-per-channel-batch"]
)
def test_blur_is_circular_convolution(name):
    op = _make(name)
    x = _x(op)
    kernels = {
        "blur-gauss": gaussian_kernel(0.7).to(F64),
        "blur-motion-batch": _inputs()["motion3"],
        "blur-gauss-batch": _inputs()["gauss2"],
        "blur-per-channel-batch": _inputs()["chan2"],
    }[name]
    assert _rel(op.A(x), _circular_conv(x, kernels)) < 1e-12


@pytest.mark.parametrize("ksize", [(2, 2), (4, 3), (8, 8)])
def test_blur_even_and_full_size_kernels(ksize):
    k = torch.rand(1, 1, *ksize, generator=_gen(17), dtype=F64)
    op = Blur(k, C1)
    x = torch.randn(2, *C1, generator=_gen(18), dtype=F64)
    assert _rel(op.A(x), _circular_conv(x, k)) < 1e-12


def test_colorize_is_channel_weighted_sum():
    op = Colorize(C3, dtype=F64)
    x = _x(op)
    # the weights, read off the operator, are Rec. 601 luma weights (4 significant digits)
    w = torch.stack(
        [op.A(torch.eye(3, dtype=F64)[c].reshape(1, 3, 1, 1).expand(1, *C3))[0, 0, 0, 0] for c in range(3)]
    )
    torch.testing.assert_close(w, _rec601(), rtol=0, atol=2e-4)
    expected = (w.reshape(1, 3, 1, 1) * x).sum(1, keepdim=True)
    assert op.meas_shape == (1, 8, 8)
    assert _rel(op.A(x), expected) < 1e-13


def test_orthogonal_cs_has_orthonormal_rows_and_is_seeded():
    op = _make("cs")
    a = dense_matrix(op)
    assert a.shape == (20, math.prod(C1))
    torch.testing.assert_close(a @ a.T, torch.eye(20, dtype=F64), rtol=0, atol=1e-13)
    same = OrthogonalCS(C1, 20, _gen(5), F64)
    other = OrthogonalCS(C1, 20, _gen(6), F64)
    assert torch.equal(dense_matrix(same), a)
    assert (dense_matrix(other) - a).abs().max() > 0.1


def test_from_physics_dispatches():
    inp = from_physics(dinv.physics.Inpainting(img_size=C3, mask=_inputs()["mask1"][0]), C3)
    assert isinstance(inp, SpectralOperator) and inp.full_basis
    dec = from_physics(dinv.physics.Decolorize(channels=3), C3)
    assert isinstance(dec, SpectralOperator) and not dec.full_basis
    cs = dinv.physics.CompressedSensing(m=10, img_size=(1, 4, 4), dtype=F64, rng=_gen(19))
    mf = from_physics(cs, (1, 4, 4))
    assert isinstance(mf, MatrixFreeOperator) and mf.meas_shape == (10,)
    x = torch.randn(3, 1, 4, 4, generator=_gen(20), dtype=F64)
    torch.testing.assert_close(mf.A(x), x.flatten(1) @ cs._A.T, rtol=1e-13, atol=1e-13)


def test_to_dtype_converts_buffers():
    op = _make("blur-motion-batch")
    op32 = op.to_dtype(torch.float32)
    assert op32._dtype() == torch.float32 and op32.batch == op.batch
    x = _x(op)
    assert _rel(op32.A(x.float()).double(), op.A(x)) < 1e-5
    with pytest.raises(TypeError, match="x"):
        op32.check_image(x)


# -- per-batch operators ----------------------------------------------------------------------


@pytest.mark.parametrize(
    "name", ["inpaint-batch", "blur-motion-batch", "blur-gauss-batch", "blur-per-channel-batch"]
)
def test_select_matches_batched_operator(name):
    op = _make(name)
    x, y = _x(op), _y(op)
    assert op.batch == x.shape[0] > 1
    for b in range(op.batch):
        sub = op.select(b)
        assert sub.batch == 1
        torch.testing.assert_close(sub.A(x[b : b + 1]), op.A(x)[b : b + 1], rtol=1e-13, atol=1e-13)
        torch.testing.assert_close(sub.At(y[b : b + 1]), op.At(y)[b : b + 1], rtol=1e-13, atol=1e-13)
    # the elements really differ
    assert _rel(dense_matrix(op.select(0)), dense_matrix(op.select(1))) > 1e-3


def test_shared_operator_select_is_itself():
    op = _make("avgpool")
    assert op.batch == 1 and op.select(3) is op


# -- input validation -------------------------------------------------------------------------


def test_inpaint_rejects_bad_masks():
    with pytest.raises(ValueError, match="mask"):
        Inpaint(torch.ones(1, 1, 8, 7), C3)
    with pytest.raises(ValueError, match="mask"):
        Inpaint(torch.ones(1, 2, 8, 8), C3)
    with pytest.raises(ValueError, match="mask"):
        Inpaint(torch.full((8, 8), 0.5), C3)
    with pytest.raises(TypeError, match="mask"):
        Inpaint([[1.0]], C3)
    with pytest.raises(ValueError, match="img_shape"):
        Inpaint(torch.ones(8, 8), (8, 8))


def test_blur_rejects_bad_kernels():
    with pytest.raises(ValueError, match="kernel"):
        Blur(torch.ones(1, 1, 9, 3), C1)
    with pytest.raises(ValueError, match="kernel"):
        Blur(torch.ones(1, 2, 3, 3), C3)
    with pytest.raises(TypeError, match="kernels"):
        Blur(None, C3)


@pytest.mark.parametrize("cls", [AvgPoolSR, SeparableSR])
def test_sr_rejects_factor_not_dividing_size(cls):
    with pytest.raises(ValueError, match="factor"):
        cls((1, 8, 8), 3)
    with pytest.raises(ValueError, match="factor"):
        cls((1, 8, 6), 4)
    with pytest.raises(ValueError, match="factor"):
        cls((1, 8, 8), 0)


def test_separable_sr_rejects_filter_larger_than_image():
    with pytest.raises(ValueError, match="filter"):
        SeparableSR((1, 4, 4), 2, filter="gaussian")


def test_other_constructors_validate():
    with pytest.raises(ValueError, match="img_shape"):
        Colorize((1, 8, 8))
    with pytest.raises(ValueError, match="m must"):
        OrthogonalCS(C1, 0)
    with pytest.raises(ValueError, match="m must"):
        OrthogonalCS(C1, 65)
    with pytest.raises(ValueError, match="img_shape"):
        Denoise((0, 8, 8))
    with pytest.raises(TypeError, match="DecomposablePhysics"):
        SpectralOperator(dinv.physics.CompressedSensing(m=4, img_size=(1, 4, 4)), (1, 4, 4), full_basis=False)


@pytest.mark.parametrize("name", ["avgpool", "inpaint-batch", "cs"])
def test_check_image_and_measurement(name):
    op = _make(name)
    x, y = _x(op), _y(op)
    op.check_image(x)
    op.check_measurement(y)
    if op.batch == 1:
        op.check_image(x[:1])
    else:
        with pytest.raises(ValueError, match="x"):
            op.check_image(x[:1])
    with pytest.raises(ValueError, match="x_t"):
        op.check_image(x[..., :-1], "x_t")
    with pytest.raises(ValueError, match="x"):
        op.check_image(x[0])
    with pytest.raises(ValueError, match="y"):
        op.check_measurement(x if x.shape != y.shape else x[..., :-1])
    with pytest.raises(TypeError, match="x"):
        op.check_image(x.float())
    with pytest.raises(TypeError, match="x"):
        op.check_image(x.to(torch.int64))
    with pytest.raises(TypeError, match="y"):
        op.check_measurement(y.numpy())
    bad = y.clone()
    bad.view(-1)[3] = float("nan")
    with pytest.raises(ValueError, match="y"):
        op.check_measurement(bad)
    bad = x.clone()
    bad.view(-1)[0] = float("inf")
    with pytest.raises(ValueError, match="x"):
        op.check_image(bad)


@pytest.mark.parametrize("name", ["inpaint-batch", "blur-motion-batch"])
def test_wrong_batch_size_for_per_batch_operator(name):
    op = _make(name)
    x = torch.randn(op.batch + 1, *op.img_shape, dtype=F64)
    with pytest.raises(ValueError, match="x_t"):
        op.check_image(x, "x_t")
    y = torch.randn(op.batch + 1, *op.meas_shape, dtype=F64)
    with pytest.raises(ValueError, match="y"):
        op.check_measurement(y)


def test_matrix_free_declared_dtype_is_checked():
    m = torch.randn(5, 16, generator=_gen(21), dtype=F64)
    physics = dinv.physics.LinearPhysics(
        A=lambda x: x.flatten(1) @ m.T, A_adjoint=lambda y: (y @ m).reshape(-1, 1, 4, 4)
    )
    op = MatrixFreeOperator(physics, (1, 4, 4), dtype=F64)
    assert op.meas_shape == (5,)
    op.check_image(torch.zeros(2, 1, 4, 4, dtype=F64))
    with pytest.raises(TypeError, match="x"):
        op.check_image(torch.zeros(2, 1, 4, 4))


# -- generators -------------------------------------------------------------------------------


@pytest.mark.parametrize("p_missing", [0.0, 0.3, 0.9])
@pytest.mark.parametrize("per_channel", [False, True])
def test_random_masks_missing_fraction(p_missing, per_channel):
    shape, batch = (3, 32, 32), 8
    masks = random_masks(shape, batch, p_missing, _gen(30), per_channel=per_channel)
    assert masks.shape == (batch, 3 if per_channel else 1, 32, 32)
    assert torch.all((masks == 0) | (masks == 1))
    n = masks.numel()
    missing = 1.0 - masks.mean().item()
    assert abs(missing - p_missing) <= 5 * math.sqrt(p_missing * (1 - p_missing) / n) + 1e-12
    # each element gets its own mask, and the same seed gives the same masks
    if p_missing > 0:
        assert not torch.equal(masks[0], masks[1])
    assert torch.equal(masks, random_masks(shape, batch, p_missing, _gen(30), per_channel=per_channel))


@pytest.mark.parametrize(("box", "margin"), [((3, 5), 0), ((4, 4), 2), ((12, 16), 0), ((1, 1), 3)])
def test_box_masks_have_one_box(box, margin):
    shape, batch = (3, 12, 16), 32
    masks = box_masks(shape, batch, box, _gen(31), margin=margin)
    assert masks.shape == (batch, 1, 12, 16)
    assert torch.all((masks == 0) | (masks == 1))
    tops = set()
    for i in range(batch):
        rows, cols = torch.nonzero(masks[i, 0] == 0, as_tuple=True)
        assert rows.numel() == box[0] * box[1]
        top, left = rows.min().item(), cols.min().item()
        assert rows.max().item() - top + 1 == box[0] and cols.max().item() - left + 1 == box[1]
        assert top >= margin and left >= margin
        assert top + box[0] <= 12 - margin and left + box[1] <= 16 - margin
        tops.add((top, left))
    n_positions = (12 - 2 * margin - box[0] + 1) * (16 - 2 * margin - box[1] + 1)
    assert len(tops) > 1 or n_positions == 1


@pytest.mark.parametrize(("sigma", "size"), [(0.5, None), (1.0, None), (2.0, 7), (1.3, 4)])
def test_gaussian_kernel(sigma, size):
    k = gaussian_kernel(sigma, size)
    expected_size = size if size is not None else 2 * math.ceil(3 * sigma) + 1
    assert k.shape == (1, 1, expected_size, expected_size)
    assert (k >= 0).all()
    assert abs(k.sum().item() - 1) < 1e-6
    torch.testing.assert_close(k, k.flip(-1))
    torch.testing.assert_close(k, k.transpose(-1, -2))
    if expected_size % 2:  # ratio of neighbours in the centre row: exp(-1 / (2 sigma^2))
        c = expected_size // 2
        ratio = (k[0, 0, c, c + 1] / k[0, 0, c, c]).item()
        assert abs(ratio - math.exp(-0.5 / sigma**2)) < 1e-6


def test_motion_kernels():
    k = motion_kernels(6, 9, _gen(32))
    assert k.shape == (6, 1, 9, 9)
    assert torch.isfinite(k).all() and (k >= 0).all()
    torch.testing.assert_close(k.sum(dim=(-2, -1)), torch.ones(6, 1))
    assert not torch.allclose(k[0], k[1])
    assert torch.equal(k, motion_kernels(6, 9, _gen(32)))


def test_generators_validate():
    with pytest.raises(ValueError, match="p_missing"):
        random_masks(C3, 2, -0.1)
    with pytest.raises(ValueError, match="p_missing"):
        random_masks(C3, 2, 1.0)
    with pytest.raises(ValueError, match="batch"):
        random_masks(C3, 0, 0.5)
    with pytest.raises(ValueError, match="img_shape"):
        random_masks((8, 8), 2, 0.5)
    with pytest.raises(ValueError, match="box"):
        box_masks(C3, 2, (9, 2))
    with pytest.raises(ValueError, match="box"):
        box_masks(C3, 2, (4, 4), margin=3)
    with pytest.raises(ValueError, match="box"):
        box_masks(C3, 2, (0, 4))
    with pytest.raises(ValueError, match="margin"):
        box_masks(C3, 2, (4, 4), margin=-1)
    with pytest.raises(ValueError, match="batch"):
        box_masks(C3, 0, (4, 4))
    with pytest.raises(ValueError, match="sigma"):
        gaussian_kernel(0.0)
    with pytest.raises(ValueError, match="sigma"):
        gaussian_kernel(-1.0)
    with pytest.raises(ValueError, match="size"):
        gaussian_kernel(1.0, 0)
    with pytest.raises(ValueError, match="batch"):
        motion_kernels(0, 5)
    with pytest.raises(ValueError, match="size"):
        motion_kernels(2, 0)


def _make_any(name: str):
    """The cases of :func:`_make`, and the dense and matrix-free operator classes."""
    if name == "dense":
        from exactps.operators import DenseOperator

        return DenseOperator(torch.randn(5, 16, generator=_gen(22), dtype=F64), (1, 4, 4))
    if name == "matrix-free":
        m = torch.randn(5, 16, generator=_gen(21), dtype=F64)
        physics = dinv.physics.LinearPhysics(
            A=lambda x: x.flatten(1) @ m.T, A_adjoint=lambda y: (y @ m).reshape(-1, 1, 4, 4)
        )
        return MatrixFreeOperator(physics, (1, 4, 4), dtype=F64)
    return _make(name)


@pytest.mark.parametrize("name", [*NAMES, "dense", "matrix-free"])
def test_measure_rejects_wrong_inputs(name):
    """``measure`` checks ``x`` and ``s_y`` at the door: a wrong channel count, size or batch and a
    negative / NaN / infinite ``s_y`` are named errors, not silently wrong shapes or deepinv errors."""
    op = _make_any(name)
    c, h, w = op.img_shape
    b = op.batch
    good = torch.rand(b, c, h, w, generator=_gen(7), dtype=F64)
    assert op.measure(good, 0.1, _gen(8)).shape == (b, *op.meas_shape)
    wrong = {
        "channels": torch.rand(b, 2 if c != 2 else 3, h, w, dtype=F64),
        "size": torch.rand(b, c, h + 1, w, dtype=F64),
        "ndim": torch.rand(c, h, w, dtype=F64),
        "batch": torch.rand(b + 1, c, h, w, dtype=F64) if b > 1 else None,
    }
    for what, x in wrong.items():
        if x is None:
            continue
        with pytest.raises(ValueError, match="x "):
            op.measure(x, 0.1)
            pytest.fail(f"{name}: x of the wrong {what} was accepted")
    for sy in (-1.0, float("nan"), float("inf"), torch.tensor([0.1] * (b + 1), dtype=F64)):
        with pytest.raises(ValueError, match="sigma_y"):
            op.measure(good, sy)


def test_measure_batch_of_a_shared_operator_is_free():
    op = Denoise(C3, F64)
    assert op.measure(torch.zeros(5, *C3, dtype=F64), torch.full((5,), 0.1, dtype=F64)).shape == (5, *C3)
