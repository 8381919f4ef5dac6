"""Training data: image folders (with corrupt files) and built-in photograph crops."""

import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from exactps.data import TRAIN_FRACTION, BuiltinCrops, ImageFolder, builtin_crops


def _write(path, size, mode="RGB", fmt=None, seed=0):
    rng = np.random.default_rng(seed)
    w, h = size
    shape = (h, w, 3) if mode == "RGB" else (h, w)
    Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode).save(path, format=fmt)


@pytest.fixture
def folder(tmp_path):
    (tmp_path / "sub" / "deeper").mkdir(parents=True)
    _write(tmp_path / "a.png", (40, 30))
    _write(tmp_path / "sub" / "b.jpg", (17, 50), seed=1)
    _write(tmp_path / "sub" / "deeper" / "c.JPEG", (64, 64), mode="L", seed=2)
    (tmp_path / "notes.txt").write_text("not an image")
    return tmp_path


def test_folder_reads_png_and_jpeg_recursively(folder):
    ds = ImageFolder(folder, size=16)
    assert len(ds) == 3 and ds.skipped == []
    assert {p.name for p in ds.files} == {"a.png", "b.jpg", "c.JPEG"}
    for i in range(len(ds)):
        x = ds[i]
        assert x.shape == (3, 16, 16) and x.dtype == torch.float32
        assert x.min() >= -1.0 and x.max() <= 1.0
        assert x.std() > 0.1  # noise images stay noisy after resizing


def test_folder_grayscale_and_flip(folder):
    ds = ImageFolder(folder, size=8, channels=1, flip=True)
    assert ds[0].shape == (1, 8, 8)
    plain = ds.load(0)
    torch.manual_seed(0)
    seen = {bool(torch.equal(ds[0], plain)) for _ in range(20)}
    assert seen == {True, False}  # flipped sometimes, never otherwise altered
    torch.manual_seed(0)
    for _ in range(5):
        x = ds[0]
        assert torch.equal(x, plain) or torch.equal(x, plain.flip(-1))
    assert all(torch.equal(ImageFolder(folder, 8, 1, flip=False)[0], plain) for _ in range(3))


def test_folder_center_crop_keeps_the_middle(tmp_path):
    """A wide image whose outer thirds are black: the centred square is all white."""
    arr = np.zeros((30, 90, 3), dtype=np.uint8)
    arr[:, 30:60] = 255
    Image.fromarray(arr).save(tmp_path / "wide.png")
    x = ImageFolder(tmp_path, size=10, flip=False)[0]
    assert torch.allclose(x, torch.ones_like(x))


def test_folder_skips_and_reports_corrupt_files(folder):
    good = (folder / "a.png").read_bytes()
    (folder / "broken.png").write_bytes(good[: len(good) // 2])  # truncated PNG
    jpg = (folder / "sub" / "b.jpg").read_bytes()
    (folder / "sub" / "cut.jpg").write_bytes(jpg[: len(jpg) // 2])  # truncated JPEG
    (folder / "garbage.png").write_bytes(b"definitely not a png")
    with pytest.warns(RuntimeWarning, match="skipped 3 unreadable") as record:
        ds = ImageFolder(folder, size=8)
    message = str(record[0].message)
    assert "broken.png" in message and "cut.jpg" in message and "garbage.png" in message
    assert sorted(p.name for p in ds.skipped) == ["broken.png", "cut.jpg", "garbage.png"]
    assert len(ds) == 3 and not {p.name for p in ds.files} & {"broken.png", "cut.jpg", "garbage.png"}


def test_verify_only_check_still_names_bad_files(folder):
    (folder / "garbage.png").write_bytes(b"definitely not a png")
    jpg = (folder / "sub" / "b.jpg").read_bytes()
    (folder / "cut.jpg").write_bytes(jpg[: len(jpg) // 2])
    with pytest.warns(RuntimeWarning, match=r"garbage\.png"):
        ds = ImageFolder(folder, size=8, check="verify")
    assert [p.name for p in ds.skipped] == ["garbage.png"]
    index = [p.name for p in ds.files].index("cut.jpg")  # passes verify(), fails to decode
    with pytest.raises(OSError, match=r"cut\.jpg"):
        ds[index]


def test_folder_of_only_corrupt_files_raises(tmp_path):
    (tmp_path / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(ValueError, match="no readable image"):
            ImageFolder(tmp_path, size=8)


def test_empty_and_missing_folders_raise_naming_the_path(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "readme.md").write_text("no images here")
    with pytest.raises(ValueError, match="empty"):
        ImageFolder(empty, size=8)
    missing = tmp_path / "nowhere"
    with pytest.raises(FileNotFoundError, match="nowhere"):
        ImageFolder(missing, size=8)
    photo = tmp_path / "photo.png"
    Image.new("RGB", (8, 8)).save(photo)
    with pytest.raises(NotADirectoryError, match=r"photo\.png is a file, not a folder .*'builtin'"):
        ImageFolder(photo, size=8)


def test_folder_works_with_a_dataloader(folder):
    loader = torch.utils.data.DataLoader(ImageFolder(folder, size=8), batch_size=2)
    batch = next(iter(loader))
    assert batch.shape == (2, 3, 8, 8)


def test_builtin_crops_deterministic_and_in_range():
    a = builtin_crops(6, 32, torch.Generator().manual_seed(0))
    b = builtin_crops(6, 32, torch.Generator().manual_seed(0))
    c = builtin_crops(6, 32, torch.Generator().manual_seed(1))
    assert a.shape == (6, 3, 32, 32) and a.dtype == torch.float32
    assert torch.equal(a, b) and not torch.equal(a, c)
    assert a.min() >= -1.0 and a.max() <= 1.0
    assert a.std() > 0.1
    grey = builtin_crops(2, 16, torch.Generator().manual_seed(0), channels=1)
    assert grey.shape == (2, 1, 16, 16)


def test_builtin_crops_dataset_is_reproducible_per_index():
    ds = BuiltinCrops(length=5, size=16)
    assert len(ds) == 5
    assert torch.equal(ds[2], ds[2]) and not torch.equal(ds[2], ds[3])
    assert ds[4].shape == (3, 16, 16)
    with pytest.raises(IndexError):
        ds[5]
    assert not torch.equal(BuiltinCrops(5, 16, seed=1)[2], ds[2])


def test_builtin_crops_rejects_bad_arguments():
    with pytest.raises(ValueError, match="channels"):
        builtin_crops(1, 16, channels=2)
    with pytest.raises(ValueError, match="larger than every"):
        builtin_crops(1, 10_000)


def test_builtin_train_and_test_splits_partition_every_photograph():
    from exactps.data import _builtin_images, _split_columns

    for img in _builtin_images(3):
        train, test = _split_columns(img, "train"), _split_columns(img, "test")
        assert torch.equal(torch.cat([train, test], dim=-1), img)
        assert train.shape[-1] == int(TRAIN_FRACTION * img.shape[-1])
    g = torch.Generator().manual_seed(0)
    assert not torch.equal(builtin_crops(4, 32, g, split="test"), builtin_crops(4, 32, g.manual_seed(0), split="train"))
    with pytest.raises(ValueError, match="split"):
        builtin_crops(1, 16, split="val")


def test_builtin_image_is_a_whole_photograph_in_range():
    from exactps.data import builtin_image

    x = builtin_image("camera", channels=3)
    assert x.shape == (3, 512, 512) and x.min() >= -1 and x.max() <= 1
    assert builtin_image("astronaut", channels=1).shape == (1, 512, 512)
    with pytest.raises(ValueError, match="unknown example photograph"):
        builtin_image("nope")


def test_builtin_face_crops():
    from exactps.data import builtin_face_crops

    x = builtin_face_crops(32)
    assert x.shape == (8, 3, 32, 32) and x.min() >= -1 and x.max() <= 1
    assert not torch.equal(x[0], x[1])
    with pytest.raises(ValueError, match="n must be"):
        builtin_face_crops(32, n=9)
