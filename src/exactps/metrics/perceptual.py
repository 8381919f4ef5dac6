"""LPIPS (Zhang et al. 2018), AlexNet backbone with the v0.1 linear layers: the ``lpips`` package's definition,
with the AlexNet weights read from local files so that it runs offline.

``d(x, r) = sum_l 1/(H_l W_l) sum_{h,w} |w_l ⊙ (f_l(x)_{hw} - f_l(r)_{hw})|²``, where ``f_l`` are the
channel-normalised activations of the five AlexNet conv layers (after ReLU) and ``w_l`` the learned
per-channel weights (v0.1).

Weights (first found): the ``weights`` argument, the environment variable ``EXACTPS_LPIPS_WEIGHTS``, else
torchvision's pretrained AlexNet (a download on first use). A weights directory holds
``alexnet_features.safetensors`` (torchvision's ``features.N.*`` keys) and ``lpips_alex_v0.1.safetensors``
(``linK.model.1.weight``), as in the project's ``shared/weights``.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from types import ModuleType

from torch import Tensor, nn

from exactps.metrics._checks import check_pair, optional_import

__all__ = ["ALEXNET_FILE", "LINEAR_FILE", "LPIPS", "WEIGHTS_ENV", "lpips_weight_files"]

WEIGHTS_ENV = "EXACTPS_LPIPS_WEIGHTS"
ALEXNET_FILE = "alexnet_features.safetensors"
LINEAR_FILE = "lpips_alex_v0.1.safetensors"
_CONV_SLICE = {0: 1, 3: 2, 6: 3, 8: 4, 10: 5}  # torchvision ``features`` index -> lpips ``sliceK``
_ALIASES = ("scaling_layer", "lins.")  # constant buffers, and aliases of ``linK`` (the same modules)


def lpips_weight_files(weights: str | os.PathLike | None = None) -> tuple[Path, Path] | None:
    """The AlexNet and linear-layer files in ``weights``, else in ``$EXACTPS_LPIPS_WEIGHTS``; None if neither is set.

    Raises ``FileNotFoundError`` naming the first missing file."""
    if weights is not None:
        directory, source = Path(weights), "the weights argument"
    elif os.environ.get(WEIGHTS_ENV):
        directory, source = Path(os.environ[WEIGHTS_ENV]), f"${WEIGHTS_ENV}"
    else:
        return None
    files = (directory / ALEXNET_FILE, directory / LINEAR_FILE)
    for f in files:
        if not f.is_file():
            raise FileNotFoundError(f"LPIPS weights file {f} does not exist (directory from {source})")
    return files


def _lpips_state_dict(alexnet_file: Path, linear_file: Path) -> dict[str, Tensor]:
    """Both files as one state dict of ``lpips.LPIPS(net='alex')``: ``features.N.*`` → ``net.sliceK.N.*``."""
    from safetensors.torch import load_file

    state = {}
    for key, value in load_file(alexnet_file).items():
        parts = key.split(".")
        if len(parts) != 3 or parts[0] != "features" or not parts[1].isdigit() or int(parts[1]) not in _CONV_SLICE:
            raise ValueError(f"{alexnet_file}: unexpected key {key!r} (expected features.N.weight or .bias)")
        state[f"net.slice{_CONV_SLICE[int(parts[1])]}.{parts[1]}.{parts[2]}"] = value
    state.update(load_file(linear_file))
    return state


def _lpips_from_files(lpips: ModuleType, files: tuple[Path, Path]) -> nn.Module:
    # pnet_rand=True skips torchvision's download; pretrained=True builds the v0.1 linear layers (overwritten here)
    with warnings.catch_warnings():  # lpips 0.1.4 still passes torchvision's deprecated ``pretrained=False``
        warnings.filterwarnings("ignore", "The parameter 'pretrained' is deprecated", UserWarning)
        warnings.filterwarnings("ignore", "Arguments other than a weight enum", UserWarning)
        model = lpips.LPIPS(net="alex", version="0.1", pretrained=True, pnet_rand=True, verbose=False)
    missing, unexpected = model.load_state_dict(_lpips_state_dict(*files), strict=False)
    missing = [k for k in missing if not k.startswith(_ALIASES)]
    if missing or unexpected:
        raise ValueError(f"LPIPS weights in {files[0].parent} do not fit: missing {missing}, unexpected {unexpected}")
    return model


def _lpips_from_torchvision(lpips: ModuleType) -> nn.Module:
    try:
        return lpips.LPIPS(net="alex", version="0.1", pretrained=True, pnet_rand=False, verbose=False)
    except Exception as err:
        raise RuntimeError(
            f"LPIPS could not load torchvision's pretrained AlexNet (downloaded on first use): {err!r}. Offline, pass "
            f"LPIPS(weights=DIR) or set {WEIGHTS_ENV}=DIR, with DIR holding {ALEXNET_FILE} and {LINEAR_FILE} "
            "(e.g. the project's shared/weights)."
        ) from err


class LPIPS(nn.Module):
    """LPIPS distance, AlexNet v0.1: ``LPIPS(weights)(x, ref) -> (B,)`` for images ``(B, C, H, W)`` in ``[-1, 1]``
    (``C = 3``, or 1, repeated to RGB). Lower is more similar; 0 for identical images; symmetric.

    Images are **not resized**: at 32 or 64 px LPIPS sees them at their own size (AlexNet's receptive fields
    were trained at 224 px, so values are not comparable with LPIPS at 256 px). Needs ``H, W >= 32``.
    ``weights``: a directory with ``alexnet_features.safetensors`` and ``lpips_alex_v0.1.safetensors``; if None,
    ``$EXACTPS_LPIPS_WEIGHTS``; if unset, torchvision's pretrained AlexNet (downloads). The network is frozen and
    in eval mode; move it with ``.to(device)``. Needs the ``lpips`` package (``pip install "exactps[metrics]"``).
    """

    def __init__(self, weights: str | os.PathLike | None = None) -> None:
        super().__init__()
        files = lpips_weight_files(weights)  # missing files fail before any work
        lpips = optional_import("lpips", "LPIPS")
        self.net = _lpips_from_files(lpips, files) if files else _lpips_from_torchvision(lpips)
        self.net.eval().requires_grad_(False)
        self.source = str(files[0].parent) if files else "torchvision"

    def forward(self, x: Tensor, ref: Tensor) -> Tensor:
        """``(B,)`` LPIPS distances between ``x`` and ``ref``, both ``(B, C, H, W)`` in ``[-1, 1]``."""
        check_pair(x, ref)
        if x.shape[1] not in (1, 3):
            raise ValueError(f"LPIPS needs 1 or 3 channels, got {x.shape[1]}")
        if x.shape[1] == 1:
            x, ref = x.expand(-1, 3, -1, -1), ref.expand(-1, 3, -1, -1)
        p = next(self.net.parameters())
        return self.net(x.to(p), ref.to(p)).flatten()
