"""The models shipped in ``models/``: each restores better than no model at all, on scikit-image's
photographs, never on the training data: the natural-image models on the test split of
:func:`exactps.data.builtin_crops`, the face models on 8 crops around the face in ``astronaut``.

- EPS models: for each of the five ``paper-*`` tasks, the mean of 8 posterior samples (Heun, 20 NFE)
  has a higher PSNR than the measurement's view ``A⁺y`` (the no-model reference), averaged over images
  (slow; the default suite checks two tasks with 4 samples).
  One known shortfall, reported in the README: ``natural-32-eps`` on ``paper-sr4`` stays about 0.8 dB
  below the nearest-neighbour view of these smooth crops (24.6 against 25.4 dB); the test holds it to
  within 1.5 dB so that it cannot get worse unnoticed.
- Priors: the denoiser ``D(x + sigma n; sigma)`` has a higher PSNR than the noisy input at every sigma.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from exactps.data import builtin_crops, builtin_face_crops
from exactps.inference import posterior_samples
from exactps.loading import load_model
from exactps.metrics import psnr
from exactps.posterior import measurement_image
from exactps.tasks import PAPER_TASKS, TASKS

MODELS = Path(__file__).resolve().parents[1] / "models"
EPS_MODELS = ["faces-32-eps", "natural-32-eps"]
PRIORS = ["faces-32-prior", "natural-32-prior"]
#: (model, task) -> the margin (dB) its PSNR may fall below the no-model view's (see the docstring).
KNOWN_SHORTFALL = {("natural-32-eps", "paper-sr4"): -1.5}


def _load(name: str):
    if not (MODELS / f"{name}.json").exists():
        pytest.fail(f"models/{name}.json is missing: the shipped models are part of the repository")
    model = load_model(MODELS / name, device="cpu")
    size = model.model_config.image_size
    if name.startswith("faces"):
        return model, builtin_face_crops(size)
    return model, builtin_crops(8, size, torch.Generator().manual_seed(0), split="test")


def test_shipped_models_are_small():
    for path in MODELS.glob("*.safetensors"):
        assert path.stat().st_size <= 10 * 2**20, path


def _check_beats_the_view(name: str, tasks: tuple[str, ...], samples: int) -> None:
    model, x0 = _load(name)
    for task in tasks:
        g = torch.Generator().manual_seed(1)
        op = TASKS[task].build(tuple(x0.shape[1:]), g, torch.float32, x0.shape[0])
        y = op.measure(x0, 0.05, g)
        xs = posterior_samples(model, op, y, 0.05, num_samples=samples, sampler="heun", nfe=20, generator=2)
        ours = psnr(xs.clamp(-1, 1).mean(0), x0).mean()
        view = psnr(measurement_image(op, y, 0.05).clamp(-1, 1), x0).mean()
        assert ours > view + KNOWN_SHORTFALL.get((name, task), 0.3), (task, float(ours), float(view))


@pytest.mark.slow
@pytest.mark.parametrize("name", EPS_MODELS)
def test_eps_models_beat_the_measurement_view_on_every_paper_task(name):
    _check_beats_the_view(name, PAPER_TASKS, 8)


@pytest.mark.parametrize("name", EPS_MODELS)
def test_eps_models_beat_the_measurement_view_quick(name):
    """The default suite's share of the check above: two tasks, 4 samples (margins of 2 dB or more here)."""
    _check_beats_the_view(name, ("paper-inpaint-box", "paper-deblur-gauss"), 4)


@pytest.mark.parametrize("name", PRIORS)
def test_priors_denoise(name):
    model, x0 = _load(name)
    for sigma in (0.1, 0.3, 1.0):
        noisy = x0 + sigma * torch.randn(x0.shape, generator=torch.Generator().manual_seed(3))
        with torch.no_grad():
            denoised = model.model.denoise(noisy, sigma)
        assert psnr(denoised.clamp(-1, 1), x0).mean() > psnr(noisy, x0).mean() + 1.0, sigma
