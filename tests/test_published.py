"""Published priors by name (:mod:`exactps.published`), offline, through the code a user runs.

Nothing is downloaded: each test "publishes" a small randomly initialised network of the entry's
family (the entry's preset, shrunk) the way deepinv's repository holds it (``torch.save`` of the state
dict, under deepinv's file name), and only ``torch.hub.download_url_to_file`` (the download) is
redirected to that file. Everything else (deepinv's loader, its cache, the strict load into deepinv's
network, the load into the EPS denoiser) is the code ``exactps train --init NAME`` and
``exactps bench images --prior NAME`` run. The reference is the source network's own EDM denoiser
(deepinv's ``NCSNpp.forward`` on ``[-1, 1]`` images).
"""

from __future__ import annotations

import argparse
from dataclasses import replace

import pytest
import torch
from helpers import HubServer

from exactps.cli.train import add_train_arguments
from exactps.cli.train import run as train_main
from exactps.covariance import IsotropicNoise
from exactps.loading import load_model
from exactps.models import ModelConfig, build_model, load_pretrained
from exactps.networks import MODEL_TYPES, PRESETS, build_backbone
from exactps.published import (
    PUBLISHED,
    PublishedPriorError,
    cached_file,
    check_fits,
    get_published,
    is_published,
    published_state_dict,
)

NAMES = tuple(n for n, p in PUBLISHED.items() if PRESETS[p.preset].model_type in MODEL_TYPES)  # EDM's


def _shrink(preset):
    """The same family and resolution (so the same key names), two levels of 32 channels."""
    res = preset.img_resolution
    return replace(preset, model_channels=32, channel_mult=(1, 2), num_blocks=1, attn_resolutions=(res // 2,),
                   channel_mult_emb=2, dropout=0.0)  # fmt: skip


@pytest.fixture
def server(tmp_path, monkeypatch):
    """Offline deepinv: an empty hub cache, the download served from a local folder, small presets."""
    s = HubServer.offline(tmp_path, monkeypatch)
    for name in NAMES:
        preset = get_published(name).preset
        monkeypatch.setitem(PRESETS, preset, _shrink(PRESETS[preset]))
    return s


def _images(shape, seed=0):
    return 0.6 * torch.randn(2, *shape, generator=torch.Generator().manual_seed(seed))


def _reference(source, x, sigma):
    """The source network's denoiser: deepinv's EDM preconditioning on [-1, 1] images."""
    with torch.no_grad():
        return source(x, sigma, input_in_minus_one_one=True)


@pytest.mark.parametrize("name", NAMES)
def test_loaded_prior_is_the_published_denoiser(server, name):
    source = server.publish(name)
    prior = get_published(name)
    loaded = load_model(name, device="cpu")  # what `exactps bench images --prior NAME` runs
    assert server.requested == [prior.url] and prior.url.startswith("https://huggingface.co/deepinv/")
    assert cached_file(name).exists()
    assert loaded.objective == "denoiser" and loaded.model_config.preset == prior.preset
    x = _images(loaded.img_shape)
    for sigma in (0.05, 1.0, 30.0):
        with torch.no_grad():
            ours = loaded.model.denoise(x, sigma)
        torch.testing.assert_close(ours, _reference(source, x, sigma), rtol=1e-5, atol=1e-5)
    assert not torch.allclose(_reference(source, x, 1.0), x * 0.2, atol=1e-2)  # the network does contribute


@pytest.mark.parametrize("name", NAMES)
def test_eps_initialised_from_a_name_reproduces_the_denoiser(server, name):
    source = server.publish(name, seed=1)
    prior = get_published(name)
    model = build_model("eps", ModelConfig(prior.preset, 3, "map", prior.sigma_data)).eval()
    report = load_pretrained(model, name)  # what `exactps train --init NAME` runs
    assert report.path == name and report.loaded == len(source.state_dict())
    assert sorted(report.missing) == sorted(model.conditioning_keys()) and report.missing
    x = _images((3, prior.resolution, prior.resolution), seed=2)
    sigma = torch.tensor([0.3, 4.0])
    with torch.no_grad():
        ours = model(x, IsotropicNoise(sigma))  # A = 0: m = x, S_t = sigma^2 I
    ref = torch.cat([_reference(source, x[i : i + 1], float(sigma[i])) for i in range(2)])
    torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-5)
    assert len(server.requested) == 1  # a second load reads deepinv's cache
    load_pretrained(build_model("eps", ModelConfig(prior.preset, 3, "scalar", prior.sigma_data)), name)
    assert len(server.requested) == 1


def test_train_cli_initialises_from_a_name(server, tmp_path, capsys):
    name = "edm-cifar10-32x32-uncond-ve"
    server.publish(name)
    argv = ["--data", "builtin", "--init", name, "--batch", "2", "--steps", "1", "--task", "inpaint-random"]
    argv += ["--grid-every", "1000", "--no-progress", "--grad-checkpoint", "--out", str(tmp_path / "run")]
    assert train_main(add_train_arguments(argparse.ArgumentParser()).parse_args(argv)) == 0
    out = capsys.readouterr().out
    assert f"from {name}" in out and "kept at their zero initialisation" in out
    run_config = (tmp_path / "run" / "config.json").read_text()
    assert '"preset": "ncsn-32"' in run_config  # the prior's preset became the default
    assert '"grad_checkpoint": true' in run_config


def test_train_help_lists_the_names(capsys):
    from exactps.cli import main

    with pytest.raises(SystemExit):
        main(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    for name in NAMES:
        assert name in text.replace("- ", "-")


# -- bad input: named errors before any work ---------------------------------------------------------------


def test_unknown_name_lists_the_known_ones(tmp_path):
    with pytest.raises(PublishedPriorError, match=r"unknown published prior 'edm-ffhq-128'.*edm-ffhq-64x64-uncond-vp"):
        get_published("edm-ffhq-128")
    assert not is_published("edm-ffhq-128") and is_published(NAMES[0]) and not is_published(None)


def test_cli_rejects_an_unknown_init_before_any_work(tmp_path, capsys):
    from exactps.cli import main

    code = main(["train", "--data", "builtin", "--init", "edm-ffhq-128", "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 2 and "not a published prior" in err and "edm-ffhq-64x64-uncond-ve" in err
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    ("preset", "channels", "sigma_data", "message"),
    [("small-64", 3, 0.5, "preset 'base-64', not 'small-64'"), ("base-64", 1, 0.5, "3 channels, not 1"),
     ("base-64", 3, 1.0, "sigma_data 0.5, not 1.0")],
)  # fmt: skip
def test_a_network_that_does_not_fit_the_prior_is_refused(preset, channels, sigma_data, message):
    with pytest.raises(PublishedPriorError, match=message):
        check_fits("edm-ffhq-64x64-uncond-vp", preset, channels, sigma_data)
    check_fits("edm-ffhq-64x64-uncond-vp", None, None, 0.5)


def test_cli_refuses_another_preset_before_any_work(tmp_path, capsys):
    from exactps.cli import main

    argv = ["train", "--data", "builtin", "--init", "edm-ffhq-64x64-uncond-vp", "--preset", "tiny"]
    code = main([*argv, "--out", str(tmp_path / "run")])
    assert code == 2 and "preset 'base-64', not 'tiny'" in capsys.readouterr().err
    assert not (tmp_path / "run").exists()


def test_a_file_of_another_architecture_is_named(server):
    vp = get_published("edm-ffhq-64x64-uncond-vp")
    server.publish("edm-ffhq-64x64-uncond-ve")  # NCSN++ weights under the DDPM++ file's name
    (server.root / "edm-ffhq-64x64-uncond-ve.pt").rename(server.root / vp.file_name)
    with pytest.raises(PublishedPriorError, match=r"does not hold edm-ffhq-64x64-uncond-vp \(a 'base-64' network\)"):
        published_state_dict("edm-ffhq-64x64-uncond-vp")


def test_a_failed_download_says_where_to_put_the_file(server):
    with pytest.raises(PublishedPriorError, match=r"could not fetch .* copy it to .*edm-cifar10-32x32-uncond-vp.pt"):
        published_state_dict("edm-cifar10-32x32-uncond-vp")


@pytest.mark.parametrize(
    ("name", "model_type"), [("edm-ffhq-64x64-uncond-vp", "ddpm"), ("edm-ffhq-64x64-uncond-ve", "ncsn")]
)
def test_ffhq_presets_are_the_architecture_deepinv_downloads_into(name, model_type):
    """deepinv's ``NCSNpp(model_type=..., pretrained="download")`` strictly loads the FFHQ-64 files into its
    default architecture, so the entry's (real, not shrunk) preset must build exactly its parameter shapes
    (on the meta device: no memory, no weights)."""
    from deepinv.models import NCSNpp

    with torch.device("meta"):
        ours = build_backbone(get_published(name).preset).state_dict()
        theirs = NCSNpp(model_type=model_type, pretrained=None).state_dict()
    assert {k: v.shape for k, v in ours.items()} == {k: v.shape for k, v in theirs.items()}
