"""Class labels at sampling and evaluation: ``posterior_samples(class_labels=)``, the predictors and
``exactps bench images --class-labels``, with EDM's class-conditional ADM shrunk to 16x16, offline.

References: the same sampler run by hand on a denoiser that calls the network with the one-hot labels written
out (image ``k B + b`` is a sample of measurement ``b``), and deepinv's ``ADMUNet`` for the published prior.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from helpers import CLASSES, HubServer, class_folder, random_adm, shrink_adm

from exactps.admunet import ADMUNetDenoiser
from exactps.classes import ClassLabelsError
from exactps.cli import main
from exactps.imagebench import make_problem
from exactps.imagebench.methods import model_methods
from exactps.inference import posterior_samples
from exactps.interpolants import VE
from exactps.loading import LoadedModel
from exactps.models import ModelConfig
from exactps.operators import Inpaint, random_masks
from exactps.posterior import PosteriorPredictor
from exactps.samplers import initial_noise, sample

NAME = "edm-imagenet64-cond"
SHAPE = (3, 16, 16)


@pytest.fixture
def small(monkeypatch):
    shrink_adm(monkeypatch)


def _loaded(labels: str = "folder", seed: int = 0) -> LoadedModel:
    """A class-conditional EPS model (random ADM, random conditioning weights) as a loaded run."""
    model = ADMUNetDenoiser("adm-64", 3, "map", 0.5, labels)
    model.load_backbone(random_adm(seed).state_dict())
    with torch.no_grad():
        next(iter(model.net.enc.values())).extra_weight.normal_(0, 0.05)
    config = ModelConfig("adm-64", 3, "map", 0.5, 16, class_labels=labels, class_names=CLASSES)
    return LoadedModel(model.eval().requires_grad_(False), "eps", config, Path("run"))


def _one_hot(model, labels):
    """The denoiser with the label vectors written out (independent of exactps' label plumbing)."""
    return lambda m, noise: model(m, noise, class_labels=torch.eye(1000)[labels])


def _problem(labels=None):
    x0 = 0.5 * torch.randn(2, *SHAPE, generator=torch.Generator().manual_seed(4))
    return make_problem("inpaint-random", x0, ["a", "b"], 0.05, 0, labels=labels)


def test_posterior_samples_take_one_label_per_measurement(small):
    loaded = _loaded()
    g = torch.Generator().manual_seed(0)
    op = Inpaint(random_masks(SHAPE, 1, 0.5, g), SHAPE)  # one operator: one flat batch of J x B images
    x0 = 0.5 * torch.randn(2, *SHAPE, generator=g)
    y = op.measure(x0, 0.05, g)
    labels = torch.tensor([0, 1])
    kw = {"num_samples": 2, "nfe": 3, "sampler": "ddim", "generator": 7}
    xs = posterior_samples(loaded, op, y, 0.05, **kw, class_labels=labels)
    predict = PosteriorPredictor(_one_hot(loaded.model, labels.repeat(2)), VE(), op, y.repeat(2, 1, 1, 1), 0.05)
    ref = sample(predict, VE(), (4, *SHAPE), "ddim", 3, generator=torch.Generator().manual_seed(7)).x
    torch.testing.assert_close(xs, ref.reshape(2, 2, *SHAPE), rtol=1e-5, atol=1e-5)
    swapped = posterior_samples(loaded, op, y, 0.05, **kw, class_labels=labels.flip(0))
    assert not torch.allclose(swapped, xs, atol=1e-4)
    per_image = Inpaint(random_masks(SHAPE, 2, 0.5, g), SHAPE)  # one operator per measurement
    y2 = per_image.measure(x0, 0.05, g)
    kw = {"num_samples": 1, "nfe": 3, "sampler": "ddim", "generator": 3}
    xs2 = posterior_samples(loaded, per_image, y2, 0.05, **kw, class_labels=labels)
    ref2 = sample(PosteriorPredictor(_one_hot(loaded.model, labels[1:]), VE(), per_image.select(1), y2[1:], 0.05),
                  VE(), (1, *SHAPE), "ddim", 3, generator=_after_first(loaded, per_image, y2, labels)).x  # fmt: skip
    torch.testing.assert_close(xs2[:, 1], ref2, rtol=1e-5, atol=1e-5)
    with pytest.raises(ClassLabelsError, match="class-conditional prior used without labels"):
        posterior_samples(loaded, op, y, 0.05, nfe=3)
    unconditional = _loaded("uniform")
    unconditional.model_config.class_labels = None
    with pytest.raises(ClassLabelsError, match="is not class-conditional"):
        posterior_samples(unconditional, op, y, 0.05, nfe=3, class_labels=labels)


def _after_first(loaded, op, y, labels) -> torch.Generator:
    """Generator 3 after the first measurement's draws (sampled measurement by measurement)."""
    g = torch.Generator().manual_seed(3)
    predict = PosteriorPredictor(_one_hot(loaded.model, labels[:1]), VE(), op.select(0), y[:1], 0.05)
    sample(predict, VE(), (1, *SHAPE), "ddim", 3, generator=g)
    return g


def test_bench_methods_use_each_test_images_class(small):
    loaded = _loaded()
    labels = torch.tensor([1, 0])
    draw = model_methods(loaded, (1,), "heun")[0].draw
    out, _, _ = draw(_problem(labels), torch.Generator().manual_seed(5))
    problem = _problem(labels)
    x = initial_noise(VE(), (2, *SHAPE), torch.Generator().manual_seed(5), torch.float32, "cpu")
    predict = PosteriorPredictor(_one_hot(loaded.model, labels), VE(), problem.operator, problem.y, 0.05)
    torch.testing.assert_close(out, predict(x, torch.full((2,), VE().t_max)), rtol=1e-5, atol=1e-5)
    swapped, _, _ = draw(_problem(labels.flip(0)), torch.Generator().manual_seed(5))
    assert not torch.allclose(out, swapped, atol=1e-4)
    with pytest.raises(ClassLabelsError, match="without labels"):
        draw(_problem(), torch.Generator().manual_seed(5))


def _bench(test, out, *extra: str) -> list[str]:
    return ["bench", "images", "--test", str(test), "--tasks", "paper-inpaint-random", "--images", "4",
            "--samples", "2", "--baselines", "", "--no-tune", "--metrics", "psnr", "--device", "cpu",
            "--sampler", "ddim", "--no-progress", "--out", str(out), *extra]  # fmt: skip


def _train_run(tmp_path, data) -> str:
    run = tmp_path / "run"
    argv = ["train", "--data", str(data), "--size", "16", "--batch", "2", "--no-progress", "--task", "inpaint-random",
            "--objective", "eps", "--conditioning", "map", "--preset", "adm-64", "--class-labels", "folder",
            "--steps", "1", "--grid-every", "100", "--out", str(run)]  # fmt: skip
    assert main(argv) == 0
    return str(run)


def test_bench_images_with_the_true_class_of_each_test_image(small, tmp_path, monkeypatch, capsys):
    data, test = class_folder(tmp_path / "train"), class_folder(tmp_path / "test", 2)
    run = _train_run(tmp_path, data)
    out = tmp_path / "bench"
    assert main(_bench(test, out, "--eps", run, "--eps-nfe", "2", "--class-labels", "folder")) == 0
    rows = json.loads(out.with_suffix(".json").read_text())["rows"]
    assert len(rows) == 2 and all(r["psnr"] == r["psnr"] for r in rows)
    capsys.readouterr()
    assert main(_bench(test, tmp_path / "b1", "--eps", run, "--eps-nfe", "2")) == 2
    assert "class-conditional prior used without labels" in capsys.readouterr().err
    (test / "zebra").mkdir()
    assert main(_bench(test, tmp_path / "b2", "--eps", run, "--eps-nfe", "2", "--class-labels", "folder")) == 2
    assert "['zebra'] that are not among the 2 classes" in capsys.readouterr().err
    server = HubServer.offline(tmp_path, monkeypatch)
    assert main(_bench(test, tmp_path / "b3", "--prior", NAME, "--zero-shot-nfe", "1")) == 2
    assert "class-conditional prior used without labels" in capsys.readouterr().err
    assert main(_bench(test, tmp_path / "b4", "--prior", NAME, "--zero-shot-nfe", "1", "--class-labels", "folder")) == 2
    assert "numbers ImageNet's 1000 classes in sorted order, but --test" in capsys.readouterr().err
    assert server.requested == []  # refused before anything was fetched
    server.publish(NAME)
    uniform = _bench(test, tmp_path / "b5", "--prior", NAME, "--zero-shot-nfe", "1", "--class-labels", "uniform")
    assert main(uniform) == 0
    for k in range(1000 - 3):  # the published prior with the true class: every ImageNet class folder present
        (test / f"class{k:04d}").mkdir()
    assert main(_bench(test, tmp_path / "b6", "--prior", NAME, "--zero-shot-nfe", "1", "--class-labels", "folder")) == 0
