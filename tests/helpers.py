"""Helpers shared by several test files (``from helpers import ...``: pytest puts ``tests/`` on ``sys.path``).

* the MLP models on 8-pixel images ``(1, 2, 4)`` drawn from a Gaussian mixture, with a task registry of
  random inpainting masks, and trainers built from them (they run in seconds on a CPU);
* the ``tiny`` U-Net runs at 16x16 (:func:`train_tiny`, behind the ``runs`` fixture of ``conftest.py``)
  and the images and picture files the sampling tests feed them;
* EDM's class-conditional ADM shrunk to 16x16 (:func:`shrink_adm`, :func:`random_adm`) and folders of
  pictures with one sub-folder per class (:func:`class_folder`);
* :class:`HubServer`: deepinv's Hugging Face repository, offline (published priors written locally, only
  ``torch.hub.download_url_to_file`` redirected to them).
"""

from __future__ import annotations

import json
import shutil
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from exactps.admunet import EDM_ADM_MODEL_TYPE, build_admunet
from exactps.covariance import SpectralNoise
from exactps.models import ModelConfig
from exactps.networks import PRESETS, VP_MODEL_TYPES, build_backbone
from exactps.operators import Inpaint, random_masks
from exactps.priors import GaussianMixture
from exactps.published import PublishedPrior, get_published
from exactps.tasks import TASKS, Task
from exactps.train import TrainConfig, Trainer, run_training
from exactps.vpnets import build_adm_unet

SHAPE = (1, 2, 4)
D = 8
SD = 0.5
IMAGE_SHAPE = (3, 16, 16)  # the tiny U-Net runs
TESTS_DIR = Path(__file__).resolve().parent


# -- small models ---------------------------------------------------------------------------------------


def _levels(v: torch.Tensor, lo: float, hi: float, batch: int) -> torch.Tensor:
    return torch.broadcast_to(v.reshape(-1), (batch,)).clamp(lo, hi).log().unsqueeze(1) / 4


def _mlp(n_in: int, n_out: int, width: int, depth: int, dropout: float = 0.0) -> nn.Sequential:
    layers: list[nn.Module] = []
    d = n_in
    for _ in range(depth):
        layers += [nn.Linear(d, width), nn.SiLU()]
        if dropout:
            layers.append(nn.Dropout(dropout))
        d = width
    layers.append(nn.Linear(d, n_out))
    return nn.Sequential(*layers)


class MLPEPS(nn.Module):
    """EPS denoiser for 8-pixel images: ``F(c_in(S) m, mask, log rho, log s_y)`` with the matrix EDM
    preconditioning ``D = c_skip(S) m + c_out(S) F`` (``S`` diagonal for inpainting)."""

    def __init__(self, width: int = 64, depth: int = 2, dropout: float = 0.0):
        super().__init__()
        self.net = _mlp(2 * D + 2, D, width, depth, dropout)

    def forward(self, m: torch.Tensor, noise) -> torch.Tensor:
        batch = m.shape[0]
        if isinstance(noise, SpectralNoise):
            mask = noise.operator.physics.mask.expand(m.shape).flatten(1).to(m.dtype)
        else:
            mask = torch.zeros(batch, D, dtype=m.dtype, device=m.device)
        x = noise.apply(lambda l: torch.rsqrt(SD**2 + l), m).flatten(1)
        feats = [x, mask, _levels(noise.rho, 1e-5, 1e5, batch), _levels(noise.sigma_y, 1e-3, 1e3, batch)]
        out = self.net(torch.cat(feats, 1)).reshape(m.shape)
        skip = noise.apply(lambda l: SD**2 / (SD**2 + l), m)
        return skip + noise.apply(lambda l: SD * torch.rsqrt(1 + SD**2 / l), out)


class MLPConditionalBackbone(nn.Module):
    """``(x (B, 2, 2, 4), rho, s_y) -> F (B, 1, 2, 4)`` for :class:`ConditionalDenoiser`."""

    def __init__(self, width: int = 64, depth: int = 2):
        super().__init__()
        self.net = _mlp(2 * D + 2, D, width, depth)

    def forward(self, x: torch.Tensor, rho: torch.Tensor, sigma_y: torch.Tensor) -> torch.Tensor:
        b = x.shape[0]
        feats = [x.flatten(1), _levels(rho, 1e-5, 1e5, b), _levels(sigma_y, 1e-3, 1e3, b)]
        return self.net(torch.cat(feats, 1)).reshape(b, *SHAPE)


def inpaint_tasks(p_missing: float = 0.5) -> dict[str, Task]:
    """A task registry for :class:`Trainer`: ``inpaint-random`` draws an inpainting mask per sample
    (``p_missing`` of the pixels missing); ``none`` is the standard ``A = 0``."""

    def build(img_shape, generator, dtype, batch):
        return Inpaint(random_masks(img_shape, batch, p_missing, generator).to(dtype), img_shape)

    return {"inpaint-random": Task("inpaint", build, random=True), "none": TASKS["none"]}


def gmm_prior(seed: int = 0, n_components: int = 4) -> GaussianMixture:
    return GaussianMixture.random(SHAPE, n_components, torch.Generator().manual_seed(seed))


def small_config(**kw) -> TrainConfig:
    base = {
        "objective": "eps",
        "tasks": ("inpaint-random",),
        "sigma_y": (0.02, 0.2),
        "batch_size": 32,
        "lr": 2e-3,
        "warmup_steps": 5,
        "ema_decay": 0.99,
        "steps": 10,
        "log_every": 1000,
        "ckpt_every": 1000,
        "grid_every": 1000,
        "keep_checkpoints": 0,
    }
    base.update(kw)
    return TrainConfig(**base)


def make_trainer(out=None, *, model_seed: int = 0, dropout: float = 0.1, resume: bool = False, **kw) -> Trainer:
    """An MLP EPS trainer (dropout on, so resume must also restore the dropout masks)."""
    torch.manual_seed(model_seed)
    model = MLPEPS(dropout=dropout)
    cfg = small_config(**kw)
    return Trainer(model, cfg, out, resume=resume, tasks=inpaint_tasks(), show_progress=False)


def _state_equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


# -- tiny U-Net runs and picture files ------------------------------------------------------------------------


def train_tiny(out: Path, objective: str) -> Path:
    """A ``tiny`` U-Net run at 16x16 trained for 2 steps (large learning rate, so that every weight, the
    near-zero initial output layer included, is far from its initialisation)."""
    cfg = TrainConfig(
        objective=objective,
        tasks=("inpaint-random", "sr4"),
        sigma_y=(0.02, 0.2),
        batch_size=2,
        steps=2,
        lr=1e-2,
        warmup_steps=1,
        log_every=100,
        ckpt_every=100,
        grid_every=100,
    )
    mcfg = ModelConfig("tiny", 3, "none" if objective == "denoiser" else "map", 0.5, 16)
    data = torch.rand(8, *IMAGE_SHAPE, generator=torch.Generator().manual_seed(0)) * 2 - 1
    run_training(cfg, mcfg, data, out, device="cpu", show_progress=False)
    return out


def _x0(batch: int = 2, seed: int = 0) -> torch.Tensor:
    return torch.rand(batch, *IMAGE_SHAPE, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def _png(path: Path, array: np.ndarray) -> Path:
    Image.fromarray(array).save(path)
    return path


def _rgb(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


# -- diffusers folders ---------------------------------------------------------------------------------------


def save_diffusers_unet(root: Path, prediction: str = "epsilon", beta_schedule: str = "linear", seed: int = 0):
    """Save a small random ``UNet2DModel`` (16x16, widths 32 and 64, one attention level) and a ``DDPMScheduler``
    the way diffusers saves a pipeline (``model_index.json``, ``unet/``, ``scheduler/``); return both, the
    U-Net in eval mode. Every weight is perturbed (the output convolution starts at zero in some versions)."""
    import diffusers

    torch.manual_seed(seed)
    unet = diffusers.UNet2DModel(
        sample_size=16, in_channels=3, out_channels=3, layers_per_block=1, block_out_channels=(32, 64),
        down_block_types=("DownBlock2D", "AttnDownBlock2D"), up_block_types=("AttnUpBlock2D", "UpBlock2D"),
        norm_num_groups=8,
    )  # fmt: skip
    with torch.no_grad():
        for p in unet.parameters():
            p.add_(0.05 * torch.randn_like(p))
    unet.save_pretrained(root / "unet")
    sched = diffusers.DDPMScheduler(
        num_train_timesteps=1000, beta_schedule=beta_schedule, prediction_type=prediction, clip_sample=False
    )
    sched.save_pretrained(root / "scheduler")
    (root / "model_index.json").write_text(
        json.dumps({"_class_name": "DDPMPipeline", "unet": ["diffusers", "UNet2DModel"]})
    )
    return unet.eval(), sched


# -- published priors, offline ---------------------------------------------------------------------------


def source_network(prior: PublishedPrior) -> nn.Module:
    """A randomly initialised network of ``prior``'s architecture (its preset), as its source builds it."""
    if PRESETS[prior.preset].model_type in VP_MODEL_TYPES:
        return build_adm_unet(prior.preset, prior.channels)
    if PRESETS[prior.preset].model_type == EDM_ADM_MODEL_TYPE:
        return build_admunet(prior.preset, prior.channels, sigma_data=prior.sigma_data)
    return build_backbone(prior.preset, prior.channels, prior.channels, prior.label_dim, prior.sigma_data)


class HubServer:
    """A stand-in for deepinv's Hugging Face repository: files by name, and the URLs asked for."""

    def __init__(self, root: Path):
        self.root = root
        self.requested: list[str] = []
        root.mkdir()

    def download(self, url: str, dst: str, hash_prefix: str | None = None, progress: bool = True) -> None:
        self.requested.append(url)
        name = url.split("?")[0].rsplit("/", 1)[-1]
        if not (self.root / name).exists():
            raise OSError(f"HTTP Error 404: {name}")
        shutil.copyfile(self.root / name, dst)

    def publish(self, name: str, seed: int = 0) -> nn.Module:
        """Save a random network of ``name``'s architecture as deepinv's file (``torch.save`` of the state
        dict under deepinv's file name); return it in eval mode."""
        prior = get_published(name)
        torch.manual_seed(seed)
        net = source_network(prior)
        with torch.no_grad():  # randomise the zero-initialised layers too: every weight must matter
            for p in net.parameters():
                p.add_(0.05 * torch.randn_like(p))
        torch.save(net.state_dict(), self.root / prior.file_name)
        return net.eval()

    @classmethod
    def offline(cls, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> HubServer:
        """An empty hub cache under ``tmp_path`` and the download served from ``tmp_path/server`` (both
        undone by ``monkeypatch``)."""
        monkeypatch.setattr(torch.hub, "_hub_dir", str(tmp_path / "hub"))
        server = cls(tmp_path / "server")
        monkeypatch.setattr(torch.hub, "download_url_to_file", server.download)
        return server


# -- EDM's class-conditional ADM, shrunk, and class folders -----------------------------------------------------

#: the classes of :func:`class_folder`, whose pixels say which: ``dark`` below mid-grey, ``light`` above
CLASSES = ["dark", "light"]


def shrink_adm(monkeypatch: pytest.MonkeyPatch) -> None:
    """``adm-64`` at 16x16 with two levels (cheap random networks; deepinv's ``ADMUNet`` key names)."""
    small = replace(PRESETS["adm-64"], img_resolution=16, model_channels=64, channel_mult=(1, 2), num_blocks=1,
                    attn_resolutions=(8,), dropout=0.0)  # fmt: skip
    monkeypatch.setitem(PRESETS, "adm-64", small)


def random_adm(seed: int = 0) -> nn.Module:
    """deepinv's ``ADMUNet`` of ``adm-64`` with every weight random (the zero-initialised ones included)."""
    torch.manual_seed(seed)
    net = build_admunet("adm-64")
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return net.eval()


def class_folder(root: Path, per_class: int = 3, size: int = 16) -> Path:
    """``root/dark`` and ``root/light`` (:data:`CLASSES`), ``per_class`` PNGs each; the class is in the pixels."""
    rng = np.random.default_rng(0)
    for k, name in enumerate(CLASSES):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            pixels = rng.integers(0, 100, (size, size, 3)) + 150 * k  # dark: 0..99, light: 150..249
            Image.fromarray(pixels.astype(np.uint8)).save(root / name / f"{i}.png")
    return root


def checkpointed_pair(
    model: nn.Module, ckpt: nn.Module, first_layer, m: torch.Tensor, noise
) -> tuple[list, list, list]:
    """Run ``model`` and its gradient-checkpointed copy ``ckpt`` forward and backward on ``(m, noise)`` under
    the same random draws (dropout masks); return both outputs, both ``[(name, grad)]`` lists, and how many
    times ``first_layer(net)`` (a layer inside a checkpointed block) ran in each: ``[1, 2]`` when the block is
    recomputed in the backward pass."""
    outs, grads, calls = [], [], []
    for net in (model, ckpt):
        torch.manual_seed(3)
        net.zero_grad()
        count: list[int] = []
        handle = first_layer(net).register_forward_hook(lambda *_, count=count: count.append(1))
        out = net(m, noise)
        out.square().mean().backward()
        handle.remove()
        outs.append(out.detach())
        grads.append([(name, p.grad.clone()) for name, p in net.named_parameters()])
        calls.append(len(count))
    return outs, grads, calls
