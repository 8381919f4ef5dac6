"""EDM's class-conditional ImageNet-64 ADM (:mod:`exactps.admunet`, ``edm-imagenet64-cond``), offline.

The architecture is shrunk (``adm-64`` monkeypatched: 16x16, two levels) so that a random network is cheap;
the key names are deepinv's ``ADMUNet``'s. The reference is deepinv's own EDM denoiser
``ADMUNet.forward(x, sigma, class_labels, input_in_minus_one_one=True)`` with the label vector written out.
"""

from __future__ import annotations

import argparse

import pytest
import torch
from helpers import HubServer, random_adm, shrink_adm

from exactps.admunet import ADMUNetDenoiser, ClassLabelsError
from exactps.cli.train import add_train_arguments
from exactps.cli.train import run as train_main
from exactps.covariance import IsotropicNoise
from exactps.loading import load_model, load_published
from exactps.models import ModelConfig, build_model
from exactps.operators import Inpaint, random_masks

NAME = "edm-imagenet64-cond"
SHAPE = (3, 16, 16)
#: the vectors of exactps.admunet.CLASS_LABELS, written out
VECTORS = {"uniform": torch.full((2, 1000), 1e-3), "zero": torch.zeros(2, 1000)}


@pytest.fixture
def small(monkeypatch):
    shrink_adm(monkeypatch)


def _x(seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    return 0.6 * torch.randn(2, *SHAPE, generator=torch.Generator().manual_seed(seed)), torch.tensor([0.3, 4.0])


@pytest.mark.parametrize("labels", sorted(VECTORS))
def test_zero_new_weights_is_edms_class_conditional_denoiser(small, labels):
    source = random_adm()
    model = ADMUNetDenoiser("adm-64", 3, "map", 0.5, labels).eval()
    missing = model.load_backbone(source.state_dict())
    assert sorted("net." + k for k in missing) == sorted(model.conditioning_keys()) and len(missing) == 2
    x, sigma = _x()
    with torch.no_grad():
        ref = source(x, sigma, class_labels=VECTORS[labels], input_in_minus_one_one=True)
        ours = model(x, IsotropicNoise(sigma))
        torch.testing.assert_close(ours, ref, rtol=1e-5, atol=1e-5)
        other = source(x, sigma, class_labels=torch.eye(1000)[:2], input_in_minus_one_one=True)
        assert not torch.allclose(ref, other, atol=1e-3)  # the label vector matters
        # the new weights are wired: the widened convolution and the s_y path (map_augment)
        g = torch.Generator().manual_seed(2)
        op = Inpaint(random_masks(SHAPE, 2, 0.5, g), SHAPE)
        m, noise = op.pivot(x, sigma, op.A(x), torch.tensor([0.1, 0.1]))
        before = model(m, noise)
        model.net.map_augment.weight.fill_(0.05)
        assert not torch.allclose(model(m, noise), before, atol=1e-4)
        model.net.map_augment.weight.zero_()
        next(iter(model.net.enc.values())).extra_weight.fill_(0.05)
        assert not torch.allclose(model(m, noise), before, atol=1e-4)


def _train(argv: list[str]) -> int:
    return train_main(add_train_arguments(argparse.ArgumentParser()).parse_args(argv))


_COMMON = ["--data", "builtin", "--size", "16", "--batch", "2", "--no-progress", "--task", "inpaint-random"]
_COMMON += ["--grid-every", "100", "--objective", "eps"]


def test_a_class_conditional_prior_without_labels_is_named_before_any_work(small, tmp_path, monkeypatch):
    server = HubServer.offline(tmp_path, monkeypatch)
    with pytest.raises(ClassLabelsError, match="class-conditional prior used without labels"):
        build_model("eps", ModelConfig("adm-64", 3, "map", 0.5, 16))
    with pytest.raises(ClassLabelsError, match=f"without labels: the published prior {NAME}"):
        load_model(NAME, device="cpu")
    out = tmp_path / "run"
    with pytest.raises(ClassLabelsError, match=r"class-conditional prior used without labels.*--class-labels uniform"):
        _train([*_COMMON, "--init", NAME, "--out", str(out)])
    with pytest.raises(ClassLabelsError, match=r"not class-conditional: --class-labels zero does not apply"):
        _train([*_COMMON, "--preset", "tiny", "--class-labels", "zero", "--out", str(out)])
    assert not out.exists() and server.requested == []  # nothing fetched, nothing written


def test_explicit_labels_load_and_finetune(small, tmp_path, monkeypatch):
    server = HubServer.offline(tmp_path, monkeypatch)
    source = server.publish(NAME)
    loaded = load_published(NAME, device="cpu", class_labels="uniform")
    x, sigma = _x(3)
    with torch.no_grad():
        ref = source(x, sigma, class_labels=VECTORS["uniform"], input_in_minus_one_one=True)
        torch.testing.assert_close(loaded.model(x, IsotropicNoise(sigma)), ref, rtol=1e-5, atol=1e-5)
    out = tmp_path / "run"
    assert _train([*_COMMON, "--init", NAME, "--class-labels", "uniform", "--steps", "1", "--out", str(out)]) == 0
    run = load_model(out, device="cpu")
    assert isinstance(run.model, ADMUNetDenoiser) and run.model_config.class_labels == "uniform"
    with pytest.raises(ValueError, match="--class-labels cannot change when resuming"):
        _train(["--resume", str(out), "--class-labels", "zero"])
