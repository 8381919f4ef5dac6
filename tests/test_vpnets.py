"""Discrete-time VP networks as EPS denoisers (:mod:`exactps.vpnets`), checked against independent formulas:
the interpolant conversions of :mod:`exactps.interpolants`, and the source network called by hand
(``x - sigma eps(x / sqrt(1 + sigma^2), k)``, ``k`` from numpy's interpolation of the schedule)."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from helpers import checkpointed_pair

from exactps.covariance import IsotropicNoise
from exactps.interpolants import VE, VPDiscrete, x0_from_eps, x0_from_vpred
from exactps.networks import CONDITIONINGS, PRESETS, build_backbone
from exactps.operators import Inpaint, box_masks
from exactps.posterior import pivot
from exactps.vpnets import (
    ADM_SCHEDULE,
    PREDICTIONS,
    ADMDenoiser,
    PredictionTypeError,
    build_adm_unet,
    get_prediction,
)

SHAPE = (3, 32, 32)  # DiffUNet halves five times: 32 is its smallest input


@pytest.mark.parametrize("name", sorted(PREDICTIONS))
def test_prediction_coefficients_are_the_interpolant_conversions(name):
    """``c_skip(r^2) x + c_out(r^2) F = x0`` with ``x = x_t / a``, ``r = s / a``: the same x0 as
    :func:`x0_from_eps` / :func:`x0_from_vpred` on the discrete schedule, at fractional timesteps."""
    interp = VPDiscrete()
    g = torch.Generator().manual_seed(0)
    x0, e = (
        torch.randn(4, 2, 3, 3, generator=g, dtype=torch.float64),
        torch.randn(4, 2, 3, 3, generator=g, dtype=torch.float64),
    )
    t = torch.tensor([0.0, 3.7, 420.2, 999.0], dtype=torch.float64)
    a, s = interp.alpha(t)[:, None, None, None], interp.sigma(t)[:, None, None, None]
    x_t = a * x0 + s * e
    target = e if name == "epsilon" else a * e - s * x0
    ref = (x0_from_eps if name == "epsilon" else x0_from_vpred)(interp, x_t, target, t)
    l = (s / a) ** 2
    ours = PREDICTIONS[name].c_skip(l) * (x_t / a) + PREDICTIONS[name].c_out(l) * target
    torch.testing.assert_close(ours, ref, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(ours, x0, rtol=1e-8, atol=1e-8)


def test_an_unsupported_prediction_type_is_named():
    with pytest.raises(
        PredictionTypeError, match=r"prediction type 'sample' is not supported.*'epsilon', 'v_prediction'"
    ):
        get_prediction("sample")


@pytest.fixture(scope="module")
def source() -> torch.nn.Module:
    """guided diffusion's FFHQ architecture, every weight random (nothing zero-initialised left)."""
    torch.manual_seed(0)
    net = build_adm_unet("adm-256")
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return net.eval()


def _model(source: torch.nn.Module, conditioning: str = "map") -> ADMDenoiser:
    model = ADMDenoiser("adm-256", 3, conditioning).eval()
    missing = model.load_backbone(source.state_dict())
    assert sorted(missing) == sorted(k.removeprefix("net.") for k in model.conditioning_keys())
    return model


def _timestep(sigma: np.ndarray) -> np.ndarray:
    """Independent: guided diffusion's linear schedule, ``t`` interpolated linearly in ``log abar``."""
    ab = np.cumprod(1 - np.linspace(1e-4, 0.02, 1000))
    grid = np.concatenate([[0.0], -np.log(ab)])
    return np.clip(np.interp(np.log1p(sigma**2), grid, np.arange(-1, 1000)), 0, 999)


def _reference(source, m: torch.Tensor, var: torch.Tensor, rho: torch.Tensor) -> torch.Tensor:
    """``m - sqrt(l) eps(m / sqrt(1 + l), k(rho))`` per pixel (``l``: the pixel's noise variance)."""
    k = torch.tensor(_timestep(rho.double().numpy()), dtype=torch.float32)
    with torch.no_grad():
        eps = source.forward_diffusion(m / torch.sqrt(1 + var), k)[:, :3]
    return m - torch.sqrt(var) * eps


def test_adm_denoiser_is_the_source_networks_denoiser(source):
    model = _model(source)
    x = 0.6 * torch.randn(4, *SHAPE, generator=torch.Generator().manual_seed(1))
    ab = ADM_SCHEDULE.alphas_cumprod
    on_grid = torch.sqrt((1 - ab[[3, 400]]) / ab[[3, 400]]).float()
    sigma = torch.cat([on_grid, torch.tensor([0.77, 300.0])])  # two grid values, one between, one beyond
    with torch.no_grad():
        ours = model(x, IsotropicNoise(sigma))
    var = sigma[:, None, None, None] ** 2 * torch.ones_like(x)
    scale = sigma[:, None, None, None]  # D - x = -sigma eps: compare on the scale of eps (float32 round-off)
    torch.testing.assert_close(ours / scale, _reference(source, x, var, sigma) / scale, rtol=1e-5, atol=2e-5)
    with torch.no_grad():  # on the grid: exactly the network's DDPM x0-prediction at that integer timestep
        x_k = x[:1] * torch.sqrt(ab[3]).float()
        eps = source.forward_diffusion(x_k, torch.tensor([3]))[:, :3]
        x0 = (x_k - torch.sqrt(1 - ab[3]).float() * eps) / torch.sqrt(ab[3]).float()
        torch.testing.assert_close(model.denoise(x[:1], float(on_grid[0])), x0, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("conditioning", list(CONDITIONINGS))
def test_every_conditioning_computes_the_source_function_under_an_operator(source, conditioning):
    """Zero new weights: ``D(m; S_t) = m - S_t^(1/2) eps(c_in(S_t) m, k(rho))``, per pixel for inpainting
    (``l = (1/rho^2 + mask/s_y^2)^-1``)."""
    model = _model(source, conditioning)
    g = torch.Generator().manual_seed(3)
    mask = box_masks(SHAPE, 2, (12, 12), generator=g)
    op = Inpaint(mask, SHAPE)
    x0 = 0.5 * torch.randn(2, *SHAPE, generator=g)
    s_y, rho = 0.1, torch.tensor([0.4, 6.0])
    y = op.measure(x0, sigma_y=s_y)
    x_t = x0 + rho[:, None, None, None] * torch.randn(2, *SHAPE, generator=g)
    m, noise = pivot(VE(), x_t, rho, op, y, s_y)
    var = 1 / (1 / rho[:, None, None, None] ** 2 + mask.expand_as(x0) / s_y**2)
    with torch.no_grad():
        ours = model(m, noise)
    torch.testing.assert_close(ours, _reference(source, m, var, rho), rtol=1e-4, atol=1e-4)


def test_new_weights_are_wired_and_survive_a_deep_copy(source):
    """Nonzero conditioning weights change the output (the widened convolution and the ``s_y`` embedding
    are in the graph); the EMA's deep copy embeds ``s_y`` with its own weights."""
    model = _model(source, "map")
    x, noise = torch.randn(1, *SHAPE), IsotropicNoise(torch.tensor([1.0]))
    noise.sigma_y = torch.tensor([0.2])
    with torch.no_grad():
        before = model(x, noise)
        copy_ = copy.deepcopy(model)
        copy_.sigma_y_embed.bias.fill_(0.3)
        assert torch.equal(model(x, noise), before) and not torch.allclose(copy_(x, noise), before, atol=1e-4)
        model.net.input_blocks[0][0].extra_weight.fill_(0.1)
        assert not torch.allclose(model(x, noise), before, atol=1e-4)
    loss = model(x, noise).square().mean()
    loss.backward()
    assert (
        model.sigma_y_embed.weight.grad is not None and model.net.input_blocks[0][0].extra_weight.grad.abs().sum() > 0
    )


def test_adm_presets_are_deepinvs_two_diffunets():
    """Built on the meta device (no memory): each preset has exactly the parameter shapes of deepinv's
    ``DiffUNet(large_model=...)`` (without its two schedule buffers, which the published files lack)."""
    from deepinv.models import DiffUNet

    for preset, large in (("adm-256", False), ("adm-large-256", True)):
        with torch.device("meta"):
            ours = build_adm_unet(preset).state_dict()
            theirs = DiffUNet(large_model=large, pretrained=None).state_dict()
        theirs = {k: v.shape for k, v in theirs.items() if "alphas_cumprod" not in k}
        assert {k: v.shape for k, v in ours.items()} == theirs


def test_other_architectures_are_refused_by_name():
    with pytest.raises(ValueError, match="DiffUNet has two architectures"):
        build_adm_unet(PRESETS["small-64"])
    with pytest.raises(ValueError, match="discrete-time VP backbone"):
        build_backbone("adm-256")


def test_gradient_checkpointing_of_the_adm_blocks_gives_the_same_values_and_gradients(source):
    """``--grad-checkpoint`` on an ``adm`` preset: every residual and attention block of the DiffUNet is
    recomputed in the backward pass (a block's first layer runs twice, under the same dropout draws), with the
    same output and the same gradient for every parameter; without gradients it is the same function."""
    from deepinv.models.diffunet import AttentionBlock, ResBlock

    from exactps.networks import checkpoint_blocks

    model = _model(source, "map").train()
    with torch.no_grad():  # the conditioning weights in the graph with nonzero values
        model.net.input_blocks[0][0].extra_weight.normal_(0, 0.1)
        model.sigma_y_embed.weight.normal_(0, 0.1)
    ckpt = checkpoint_blocks(copy.deepcopy(model))
    masks = box_masks(SHAPE, 1, (12, 12), torch.Generator().manual_seed(0))
    x0 = torch.rand(1, *SHAPE, generator=torch.Generator().manual_seed(1)) * 2 - 1
    rho, s_y = torch.tensor([0.8]), torch.tensor([0.1])
    m, noise = Inpaint(masks, SHAPE).pivot(x0 + rho * torch.randn_like(x0), rho, Inpaint(masks, SHAPE).A(x0), s_y)
    # the same dropout masks in both runs (DiffUNet's dropout is 0.1)
    outs, grads, calls = checkpointed_pair(
        model, ckpt, lambda net: next(b for b in net.modules() if isinstance(b, ResBlock)).in_layers, m, noise
    )
    torch.testing.assert_close(outs[1], outs[0], rtol=1e-5, atol=1e-6)
    assert calls == [1, 2]
    for (name, p), (_, q) in zip(grads[0], grads[1], strict=True):
        torch.testing.assert_close(q, p, rtol=1e-4, atol=1e-7, msg=name)
    blocks = [b for b in ckpt.modules() if isinstance(b, ResBlock | AttentionBlock)]
    assert len(blocks) > 20 and all(getattr(b, "_checkpointed", False) for b in blocks)
    model.eval(), ckpt.eval()
    with torch.no_grad():
        torch.testing.assert_close(ckpt(m, noise), model(m, noise))
