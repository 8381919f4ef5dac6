"""EPS denoiser network: presets, matrix-valued EDM preconditioning, conditioning, checkpoints."""

import copy
import math
import time
from dataclasses import replace

import pytest
import torch
from helpers import checkpointed_pair

from exactps.admunet import EDM_ADM_MODEL_TYPE, build_admunet
from exactps.covariance import IsotropicNoise, MatrixFreeNoise
from exactps.interpolants import VE
from exactps.networks import CONDITIONINGS, MODEL_TYPES, PRESETS, EPSDenoiser, build_backbone, count_parameters
from exactps.operators import (
    Blur,
    Inpaint,
    MatrixFreeOperator,
    gaussian_kernel,
    random_masks,
)
from exactps.posterior import PosteriorPredictor, pivot
from exactps.vpnets import build_adm_unet

SD = 0.5
SHAPE = (3, 16, 16)


def _model(conditioning="scalar", seed=0, perturb=True, model_type="ddpm"):
    """A tiny model whose weights are all randomised (zero-init layers included, unless they are
    the conditioning weights, which stay zero so the variants can be compared)."""
    torch.manual_seed(seed)
    model = EPSDenoiser(_tiny(model_type), channels=3, conditioning=conditioning).eval()
    if perturb:
        g = torch.Generator().manual_seed(seed + 100)
        with torch.no_grad():
            for name, p in model.named_parameters():
                if not name.endswith("extra_weight"):
                    p.add_(0.05 * torch.randn(p.shape, generator=g))
    return model


def _tiny(model_type="ddpm"):
    """The ``tiny`` preset as DDPM++ or NCSN++."""
    return replace(PRESETS["tiny"], model_type=model_type)


def _images(batch=2, seed=0, shape=SHAPE):
    return torch.randn(batch, *shape, generator=torch.Generator().manual_seed(seed)) * 0.5


def _inpaint_noise(sigma_y, batch=2, seed=1):
    g = torch.Generator().manual_seed(seed)
    mask = random_masks(SHAPE, batch, 0.5, g)
    op = Inpaint(mask, SHAPE)
    x0 = _images(batch, seed)
    rho = torch.tensor([0.3, 2.0])[:batch]
    x_scaled = x0 + rho.reshape(-1, 1, 1, 1) * torch.randn(x0.shape, generator=g)
    y = op.measure(x0, sigma_y, g)
    m, noise = op.pivot(x_scaled, rho, y, torch.full((batch,), float(sigma_y)))
    return op, m, noise, mask


# -- presets ------------------------------------------------------------------------------------------


def test_preset_parameter_counts():
    with torch.device("meta"):  # shapes only: no memory, no random initialisation
        builders = {"adm": build_adm_unet, EDM_ADM_MODEL_TYPE: build_admunet}
        build = {name: builders.get(p.model_type, build_backbone) for name, p in PRESETS.items()}
        counts = {name: count_parameters(b(name)) for name, b in build.items()}
    assert counts["tiny"] < 1_000_000
    assert 5e6 < counts["small-32"] < 9e6
    assert 9e6 < counts["small-64"] < 11e6
    assert 2e6 < counts["compact-64"] < 3e6  # 5 MB in float16: fits the repository
    assert 55e6 < counts["base-64"] < 65e6
    assert 90e6 < counts["adm-256"] < 100e6 and 500e6 < counts["adm-large-256"] < 600e6  # 357 MB / 2.1 GB files
    assert 295e6 < counts["adm-64"] < 297e6  # EDM's ImageNet-64 ADM, ~296M


def test_unknown_preset_raises():
    with pytest.raises(ValueError, match="unknown backbone preset"):
        build_backbone("huge")


def test_tiny_forward_is_fast_and_shaped():
    model = _model("map")
    m = _images(4)
    with torch.no_grad():
        elapsed = []
        for _ in range(3):
            start = time.perf_counter()
            out = model(m, IsotropicNoise(torch.tensor([1.0])))
            elapsed.append(time.perf_counter() - start)
    assert out.shape == m.shape and out.dtype == m.dtype
    assert torch.isfinite(out).all()
    assert min(elapsed) < 5.0  # ~10-30 ms on two idle CPU cores; only catches gross regressions


@pytest.mark.parametrize("conditioning", list(CONDITIONINGS))
def test_output_shape_spectral_noise(conditioning):
    model = _model(conditioning)
    _, m, noise, _ = _inpaint_noise(0.05)
    with torch.no_grad():
        out = model(m, noise)
    assert out.shape == m.shape and torch.isfinite(out).all()


def test_bad_input_shape_raises():
    model = _model("none", perturb=False)
    with pytest.raises(ValueError, match="expected images"):
        model(torch.zeros(1, 1, 16, 16), IsotropicNoise(torch.ones(1)))


@pytest.mark.parametrize("size", [(15, 16), (17, 9), (1, 3)])
def test_any_image_size_pads_the_unet_input_and_crops_its_output(size):
    """D = c_skip m + c_out crop(F(pad(c_in m))): reflection (replication when too small) padding to
    even sides for the 2-level tiny U-Net, the preconditioning at the image's own size."""
    model = _model("map")
    shape = (3, *size)
    m = torch.randn(2, *shape, generator=torch.Generator().manual_seed(3))
    mask = random_masks(shape, 2, 0.5, torch.Generator().manual_seed(4))
    op = Inpaint(mask, shape)
    m2, noise = op.pivot(m, torch.tensor([0.3, 2.0]), op.A(m), torch.full((2,), 0.1))
    with torch.no_grad():
        out = model(m2, noise)
        x = model.backbone_input(m2, noise)
        h, w = size
        mode = "reflect" if h % 2 < h and w % 2 < w else "replicate"
        padded = torch.nn.functional.pad(x, (0, w % 2, 0, h % 2), mode=mode)
        labels = model.sigma_y_features(noise, m2)
        f = model.net.forward_unet(padded, model.c_noise(noise, m2), class_labels=labels)[..., :h, :w]
        want = noise.apply(model.c_skip, m2) + noise.apply(model.c_out, f)
    assert out.shape == (2, *shape)
    assert torch.allclose(out, want, atol=1e-6)


def test_matrix_free_noise_is_rejected_with_a_clear_error():
    from deepinv.physics import Denoising

    op = MatrixFreeOperator(Denoising(), SHAPE)
    noise = MatrixFreeNoise(op, torch.ones(1), torch.ones(1))
    with pytest.raises(NotImplementedError, match="spectral"):
        _model("scalar", perturb=False)(_images(1), noise)


# -- preconditioning ---------------------------------------------------------------------------------


def test_isotropic_equals_deepinv_edm_preconditioning():
    """A = 0, no extra conditioning: exactly deepinv's (EDM's) scalar-preconditioned DDPM++."""
    model = _model("none")
    x = _images(2)
    sigma = torch.tensor([0.1, 3.0])
    with torch.no_grad():
        ours = model(x, IsotropicNoise(sigma))
        ref = model.net(x, sigma, input_in_minus_one_one=True)
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-5)


def test_isotropic_equals_edm_preconditioning_by_hand():
    model = _model("scalar")
    x = _images(2)
    sigma = torch.tensor([0.02, 1.5])
    noise = IsotropicNoise(sigma)
    s = sigma.reshape(-1, 1, 1, 1)
    c_skip = SD**2 / (s**2 + SD**2)
    c_out = s * SD / (s**2 + SD**2).sqrt()
    c_in = 1 / (s**2 + SD**2).sqrt()
    labels = model.sigma_y_features(noise, x)
    with torch.no_grad():
        f = model.net.forward_unet(c_in * x, sigma.log() / 4, class_labels=labels)
        ours = model(x, noise)
    torch.testing.assert_close(ours, c_skip * x + c_out * f, rtol=1e-5, atol=1e-6)
    assert model.denoise(x, sigma).equal(ours)


@pytest.mark.parametrize("conditioning", list(CONDITIONINGS))
def test_noiseless_measured_pixels_pass_through_exactly(conditioning):
    """s_y = 0: observed pixels have l = 0, so c_skip = 1, c_out = 0 and x0 == m there."""
    model = _model(conditioning)
    _, m, noise, mask = _inpaint_noise(0.0)
    assert (noise.var[mask.expand_as(noise.var) > 0] == 0).all()
    with torch.no_grad():
        out = model(m, noise)
    observed = mask.expand_as(m) > 0
    assert torch.equal(out[observed], m[observed])
    assert not torch.allclose(out[~observed], m[~observed])


def test_rho_broadcasts_over_batch():
    model = _model("scalar")
    x = _images(3)
    with torch.no_grad():
        shared = model(x, IsotropicNoise(torch.tensor([0.7])))
        per = model(x, IsotropicNoise(torch.full((3,), 0.7)))
    torch.testing.assert_close(shared, per)


# -- conditioning and checkpoints -------------------------------------------------------------------


def test_map_model_loading_scalar_weights_is_identical():
    scalar = _model("scalar")
    mapped = EPSDenoiser("tiny", conditioning="map").eval()
    result = mapped.load_state_dict(scalar.state_dict(), strict=False)
    assert result.missing_keys == ["net.enc.16x16_conv.extra_weight"] and not result.unexpected_keys
    assert mapped.conditioning_keys()[-1] == "net.enc.16x16_conv.extra_weight"
    _, m, noise, _ = _inpaint_noise(0.05)
    with torch.no_grad():
        assert torch.equal(mapped(m, noise), scalar(m, noise))
        iso = IsotropicNoise(torch.tensor([0.4, 1.1]))
        assert torch.equal(mapped(m, iso), scalar(m, iso))


def test_unconditional_checkpoint_loads_into_every_variant():
    """A plain DDPM++ state dict (deepinv keys) gives the same denoiser in all variants."""
    plain = _model("none")
    ckpt = plain.net.state_dict()
    x = _images(2)
    sigma = torch.tensor([0.2, 5.0])
    with torch.no_grad():
        ref = plain.denoise(x, sigma)
    for conditioning in ("scalar", "map", "obs"):
        model = EPSDenoiser("tiny", conditioning=conditioning).eval()
        missing = model.load_backbone(ckpt)
        assert sorted("net." + k for k in missing) == sorted(model.conditioning_keys())
        with torch.no_grad():
            assert torch.equal(model.denoise(x, sigma), ref)


def test_ncsn_variants_compute_the_same_function_until_trained():
    """NCSN++'s residual encoder reads the raw input a second time: the conditioning maps must reach the
    first convolution only, so every variant loading the same weights is the same denoiser, at A = 0
    and under an operator, and its channels-last copy too."""
    plain = _model("none", model_type="ncsn")
    _, m, noise, _ = _inpaint_noise(0.05)
    iso = IsotropicNoise(torch.tensor([0.2, 5.0]))
    with torch.no_grad():
        refs = plain(m, noise), plain(m, iso)
    for conditioning in ("scalar", "map", "obs"):
        model = EPSDenoiser(_tiny("ncsn"), conditioning=conditioning).eval()
        missing = model.load_backbone(plain.net.state_dict())
        assert sorted("net." + k for k in missing) == sorted(model.conditioning_keys())
        assert any(k.endswith("aux_residual.weight") for k in model.state_dict())
        with torch.no_grad():
            torch.testing.assert_close((model(m, noise), model(m, iso)), refs, rtol=1e-5, atol=1e-6)
            last = model.to(memory_format=torch.channels_last)
            torch.testing.assert_close(last(m.to(memory_format=torch.channels_last), noise), refs[0],
                                       rtol=1e-4, atol=1e-5)  # fmt: skip


def test_safetensors_round_trip_and_config(tmp_path):
    import json

    from safetensors.torch import load_file, save_file

    model = _model("map")
    save_file(model.state_dict(), tmp_path / "model.safetensors")
    (tmp_path / "config.json").write_text(json.dumps(model.config()))
    clone = EPSDenoiser.from_config(json.loads((tmp_path / "config.json").read_text())).eval()
    clone.load_state_dict(load_file(tmp_path / "model.safetensors"))
    _, m, noise, _ = _inpaint_noise(0.05)
    with torch.no_grad():
        assert torch.equal(clone(m, noise), model(m, noise))


def test_load_backbone_rejects_mismatched_state_dict():
    model = EPSDenoiser("tiny", conditioning="scalar")
    ckpt = dict(build_backbone("tiny").state_dict())
    ckpt.pop("map_layer0.weight")
    with pytest.raises(KeyError, match=r"map_layer0\.weight"):
        model.load_backbone(ckpt)


def test_conditioning_weights_start_at_zero_and_receive_gradients():
    model = EPSDenoiser("tiny", conditioning="map")
    assert model.net.map_label.weight.abs().sum() == 0
    extra = model.net.enc["16x16_conv"].extra_weight
    assert extra.abs().sum() == 0
    _, m, noise, _ = _inpaint_noise(0.1)
    model(m, noise).square().mean().backward()
    assert extra.grad is not None and extra.grad.abs().sum() > 0
    assert model.net.map_label.weight.grad.abs().sum() > 0


def test_scalar_conditioning_sees_sigma_y():
    model = _model("scalar")
    with torch.no_grad():
        model.net.map_label.weight.normal_(0, 0.5)
    op, m, _, _ = _inpaint_noise(0.0)
    rho = torch.tensor([0.3, 2.0])
    _, n1 = op.pivot(m, rho, op.A(m), torch.full((2,), 0.01))
    _, n2 = op.pivot(m, rho, op.A(m), torch.full((2,), 0.2))
    with torch.no_grad():
        assert not torch.allclose(model(m, n1), model(m, n2))


# -- precision, sampling integration --------------------------------------------------------------------


@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_bf16_autocast_cpu(model_type):
    model = _model("map", model_type=model_type)
    _, m, noise, _ = _inpaint_noise(0.05)
    with torch.no_grad():
        ref = model(m, noise)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = model(m, noise)
    assert low.dtype == torch.float32 and torch.isfinite(low).all()
    assert (low - ref).abs().max() < 0.1 * ref.abs().max()


def test_float64_input_is_supported():
    model = _model("map")
    _, m, noise, _ = _inpaint_noise(0.05)
    with torch.no_grad():
        out = model(m.double(), noise)
    assert out.dtype == torch.float64 and torch.isfinite(out).all()


def test_blur_noise_through_posterior_predictor():
    interp = VE()
    kernel = gaussian_kernel(1.5, 7)
    op = Blur(kernel, SHAPE)
    x0 = _images(2)
    y = op.measure(x0, 0.05, torch.Generator().manual_seed(5))
    predictor = PosteriorPredictor(_model("map"), interp, op, y, 0.05)
    t = torch.tensor(0.8)
    x_t = x0 + t * torch.randn(x0.shape, generator=torch.Generator().manual_seed(6))
    with torch.no_grad():
        x0_hat = predictor(x_t, t.expand(2))
    m, _ = pivot(interp, x_t, t, op, y, 0.05)
    assert x0_hat.shape == x0.shape and torch.isfinite(x0_hat).all()
    assert not math.isclose((x0_hat - m).abs().max().item(), 0.0)


@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_compiled_backbone_is_one_graph_for_every_operator_type(model_type):
    """Only the U-Net is compiled, so sr4, inpainting, blur and A = 0 share one graph (dynamo's eager
    backend: tracing and guards as in production, no code generation) and give the eager result."""
    from torch._dynamo.utils import counters

    from exactps.networks import compile_backbone
    from exactps.objectives import eps_loss
    from exactps.tasks import make_task_operator

    torch._dynamo.reset()
    counters.clear()
    torch.manual_seed(0)
    eager = EPSDenoiser(_tiny(model_type), 3, "map")
    compiled = compile_backbone(copy.deepcopy(eager), backend="eager")
    x0 = torch.rand(2, 3, 16, 16, generator=torch.Generator().manual_seed(1)) * 2 - 1
    for task in ("sr4", "inpaint-box", "deblur-motion", None):
        op = None if task is None else make_task_operator(task, (3, 16, 16), torch.Generator().manual_seed(0), batch=2)
        losses = [eps_loss(m, x0, op, 0.05, torch.Generator().manual_seed(2)) for m in (eager, compiled)]
        assert torch.allclose(losses[0], losses[1], rtol=1e-5)
    assert counters["stats"]["unique_graphs"] == 1
    torch._dynamo.reset()


def test_obs_conditioning_appends_the_scaled_observation_image():
    """``"obs"`` (the paper's input): pivot, s_y embedding, and ``observation / sqrt(sd^2 + s_y^2)``."""
    model = _model("obs")
    op, m, noise, mask = _inpaint_noise(0.05)
    x = model.backbone_input(m, noise)
    assert x.shape == (2, 6, *SHAPE[1:])
    assert torch.allclose(x[:, :3], noise.apply(model.c_in, m))
    assert torch.allclose(x[:, 3:], mask * noise.y / (SD**2 + 0.05**2) ** 0.5)  # inpainting: the masked y
    iso = model.backbone_input(m, IsotropicNoise(torch.tensor([0.4, 1.1])))
    assert torch.equal(iso[:, 3:], torch.zeros_like(m))  # no measurement: zeros
    with torch.no_grad():
        model.net.enc["16x16_conv"].extra_weight.normal_(0, 0.1)
        y2 = op.measure(_images(2, seed=5), 0.05, torch.Generator().manual_seed(3))
        _, n2 = op.pivot(m, noise.rho, y2, noise.sigma_y)
        n2.var = noise.var  # same S_t, same pivot: only the observation differs
        assert not torch.allclose(model(m, noise), model(m, n2))


def test_observation_image_needs_the_measurement():
    _, m, noise, _ = _inpaint_noise(0.05)
    noise.y = None
    with pytest.raises(ValueError, match="without its measurement"):
        noise.observation_image(m)


@pytest.mark.parametrize("model_type", MODEL_TYPES)
def test_gradient_checkpointing_gives_the_same_values_and_gradients(model_type):
    from exactps.networks import checkpoint_blocks

    model = _model("map", model_type=model_type).train()
    model.net.enc["16x16_conv"].extra_weight.data.normal_(0, 0.1)
    ckpt = checkpoint_blocks(copy.deepcopy(model))
    _, m, noise, _ = _inpaint_noise(0.05)
    outs, grads, calls = checkpointed_pair(
        model, ckpt, lambda net: next(b for b in net.modules() if type(b).__name__ == "UNetBlock").conv0, m, noise
    )
    torch.testing.assert_close(outs[1], outs[0], rtol=1e-5, atol=1e-7)
    torch.testing.assert_close([g for _, g in grads[1]], [g for _, g in grads[0]], rtol=1e-5, atol=1e-7)
    assert calls == [1, 2]  # the checkpointed block ran again in the backward pass
    wrapped = [b for b in ckpt.modules() if getattr(b, "_checkpointed", False)]
    assert wrapped and len(wrapped) == sum(type(b).__name__ == "UNetBlock" for b in model.modules())
    with torch.no_grad():  # sampling: no recomputation, the same values
        torch.testing.assert_close(ckpt(m, noise), model(m, noise))
