"""EDM's class-conditional ImageNet-64 ADM (deepinv's ``ADMUNet``) as an EPS denoiser, and its class labels.

EDM trained Dhariwal and Nichol's ADM U-Net with its own preconditioning (``sigma_data = 0.5``, pixels in
``[-1, 1]``), so the denoiser is the same matrix-valued preconditioning as :class:`~exactps.networks.EPSDenoiser`:

    D(m; S_t) = c_skip(S_t) m + c_out(S_t) F(c_in(S_t) m, log(rho)/4, e(label), [s_y features], [maps]),

at ``A = 0`` exactly deepinv's ``ADMUNet.forward(x, sigma, class_labels, input_in_minus_one_one=True)``.
The network is *class-conditional*: its embedding adds ``E l`` for a label vector ``l`` (one-hot over the
1000 ImageNet classes at training, ``E`` = ``map_label``, no bias). Using it without labels is refused by
name (:class:`ClassLabelsError`) before any work; ``class_labels`` (``ModelConfig.class_labels``,
``exactps train --class-labels``) says where the labels come from:

* ``folder`` (:data:`~exactps.classes.FOLDER_LABELS`): the true class of each image, passed with every call
  (``model(m, noise, class_labels=)``: class indices ``(B,)``, one-hot encoded here, or label vectors
  ``(B, K)``; :func:`exactps.classes.with_class_labels`), read from a folder with one sub-folder per class
  (:class:`exactps.data.ClassFolder`); a call without them is a :class:`ClassLabelsError`;
* ``uniform``: ``l = 1/K`` in every class, so ``E l`` is the mean class embedding (the network never saw
  it in training: an approximation of the unconditional prior, not EDM's model of it);
* ``zero``: ``l = 0``, no class embedding at all (also never seen in training).

With ``uniform`` or ``zero``, labels passed with a call still take precedence.

The ``s_y`` embedding enters through ADM's augmentation path (``map_augment``, a linear layer added to the
noise embedding before the embedding MLP, absent from the published checkpoint, which has no augmentation),
zero-initialised; the conditioning maps through the first convolution widened with zero-initialised channels
(:class:`~exactps.networks.EPSDenoiser`).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
from deepinv.models import ADMUNet
from torch import Tensor, nn

from exactps.classes import FOLDER_LABELS, ClassLabelsError
from exactps.covariance import PivotNoise
from exactps.networks import PRESETS, BackbonePreset, EPSDenoiser

__all__ = [
    "CLASS_LABELS",
    "EDM_ADM_MODEL_TYPE",
    "IMAGENET_CLASSES",
    "LABEL_CHOICES",
    "ADMUNetDenoiser",
    "ClassLabelsError",
    "build_admunet",
    "check_class_labels",
]

#: ``BackbonePreset.model_type`` of EDM's class-conditional ADM (deepinv's ``ADMUNet``).
EDM_ADM_MODEL_TYPE = "edm-adm"
#: The classes of EDM's ImageNet-64 checkpoint (the width of its label embedding's input).
IMAGENET_CLASSES = 1000


#: THE table of explicit label vectors for unconditional use: ``name -> (batch, K, like) -> (batch, K)``.
CLASS_LABELS: dict[str, Callable[[int, int, Tensor], Tensor]] = {
    "uniform": lambda batch, k, like: torch.full((batch, k), 1.0 / k, dtype=like.dtype, device=like.device),
    "zero": lambda batch, k, like: torch.zeros(batch, k, dtype=like.dtype, device=like.device),
}


#: Every choice of ``class_labels``: per-image labels from class folders, or a fixed vector of :data:`CLASS_LABELS`.
LABEL_CHOICES: tuple[str, ...] = (FOLDER_LABELS, *CLASS_LABELS)


def check_class_labels(model_type: str, class_labels: str | None, what: str = "this network") -> None:
    """Raise :class:`ClassLabelsError` naming the problem: a class-conditional ``model_type`` without a
    choice of :data:`LABEL_CHOICES`, an unknown choice, or a choice for a network that takes no labels."""
    conditional = model_type == EDM_ADM_MODEL_TYPE
    if conditional and class_labels is None:
        raise ClassLabelsError(
            f"class-conditional prior used without labels: {what} takes one of {IMAGENET_CLASSES} class labels per "
            f"image; say where they come from: --class-labels {FOLDER_LABELS} (the true class of each image, from "
            "a folder with one sub-folder per class), or, to use it unconditionally, --class-labels "
            f"{' or '.join(CLASS_LABELS)} (uniform: the mean class embedding; zero: none)"
        )
    if conditional and class_labels not in LABEL_CHOICES:
        raise ClassLabelsError(f"class labels must be one of {', '.join(LABEL_CHOICES)}, got {class_labels!r}")
    if not conditional and class_labels is not None:
        raise ClassLabelsError(f"{what} is not class-conditional: --class-labels {class_labels} does not apply")


def build_admunet(
    preset: str | BackbonePreset, channels: int = 3, augment_dim: int = 0, sigma_data: float = 0.5
) -> ADMUNet:
    """deepinv's ``ADMUNet`` with the architecture of an ``edm-adm`` preset and :data:`IMAGENET_CLASSES`
    labels, random weights, on ``[-1, 1]`` pixels; ``augment_dim`` adds the (zero-initialised) ``s_y`` path."""
    p = PRESETS[preset] if isinstance(preset, str) else preset
    if p.model_type != EDM_ADM_MODEL_TYPE:
        raise ValueError(f"an ADMUNet needs an {EDM_ADM_MODEL_TYPE!r} preset, not {p}")
    net = ADMUNet(
        img_resolution=p.img_resolution,
        in_channels=channels,
        out_channels=channels,
        label_dim=IMAGENET_CLASSES,
        augment_dim=augment_dim,
        model_channels=p.model_channels,
        channel_mult=p.channel_mult,
        channel_mult_emb=p.channel_mult_emb,
        num_blocks=p.num_blocks,
        attn_resolutions=p.attn_resolutions,
        dropout=p.dropout,
        pretrained=None,
        _was_trained_on_minus_one_one=True,
        pixel_std=sigma_data,
    )
    if augment_dim:
        nn.init.zeros_(net.map_augment.weight)
    return net.train()


class ADMUNetDenoiser(EPSDenoiser):
    """EDM's class-conditional ADM as an EPS denoiser (module docstring); ``class_labels`` is one of
    :data:`LABEL_CHOICES` (None is refused: :class:`ClassLabelsError`)."""

    def __init__(
        self,
        preset: str | BackbonePreset = "adm-64",
        channels: int = 3,
        conditioning: str = "scalar",
        sigma_data: float = 0.5,
        class_labels: str | None = None,
        **overrides: Any,
    ):
        name = preset if isinstance(preset, str) else "an edm-adm preset"
        check_class_labels(EDM_ADM_MODEL_TYPE, class_labels, f"EDM's class-conditional ADM ({name})")
        self.class_labels = class_labels
        super().__init__(preset, channels, conditioning, sigma_data, **overrides)

    def build_network(self) -> nn.Module:
        return build_admunet(self.preset, self.channels, self.embed_dim, self.sigma_data)

    def sigma_y_features(self, noise: PivotNoise, like: Tensor) -> Tensor:
        """The positional embedding of ``log(s_y)/4`` at unit scale: ``map_augment`` does not multiply its
        input by ``sqrt(dim)`` as DDPM++'s label path does, so the base class's division is undone."""
        return super().sigma_y_features(noise, like) * math.sqrt(self.embed_dim)

    def class_vectors(self, class_labels: Tensor | None, like: Tensor) -> Tensor:
        """The ``(B, K)`` label vectors: one-hot of class indices ``(B,)``, label vectors ``(B, K)`` as they
        are, or without labels the fixed vector of :data:`CLASS_LABELS` ``[class_labels]``
        (:class:`ClassLabelsError` for a network that needs per-image labels)."""
        batch = like.shape[0]
        if class_labels is None:
            if self.class_labels == FOLDER_LABELS:
                raise ClassLabelsError(
                    f"class-conditional prior used without labels: this network takes the class of each image "
                    f"(--class-labels {FOLDER_LABELS}); pass them (class_labels=, or a test folder with one "
                    "sub-folder per class)"
                )
            return CLASS_LABELS[self.class_labels](batch, IMAGENET_CLASSES, like)  # type: ignore[index]
        if class_labels.shape[0] != batch:
            raise ClassLabelsError(f"{class_labels.shape[0]} class labels for {batch} images")
        if not class_labels.is_floating_point():
            if class_labels.ndim != 1 or not bool(((class_labels >= 0) & (class_labels < IMAGENET_CLASSES)).all()):
                raise ClassLabelsError(f"class indices must be (B,) in [0, {IMAGENET_CLASSES}), got {class_labels}")
            return torch.nn.functional.one_hot(class_labels.long(), IMAGENET_CLASSES).to(like.dtype)
        if class_labels.shape != (batch, IMAGENET_CLASSES):
            raise ClassLabelsError(f"label vectors must be (B, {IMAGENET_CLASSES}), got {tuple(class_labels.shape)}")
        return class_labels.to(like.dtype)

    def forward_network(self, x: Tensor, c_noise: Tensor, labels: Tensor | None, classes: Tensor | None) -> Tensor:
        """deepinv's ``forward_unet``: the label vectors as class labels, the ``s_y`` features as augmentation."""
        return self.net.forward_unet(x, c_noise, class_labels=classes, augment_labels=labels)

    def conditioning_keys(self) -> list[str]:
        """The zero-initialised weights: the ``s_y`` path (``map_augment``) and the widened convolution."""
        return [k for k in self.state_dict() if k.startswith("net.map_augment.") or k.endswith("extra_weight")]

