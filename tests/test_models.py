"""Networks by objective: fine-tuning from an unconditional checkpoint (:func:`load_pretrained`), and the
conditional baseline's predictor.

The fine-tuning tests use the ``tiny`` U-Net preset; the predictor test the small MLP of :mod:`helpers`.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from helpers import MLPEPS, SD, SHAPE, MLPConditionalBackbone, inpaint_tasks

from exactps.checkpoint import save_checkpoint
from exactps.conditional import ConditionalDenoiser, ConditionalPredictor, conditioning_image
from exactps.covariance import IsotropicNoise
from exactps.models import load_pretrained

# -- fine-tuning -----------------------------------------------------------------------------------------------


def _unconditional_checkpoint(tmp_path: Path):
    from exactps.networks import EPSDenoiser

    torch.manual_seed(0)
    base = EPSDenoiser("tiny", channels=3, conditioning="none").eval()
    with torch.no_grad():  # make every weight non-trivial (zero-initialised output layers included)
        g = torch.Generator().manual_seed(1)
        for p in base.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))
    path = save_checkpoint(tmp_path / "pre", 100, base.state_dict(), ema=base.state_dict())
    return base, path


@pytest.mark.parametrize("conditioning", ["scalar", "map"])
def test_finetune_loads_every_unconditional_weight(tmp_path, conditioning):
    from exactps.networks import EPSDenoiser

    base, path = _unconditional_checkpoint(tmp_path)
    torch.manual_seed(5)
    model = EPSDenoiser("tiny", channels=3, conditioning=conditioning).eval()
    report = load_pretrained(model, path)
    assert sorted(report.missing) == sorted(model.conditioning_keys()) and not report.unexpected
    assert report.loaded == len(base.state_dict())
    state = model.state_dict()
    assert all(torch.equal(state[k], v) for k, v in base.state_dict().items())
    assert all(state[k].abs().sum() == 0 for k in report.missing)
    # A = 0: the first EPS prediction is the unconditional model's
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(2))
    noise = IsotropicNoise(torch.tensor([0.3, 2.0]))
    with torch.no_grad():
        assert torch.allclose(model(x, noise), base(x, noise), atol=1e-6)


def test_finetune_conditional_baseline_from_unconditional(tmp_path):
    from exactps.conditional import ConditionalUNet

    base, path = _unconditional_checkpoint(tmp_path)
    model = ConditionalDenoiser(ConditionalUNet("tiny", 3), 3).eval()
    report = load_pretrained(model, path)
    assert sorted(report.missing) == sorted(model.conditioning_keys())
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(2))
    rho = torch.tensor([0.3, 2.0])
    cond = torch.randn_like(x)  # conditioning weights start at zero: ignored until trained
    with torch.no_grad():
        assert torch.allclose(model(x, rho, cond, torch.tensor([0.05, 0.05])), base(x, IsotropicNoise(rho)), atol=1e-6)


def test_finetune_rejects_a_mismatched_checkpoint(tmp_path):
    path = save_checkpoint(tmp_path, 1, MLPEPS(width=32).state_dict())
    with pytest.raises(ValueError, match=str(path)):
        load_pretrained(MLPEPS(width=64), path)


# -- the conditional baseline ---------------------------------------------------------------------------------


def test_conditional_predictor_matches_denoiser_call():
    from exactps.interpolants import get_interpolant

    torch.manual_seed(0)
    model = ConditionalDenoiser(MLPConditionalBackbone(), 1, SD)
    interp = get_interpolant("vp-cosine")
    op = inpaint_tasks()["inpaint-random"].build(SHAPE, torch.Generator().manual_seed(1), torch.float32, 1)
    y = op.measure(torch.zeros(1, *SHAPE), 0.1, torch.Generator().manual_seed(2))
    x_t = torch.randn(3, *SHAPE)
    t = torch.tensor(0.4)
    a, s = interp.alpha(t), interp.sigma(t)
    with torch.no_grad():
        got = ConditionalPredictor(model, interp, op, y, 0.1)(x_t, t)
        want = model(x_t / a, (s / a).expand(3), conditioning_image(op, y).expand(3, *SHAPE), torch.full((3,), 0.1))
    torch.testing.assert_close(got, want)
