"""Published diffusion priors by name: THE table of the checkpoints EPS can be fine-tuned from.

A published prior is an unconditional denoiser ``D(x; sigma^2 I)`` whose weights deepinv loads by name.
``exactps train --init NAME`` fine-tunes it into an EPS denoiser (same architecture, the conditioning
weights added at zero: METHOD.md, "The EPS denoiser"), and ``exactps bench images --prior NAME`` runs
the training-free baselines (and the zero-shot pivot) on it.

Every entry of :data:`PUBLISHED` says which backbone preset of :mod:`exactps.networks` holds the
weights, how deepinv fetches them (its own loader: ``torch.hub.load_state_dict_from_url`` on deepinv's
Hugging Face repository, cached under ``torch.hub.get_dir()/checkpoints``), the pixel range and data
standard deviation the network was trained with, its resolution and its number of class labels.

EDM's checkpoints (DDPM++ / NCSN++ presets) were trained on images in ``[-1, 1]`` (exactps' range,
:data:`IMAGE_RANGE`) with EDM's preconditioning at ``sigma_data = 0.5``:

    D(x; sigma) = c_skip x + c_out F(c_in x, log(sigma)/4),
    c_skip = sd^2/(sd^2+sigma^2), c_out = sigma sd/sqrt(sd^2+sigma^2), c_in = 1/sqrt(sd^2+sigma^2),

which is :class:`~exactps.networks.EPSDenoiser` at ``A = 0`` with ``sigma_data = sd``, so a loaded prior
with zero conditioning weights computes the published denoiser exactly. The weights are read through
deepinv (``NCSNpp(pretrained=NAME)``), so any key conversion deepinv applies is applied here too.

Guided diffusion's 256x256 checkpoints (``adm`` presets: deepinv's ``DiffUNet``; the FFHQ one of DPS and
the unconditional ImageNet one that DPS, DDRM, DiffPIR and DAPS report with) predict ``eps`` on DDPM's
linear schedule, also on ``[-1, 1]``; their denoiser is ``D(x; sigma) = x - sigma eps(x/sqrt(1+sigma^2),
k(sigma))`` (:mod:`exactps.vpnets`, :class:`~exactps.vpnets.ADMDenoiser`). deepinv's loader
(``deepinv.models.utils.load_state_dict_from_url`` on the URL ``DiffUNet(pretrained="download")`` uses)
fetches them, and they are loaded strictly into deepinv's ``DiffUNet``. Their ``sigma_data`` is the data
standard deviation of the EPS training loss only (their preconditioning does not use it).

EDM's class-conditional ImageNet-64 ADM (``edm-imagenet64-cond``, preset ``adm-64``, deepinv's ``ADMUNet``)
has EDM's preconditioning and 1000 class labels (``label_dim``): it is used only with an explicit label
vector (:mod:`exactps.admunet`), and refused by name without one before anything is fetched.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from deepinv.models.utils import get_weights_url, load_state_dict_from_url
from torch import Tensor

from exactps.admunet import IMAGENET_CLASSES, build_admunet
from exactps.networks import PRESETS, build_backbone
from exactps.vpnets import build_adm_unet

__all__ = [
    "IMAGE_RANGE",
    "PUBLISHED",
    "PublishedPrior",
    "PublishedPriorError",
    "cached_file",
    "check_fits",
    "get_published",
    "is_published",
    "published_names",
    "published_state_dict",
]

#: The pixel range of exactps' images (and of every published prior it accepts).
IMAGE_RANGE = (-1.0, 1.0)


class PublishedPriorError(ValueError):
    """A published prior name is unknown, cannot be fetched, or does not fit the network asked for."""


#: ``loader(name, prior) -> state dict`` (deepinv's keys): fetches a published prior's weights.
Loader = Callable[[str, "PublishedPrior"], dict[str, Tensor]]


@dataclass(frozen=True)
class PublishedPrior:
    """One entry of :data:`PUBLISHED`.

    ``preset``: the backbone preset (:data:`exactps.networks.PRESETS`) that holds the weights;
    ``loader``: how deepinv fetches them; ``file_name``: deepinv's name for the file (its URL and cache
    entry); ``data``: what it was trained on; ``pixel_range`` and ``sigma_data``: the pixel range and data
    standard deviation of its preconditioning; ``label_dim``: class labels (0: unconditional);
    ``channels``: image channels. The resolution is the preset's.
    """

    preset: str
    loader: Loader
    file_name: str
    data: str
    pixel_range: tuple[float, float] = IMAGE_RANGE
    sigma_data: float = 0.5
    label_dim: int = 0
    channels: int = 3
    repository: str = "edm"  # deepinv's Hugging Face repository of the file

    @property
    def resolution(self) -> int:
        """The image size it was trained at (its preset's)."""
        return PRESETS[self.preset].img_resolution

    @property
    def url(self) -> str:
        """Where deepinv downloads the file from."""
        return get_weights_url(model_name=self.repository, file_name=self.file_name)


def _deepinv_ncsnpp(name: str, prior: PublishedPrior) -> dict[str, Tensor]:
    """The state dict of deepinv's ``NCSNpp(pretrained=name)`` built with the preset's architecture
    (deepinv downloads, caches and strictly loads the file)."""
    with torch.random.fork_rng(devices=[]):  # building initialises random weights first
        net = build_backbone(prior.preset, prior.channels, prior.channels, prior.label_dim, prior.sigma_data, name)
    return net.state_dict()


def _deepinv_diffunet(name: str, prior: PublishedPrior) -> dict[str, Tensor]:
    """The state dict of guided diffusion's checkpoint, fetched and cached by deepinv's loader (the URL
    ``DiffUNet(pretrained="download")`` reads) and strictly loaded into deepinv's ``DiffUNet`` of the
    entry's preset."""
    state = load_state_dict_from_url(prior.url, map_location="cpu", file_name=prior.file_name)
    with torch.random.fork_rng(devices=[]):
        net = build_adm_unet(prior.preset, prior.channels)
    net.load_state_dict(state, strict=True)
    return net.state_dict()


def _deepinv_admunet(name: str, prior: PublishedPrior) -> dict[str, Tensor]:
    """The state dict of EDM's class-conditional ImageNet-64 ADM, fetched and cached by deepinv's loader (the
    file ``ADMUNet(pretrained="edm-imagenet64-cond")`` reads) and strictly loaded into deepinv's ``ADMUNet``
    of the entry's preset with its 1000 labels (passed explicitly: deepinv sets them only for some names)."""
    state = load_state_dict_from_url(prior.url, map_location="cpu", file_name=prior.file_name)
    with torch.random.fork_rng(devices=[]):
        net = build_admunet(prior.preset, prior.channels, sigma_data=prior.sigma_data)
    net.load_state_dict(state, strict=True)
    return net.state_dict()


#: THE table of published priors (deepinv's names for EDM's checkpoints; guided diffusion's by their data).
PUBLISHED: dict[str, PublishedPrior] = {
    "edm-ffhq-64x64-uncond-vp": PublishedPrior("base-64", _deepinv_ncsnpp, "edm-ffhq-64x64-uncond-vp.pt", "FFHQ 64x64"),
    "edm-ffhq-64x64-uncond-ve": PublishedPrior("ncsn-64", _deepinv_ncsnpp, "edm-ffhq-64x64-uncond-ve.pt", "FFHQ 64x64"),
    "edm-cifar10-32x32-uncond-vp": PublishedPrior(
        "base-32", _deepinv_ncsnpp, "edm-cifar10-32x32-uncond-vp.pt", "CIFAR-10 32x32"
    ),
    "edm-cifar10-32x32-uncond-ve": PublishedPrior(
        "ncsn-32", _deepinv_ncsnpp, "edm-cifar10-32x32-uncond-ve.pt", "CIFAR-10 32x32"
    ),
    "diffunet-ffhq-256": PublishedPrior(
        "adm-256", _deepinv_diffunet, "diffusion_ffhq_10m.pt", "FFHQ 256x256 (DPS's ffhq_10m.pt)", repository="diffunet"
    ),
    "diffunet-imagenet-256": PublishedPrior(
        "adm-large-256",
        _deepinv_diffunet,
        "diffusion_openai.pt",
        "ImageNet 256x256 (guided diffusion's 256x256_diffusion_uncond.pt)",
        repository="diffunet",
    ),
    "edm-imagenet64-cond": PublishedPrior(
        "adm-64",
        _deepinv_admunet,
        "adm-imagenet64-cond.pt",
        "ImageNet 64x64, class-conditional (EDM's ADM; labels: exactps.admunet)",
        label_dim=IMAGENET_CLASSES,
    ),
}


def published_names() -> tuple[str, ...]:
    """The names of :data:`PUBLISHED`."""
    return tuple(PUBLISHED)


def is_published(spec: str | Path | None) -> bool:
    """Whether ``spec`` names a published prior (an existing file of that name wins)."""
    return spec is not None and str(spec) in PUBLISHED and not Path(spec).exists()


def get_published(name: str) -> PublishedPrior:
    """The entry called ``name``; :class:`PublishedPriorError` listing the names otherwise."""
    try:
        return PUBLISHED[name]
    except (KeyError, TypeError):
        raise PublishedPriorError(
            f"unknown published prior {name!r}; choose one of {', '.join(PUBLISHED)} (or give a weights file)"
        ) from None


def cached_file(name: str) -> Path:
    """Where deepinv keeps the downloaded file of ``name`` (``torch.hub.get_dir()/checkpoints``)."""
    return Path(torch.hub.get_dir()) / "checkpoints" / get_published(name).file_name


def published_state_dict(name: str) -> dict[str, Tensor]:
    """The weights of the published prior ``name`` (deepinv's backbone keys), fetched by deepinv.

    Raises :class:`PublishedPriorError` for an unknown name, a pixel range other than
    :data:`IMAGE_RANGE`, a failed download (saying where to put the file by hand) or a file that does
    not hold the entry's architecture.
    """
    prior = get_published(name)
    if tuple(prior.pixel_range) != IMAGE_RANGE:
        raise PublishedPriorError(f"{name} expects pixels in {prior.pixel_range}; exactps images span {IMAGE_RANGE}")
    try:
        return prior.loader(name, prior)
    except RuntimeError as err:  # strict load_state_dict
        raise PublishedPriorError(
            f"{cached_file(name)} does not hold {name} (a {prior.preset!r} network): {err}"
        ) from err
    except OSError as err:  # no connection, HTTP errors (deepinv's DownloadError is one)
        raise PublishedPriorError(
            f"could not fetch {name} from {prior.url} ({err}); without internet, download that file elsewhere "
            f"and copy it to {cached_file(name)}"
        ) from err


def check_fits(name: str, preset: str | None, channels: int | None, sigma_data: float) -> None:
    """Raise :class:`PublishedPriorError` unless a network with ``preset`` (None: the prior's), ``channels``
    image channels (None: the prior's) and ``sigma_data`` can be initialised from ``name`` (before any
    work). The training image size is free: the U-Net is convolutional."""
    prior = get_published(name)
    problems = []
    if preset is not None and preset != prior.preset:
        problems.append(f"its architecture is preset {prior.preset!r}, not {preset!r}")
    if channels is not None and channels != prior.channels:
        problems.append(f"it has {prior.channels} channels, not {channels}")
    if sigma_data != prior.sigma_data:
        problems.append(f"it was trained with sigma_data {prior.sigma_data}, not {sigma_data}")
    if problems:
        raise PublishedPriorError(f"cannot initialise from {name}: {'; '.join(problems)}")
