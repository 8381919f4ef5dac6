"""guided diffusion's 256x256 priors by name (``diffunet-*`` in :data:`exactps.published.PUBLISHED`), offline,
through the code a user runs.

Each test "publishes" a randomly initialised ``DiffUNet`` of the entry's architecture the way deepinv's
repository holds it (``torch.save`` of the state dict, under deepinv's file name) and redirects only
``torch.hub.download_url_to_file``. ImageNet's large architecture (~550M parameters) is replaced by the FFHQ
one (the only smaller ``DiffUNet``) so that the test stays fast; its file name and URL are ImageNet's.
The reference is the source network called by hand: ``x - sigma eps(x / sqrt(1 + sigma^2), k)[:3]`` at the
schedule's ``sigma_k`` (where ``k`` is the integer timestep).
"""

from __future__ import annotations

import argparse

import pytest
import torch
from helpers import HubServer

from exactps.cli.train import add_train_arguments
from exactps.cli.train import run as train_main
from exactps.covariance import IsotropicNoise
from exactps.loading import load_model
from exactps.models import ModelConfig, build_model, load_pretrained
from exactps.networks import PRESETS, build_backbone
from exactps.published import PUBLISHED, PublishedPriorError, cached_file, check_fits, get_published
from exactps.vpnets import ADM_SCHEDULE

NAMES = ("diffunet-ffhq-256", "diffunet-imagenet-256")
SHAPE = (3, 32, 32)  # the U-Net is convolutional; 32 is the smallest size it halves five times
STEPS = (0, 250, 999)


@pytest.fixture
def server(tmp_path, monkeypatch):
    monkeypatch.setitem(PRESETS, "adm-large-256", PRESETS["adm-256"])
    return HubServer.offline(tmp_path, monkeypatch)


def _sigmas() -> torch.Tensor:
    ab = ADM_SCHEDULE.alphas_cumprod[list(STEPS)]
    return torch.sqrt((1 - ab) / ab).float()


def _reference(source, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """The source's DDPM x0-prediction at the integer timesteps ``STEPS`` (``x`` holds one image per step)."""
    with torch.no_grad():
        eps = source.forward_diffusion(x / torch.sqrt(1 + sigma**2)[:, None, None, None], torch.tensor(STEPS))
    return x - sigma[:, None, None, None] * eps[:, :3]


def _images(seed: int = 0) -> torch.Tensor:
    return 0.6 * torch.randn(len(STEPS), *SHAPE, generator=torch.Generator().manual_seed(seed))


def test_entries_are_deepinvs_files():
    for name, file_name in zip(NAMES, ("diffusion_ffhq_10m.pt", "diffusion_openai.pt"), strict=True):
        prior = get_published(name)
        assert prior.url == f"https://huggingface.co/deepinv/diffunet/resolve/main/{file_name}?download=true"
        assert prior.resolution == 256 and prior.pixel_range == (-1.0, 1.0) and prior.label_dim == 0
    assert set(NAMES) <= set(PUBLISHED)


@pytest.mark.parametrize("name", [NAMES[0], pytest.param(NAMES[1], marks=pytest.mark.slow)])
def test_loaded_prior_is_the_source_denoiser(server, name):
    source = server.publish(name)
    loaded = load_model(name, device="cpu")  # what `exactps bench images --prior NAME` runs
    assert server.requested == [get_published(name).url] and cached_file(name).exists()
    assert loaded.objective == "denoiser" and loaded.img_shape == (3, 256, 256)
    x, sigma = _images(), _sigmas()
    with torch.no_grad():
        ours = loaded.model(x, IsotropicNoise(sigma))
    ref = _reference(source, x, sigma)
    scale = sigma[:, None, None, None]
    torch.testing.assert_close(ours / scale, ref / scale, rtol=1e-5, atol=2e-5)
    assert not torch.allclose(ref, x, atol=1e-2)  # the network does contribute


@pytest.mark.parametrize("name", [NAMES[0], pytest.param(NAMES[1], marks=pytest.mark.slow)])
def test_eps_initialised_from_a_name_reproduces_the_denoiser(server, name):
    source = server.publish(name, seed=1)
    prior = get_published(name)
    model = build_model("eps", ModelConfig(prior.preset, 3, "map", prior.sigma_data)).eval()
    report = load_pretrained(model, name)  # what `exactps train --init NAME` runs
    assert report.loaded == len(source.state_dict())
    assert sorted(report.missing) == sorted(model.conditioning_keys()) and len(report.missing) == 3
    x, sigma = _images(2), _sigmas()
    with torch.no_grad():
        ours = model(x, IsotropicNoise(sigma))  # A = 0, zero new weights
    scale = sigma[:, None, None, None]
    torch.testing.assert_close(ours / scale, _reference(source, x, sigma) / scale, rtol=1e-5, atol=2e-5)


@pytest.mark.slow
def test_train_cli_initialises_from_a_name(server, tmp_path, capsys):
    name = "diffunet-ffhq-256"
    server.publish(name)
    argv = ["--data", "builtin", "--init", name, "--batch", "1", "--steps", "1", "--task", "inpaint-random"]
    argv += ["--size", "32", "--grid-every", "1000", "--no-progress", "--out", str(tmp_path / "run")]
    assert train_main(add_train_arguments(argparse.ArgumentParser()).parse_args(argv)) == 0
    assert f"from {name}" in capsys.readouterr().out
    assert '"preset": "adm-256"' in (tmp_path / "run" / "config.json").read_text()


# -- bad input: named errors before any work ---------------------------------------------------------------


def test_a_file_of_another_architecture_is_named(server):
    prior = get_published("diffunet-ffhq-256")
    torch.save(build_backbone("tiny").state_dict(), server.root / prior.file_name)  # an EDM U-Net's weights
    with pytest.raises(PublishedPriorError, match=r"does not hold diffunet-ffhq-256 \(a 'adm-256' network\)"):
        load_model("diffunet-ffhq-256", device="cpu")


def test_a_network_that_does_not_fit_the_prior_is_refused():
    with pytest.raises(PublishedPriorError, match="preset 'adm-large-256', not 'adm-256'"):
        check_fits("diffunet-imagenet-256", "adm-256", 3, 0.5)
    check_fits("diffunet-imagenet-256", None, 3, 0.5)
