"""Picture files: preview grids, and images, masks, kernels and measurements read from files."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers import IMAGE_SHAPE as SHAPE
from helpers import _png, _rgb

from exactps.data import ImageFolder
from exactps.images import measurement_from_image, read_image, read_kernel, read_mask, save_grid
from exactps.tasks import build_operator


def test_save_grid(tmp_path):
    from PIL import Image

    rows = [torch.rand(3, 3, 4, 5) * 2 - 1, torch.rand(2, 3, 4, 5) * 2 - 1]
    path = save_grid(rows, tmp_path / "g" / "grid.png", pad=1)
    img = Image.open(path)
    assert img.size == (3 * 6 + 1, 2 * 5 + 1) and img.mode == "RGB"
    gray = save_grid([torch.zeros(2, 1, 4, 4)], tmp_path / "gray.png")
    assert Image.open(gray).mode == "L"


def test_images_masks_and_kernels_from_files(tmp_path):
    _png(tmp_path / "wide.png", _rgb(20, 30))
    x = read_image(tmp_path / "wide.png", 16)
    assert x.shape == (1, 3, 16, 16) and torch.equal(x[0], ImageFolder(tmp_path, 16, flip=False).load(0))
    assert read_image(tmp_path / "wide.png").shape == (1, 3, 20, 30)  # no size: as stored
    mask = np.zeros((16, 16), dtype=np.uint8)
    mask[:, :8] = 255
    m = read_mask(_png(tmp_path / "mask.png", mask), SHAPE)
    assert m.shape == (1, 1, 16, 16) and m.sum() == 128 and m[0, 0, 0, 0] == 1
    with pytest.raises(ValueError, match=r"big\.png is 16x30 but must have the images' size, 16x16"):
        read_mask(_png(tmp_path / "big.png", np.zeros((16, 30), dtype=np.uint8)), SHAPE)
    np.save(tmp_path / "k.npy", np.ones((3, 5)))
    k = read_kernel(tmp_path / "k.npy")
    assert k.shape == (1, 1, 3, 5) and torch.allclose(k.sum(), torch.tensor(1.0))
    flat = read_kernel(_png(tmp_path / "k.png", np.full((3, 3), 200, np.uint8)))
    assert torch.allclose(flat, torch.full((1, 1, 3, 3), 1 / 9))
    np.save(tmp_path / "zero.npy", np.zeros((3, 3)))
    with pytest.raises(ValueError, match="positive sum"):
        read_kernel(tmp_path / "zero.npy")
    with pytest.raises(FileNotFoundError, match="missing"):
        read_image(tmp_path / "missing.png")
    (tmp_path / "junk.png").write_bytes(b"not a png")
    with pytest.raises(ValueError, match="junk"):
        read_image(tmp_path / "junk.png")
    # a measurement picture: inpainting zeroes the holes, colorization reads grayscale
    op = build_operator("inpaint", SHAPE, mask=m)
    y = measurement_from_image(op, _png(tmp_path / "y.png", _rgb(16, 16)), "inpaint")
    assert y.shape == (1, *SHAPE) and (y[..., 8:] == 0).all() and (y[..., :8] != 0).any()
    assert measurement_from_image(build_operator("colorize", SHAPE), tmp_path / "y.png").shape == (1, 1, 16, 16)
    with pytest.raises(ValueError, match="needs the mask"):
        build_operator("inpaint-box", SHAPE, random_ok=False)
    with pytest.raises(ValueError, match="only applies to the inpainting"):
        build_operator("sr4", SHAPE, mask=m)


def test_mask_must_be_black_and_white(tmp_path):
    """A photo, a grey level or a coloured pixel is not a mask: a named error says what was found."""
    from PIL import Image

    photo = _png(tmp_path / "photo.png", _rgb(16, 16))
    with pytest.raises(ValueError, match=r"photo\.png has 3 channel\(s\) with \d+ distinct colours.*black \(missing\)"):
        read_mask(photo, SHAPE)
    grey = np.zeros((16, 16), dtype=np.uint8)
    grey[:, :8] = 128
    with pytest.raises(ValueError, match=r"1 channel\(s\) with 2 distinct values \(levels 0, 128\)"):
        read_mask(_png(tmp_path / "grey.png", grey), SHAPE)
    red = np.zeros((16, 16, 3), dtype=np.uint8)
    red[:4, :, 0] = 255
    with pytest.raises(ValueError, match="distinct colours"):
        read_mask(_png(tmp_path / "red.png", red), SHAPE)
    # black and white stored as RGB, RGBA (opaque) or 1-bit are masks
    bw = np.zeros((16, 16), dtype=np.uint8)
    bw[4:, :] = 255
    for mode in ("RGB", "RGBA", "1"):
        Image.fromarray(bw).convert(mode).save(tmp_path / f"bw-{mode}.png")
        assert read_mask(tmp_path / f"bw-{mode}.png", SHAPE).sum() == 12 * 16


def test_colour_map_std_scale_and_resize():
    from exactps.images import STD_COLORMAP, colour_map, resize_shorter_side, std_scale

    rgb = colour_map(torch.tensor([[0.0, 0.5, 2.0]]), vmax=1.0)
    first, last = (torch.tensor(c, dtype=torch.float32) / 255 * 2 - 1 for c in (STD_COLORMAP[0], STD_COLORMAP[-1]))
    assert rgb.shape == (3, 1, 3)
    assert torch.allclose(rgb[:, 0, 0], first) and torch.allclose(rgb[:, 0, 2], last)  # clipped above vmax
    assert std_scale(torch.tensor([0.3])) == 0.5 and std_scale(torch.tensor([0.011])) == 0.02
    assert std_scale(torch.zeros(3)) == 1.0
    x = torch.rand(1, 3, 30, 45) * 2 - 1
    assert resize_shorter_side(x, 20).shape == (1, 3, 20, 30)
    assert resize_shorter_side(x, 30) is x
    with pytest.raises(ValueError, match="enlarge"):
        resize_shorter_side(x, 31)


def test_std_map_and_contact_sheet_are_labelled_pictures(tmp_path):
    from PIL import Image

    from exactps.images import colour_map, save_contact_sheet, save_std_map

    std = torch.linspace(0, 0.4, 12 * 10).reshape(12, 10)
    path = save_std_map(std, tmp_path / "std.png", scale=4)
    pic = np.asarray(Image.open(path).convert("RGB"))
    assert pic.shape[0] > 12 * 4 and pic.shape[1] > 10 * 4 + 20  # the map, the scale bar and its labels
    columns = [("measurement", torch.zeros(3, 12, 10)), ("mean", torch.zeros(1, 12, 10)), ("std", colour_map(std, 0.5))]
    sheet = Image.open(save_contact_sheet(columns, tmp_path / "c.png", scale=4, title="t"))
    assert sheet.width >= 3 * 40 and sheet.height > 48 + 18
    with pytest.raises(ValueError, match="column 'b'"):
        save_contact_sheet([("a", torch.zeros(3, 4, 4)), ("b", torch.zeros(3, 5, 4))], tmp_path / "x.png")
    with pytest.raises(ValueError, match=r"\(H, W\)"):
        save_std_map(torch.zeros(3, 4, 4), tmp_path / "y.png")
