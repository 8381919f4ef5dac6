"""The conditional baseline: its loss shares the EPS draws; its conditioning image is safe."""

from __future__ import annotations

import torch

from exactps.conditional import conditional_loss, conditioning_image
from exactps.objectives import eps_loss
from exactps.operators import Inpaint, random_masks

SHAPE = (1, 2, 4)


def inpaint_operator(batch: int, seed: int) -> Inpaint:
    """Random inpainting of half the pixels, one mask per sample."""
    return Inpaint(random_masks(SHAPE, batch, 0.5, torch.Generator().manual_seed(seed)), SHAPE)


def test_conditional_loss_uses_the_same_draws_as_eps_loss():
    x0 = torch.randn(8, *SHAPE, generator=torch.Generator().manual_seed(0))
    op = inpaint_operator(8, 2)
    seen = {}

    def eps_model(m, noise):
        seen["rho_eps"] = noise.rho
        return m

    def cond_model(x_scaled, rho, cond, sigma_y):
        seen["rho_cond"], seen["cond"], seen["sy"] = rho, cond, sigma_y
        return x_scaled

    eps_loss(eps_model, x0, op, 0.1, torch.Generator().manual_seed(4))
    conditional_loss(cond_model, x0, op, 0.1, torch.Generator().manual_seed(4))
    assert torch.equal(seen["rho_eps"], seen["rho_cond"])
    assert torch.all(seen["cond"][~op.physics.mask.bool().expand(x0.shape)] == 0)  # A^T y: zero where unmeasured
    assert torch.allclose(seen["sy"], torch.full((8,), 0.1))



def test_conditioning_image_handles_a_mask_with_nothing_measured():
    mask = torch.zeros(2, 1, 2, 4)
    mask[1, 0, 0, 0] = 1
    op = Inpaint(mask, SHAPE)
    y = torch.ones(2, *SHAPE)
    cond = conditioning_image(op, y)
    assert torch.isfinite(cond).all()
    assert cond[0].abs().sum() == 0 and cond[1, 0, 0, 0] == 1


def test_conditioning_image_is_the_palette_observation():
    """Masked image for inpainting, A^+ y (dense pseudo-inverse) for 4x average pooling, y for blur."""
    from exactps.tasks import TASKS

    shape = (3, 16, 16)
    x = torch.randn(2, *shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    for name in ("paper-inpaint-random", "paper-sr4"):
        op = TASKS[name].build(shape, torch.Generator().manual_seed(2), torch.float64, 2)
        y = op.A(x)
        for b in range(2):
            ob = op.select(b)
            n = x[0].numel()
            dense = torch.stack([ob.A(e.reshape(1, *shape)).reshape(-1) for e in torch.eye(n, dtype=torch.float64)], 1)
            want = (torch.linalg.pinv(dense) @ y[b].reshape(-1)).reshape(shape)
            assert torch.allclose(conditioning_image(op, y)[b], want, atol=1e-10), name
    op = TASKS["paper-deblur-gauss"].build(shape, torch.Generator().manual_seed(2), torch.float64, 2)
    y = op.A(x)
    assert torch.equal(conditioning_image(op, y), y)
