"""diffusers ``UNet2DModel`` folders as priors (:mod:`exactps.diffusers_unet`; skipped without diffusers).

Each test saves a small randomly initialised ``UNet2DModel`` and a ``DDPMScheduler`` the way diffusers saves
them (``save_pretrained``: a pipeline folder with ``model_index.json``, ``unet/``, ``scheduler/``) and loads
the folder through the code ``exactps bench images --prior DIR`` runs. The reference is diffusers' own
conversion: ``DDPMScheduler.step(...).pred_original_sample`` of the network's output at ``x_k``.
"""

from __future__ import annotations

import json

import pytest
import torch

diffusers = pytest.importorskip("diffusers")

from helpers import save_diffusers_unet  # noqa: E402

from exactps.covariance import IsotropicNoise  # noqa: E402
from exactps.diffusers_unet import DiffusersDenoiser, DiffusersFolderError, read_diffusers_folder  # noqa: E402
from exactps.loading import load_model  # noqa: E402
from exactps.models import load_pretrained  # noqa: E402
from exactps.vpnets import PredictionTypeError  # noqa: E402

STEPS = (0, 137, 999)


def _reference(unet, sched, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(sigma_k, x0)`` at the timesteps ``STEPS``, one image of ``x`` each: diffusers' x0-prediction."""
    ab = sched.alphas_cumprod[list(STEPS)].double()
    sigma = torch.sqrt((1 - ab) / ab).float()
    out = []
    with torch.no_grad():
        for i, k in enumerate(STEPS):
            x_k = x[i : i + 1] / torch.sqrt(1 + sigma[i] ** 2)
            out.append(sched.step(unet(x_k, k).sample, k, x_k).pred_original_sample)
    return sigma, torch.cat(out)


@pytest.mark.parametrize(("prediction", "schedule"), [("epsilon", "linear"), ("v_prediction", "squaredcos_cap_v2")])
def test_loaded_folder_is_the_networks_denoiser(tmp_path, prediction, schedule):
    unet, sched = save_diffusers_unet(tmp_path, prediction, schedule)
    loaded = load_model(tmp_path, device="cpu")  # what `exactps bench images --prior DIR` runs
    assert loaded.objective == "denoiser" and loaded.img_shape == (3, 16, 16)
    x = 0.6 * torch.randn(len(STEPS), 3, 16, 16, generator=torch.Generator().manual_seed(1))
    sigma, ref = _reference(unet, sched, x)
    with torch.no_grad():
        ours = loaded.model(x, IsotropicNoise(sigma))
    scale = sigma[:, None, None, None].clamp(min=1)  # x - x0 is sigma times the network's output
    torch.testing.assert_close(ours / scale, ref / scale, rtol=1e-5, atol=2e-5)
    assert not torch.allclose(ref, x, atol=1e-2)


def test_eps_from_a_folder_with_zero_new_weights_is_the_denoiser(tmp_path):
    unet, sched = save_diffusers_unet(tmp_path, seed=2)
    folder = read_diffusers_folder(tmp_path)
    model = DiffusersDenoiser.from_folder(folder, "map").eval()
    report = load_pretrained(model, tmp_path)  # the weights through diffusers' from_pretrained
    assert sorted(report.missing) == sorted(model.conditioning_keys()) and len(report.missing) == 3
    x = 0.6 * torch.randn(len(STEPS), 3, 16, 16, generator=torch.Generator().manual_seed(3))
    sigma, ref = _reference(unet, sched, x)
    with torch.no_grad():
        ours = model(x, IsotropicNoise(sigma))
    scale = sigma[:, None, None, None].clamp(min=1)
    torch.testing.assert_close(ours / scale, ref / scale, rtol=1e-5, atol=2e-5)
    with torch.no_grad():
        model.net.conv_in.extra_weight.fill_(0.1)  # the widened convolution is wired
        assert not torch.allclose(model(x, IsotropicNoise(sigma)), ours, atol=1e-4)


# -- bad input: named errors before any work ---------------------------------------------------------------


def test_a_folder_without_config_is_named(tmp_path):
    (tmp_path / "unet").mkdir()
    with pytest.raises(DiffusersFolderError, match=r"unet has no config.json"):
        load_model(tmp_path, device="cpu")


def test_a_folder_without_scheduler_config_is_named(tmp_path):
    save_diffusers_unet(tmp_path)
    (tmp_path / "scheduler" / "scheduler_config.json").unlink()
    with pytest.raises(DiffusersFolderError, match=r"scheduler has no scheduler_config.json"):
        read_diffusers_folder(tmp_path)


def test_sample_prediction_is_refused_by_name(tmp_path):
    save_diffusers_unet(tmp_path, prediction="sample")
    with pytest.raises(PredictionTypeError, match=r"prediction type 'sample' is not supported"):
        load_model(tmp_path, device="cpu")


def test_a_non_ddpm_schedule_is_refused_by_name(tmp_path):
    save_diffusers_unet(tmp_path)
    diffusers.ScoreSdeVeScheduler().save_pretrained(tmp_path / "scheduler")
    with pytest.raises(DiffusersFolderError, match=r"\(ScoreSdeVeScheduler\) is not a DDPM schedule"):
        read_diffusers_folder(tmp_path)
    cfg = json.loads((tmp_path / "unet" / "config.json").read_text())
    (tmp_path / "unet" / "config.json").write_text(json.dumps({**cfg, "_class_name": "UNet2DConditionModel"}))
    with pytest.raises(DiffusersFolderError, match=r"describes a 'UNet2DConditionModel', not a diffusers UNet2DModel"):
        read_diffusers_folder(tmp_path)
