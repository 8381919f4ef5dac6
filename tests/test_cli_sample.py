"""``exactps sample`` (and ``exactps export``, which it is tested with): simulation from a ground-truth
image, a stored measurement, the errors it reports, and its help.

The models are the ``tiny`` U-Net runs of the ``runs`` fixture (``conftest.py``).
"""

from __future__ import annotations

import json

import numpy as np
import pytest
from helpers import _png, _rgb
from PIL import Image

from exactps.cli import main


def _sample(model, out, *extra) -> list[str]:
    return ["sample", "--model", str(model), "--out", str(out), "--num-samples", "2", "--nfe", "4", "--sampler", "ddim",
            *extra]  # fmt: skip


def test_cli_sample_simulation(runs, tmp_path, capsys):
    gt = _png(tmp_path / "gt.png", _rgb(20, 24))
    out = tmp_path / "out"
    args = _sample(runs["eps"], out, "--task", "inpaint-box", "--sigma-y", "0", "--image", str(gt))
    assert main(args) == 0
    text = capsys.readouterr().out
    assert "eps model (tiny" in text and "measurement" in text and "sample 2" in text
    names = {"gt_grid.png", "gt_sample-1.png", "gt_sample-2.png", "gt_mean.png", "gt_measurement.png", "gt_mask.png"}
    assert {p.name for p in out.iterdir()} == names | {"metrics.json"}
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["task"] == "inpaint-box" and metrics["images"][0]["input"] == "gt.png"
    values = [metrics["images"][0][k] for k in ("psnr_measurement", "psnr_mean")] + metrics["images"][0]["psnr_samples"]
    assert len(values) == 4 and all(np.isfinite(values))
    assert Image.open(out / "gt_grid.png").size == (5 * 18 + 2, 20)  # measurement, 2 samples, mean, truth
    # noiseless inpainting, end to end: the sample files equal the measurement file where the mask is white
    observed = np.asarray(Image.open(out / "gt_mask.png")) > 127
    y = np.asarray(Image.open(out / "gt_measurement.png")).astype(int)
    assert observed.mean() == pytest.approx(0.75)
    for k in (1, 2):
        s = np.asarray(Image.open(out / f"gt_sample-{k}.png")).astype(int)
        assert np.abs(s - y)[observed].max() <= 1 and np.abs(s - y)[~observed].max() > 10
    # never overwrite without being asked
    assert main(args) == 2
    assert f"exactps: error: output directory {out}" in capsys.readouterr().err
    assert main([*args, "--force"]) == 0


def test_cli_sample_measurement_export_and_errors(runs, tmp_path, capsys):
    model = tmp_path / "models" / "tiny"
    assert main(["export", str(runs["eps"]), "--out", str(model)]) == 0
    assert "float16" in capsys.readouterr().out
    assert main(["export", str(runs["eps"]), "--out", str(model)]) == 2
    assert f"{model}.json already exists" in capsys.readouterr().err

    low = _png(tmp_path / "low.png", _rgb(4, 4))
    out = tmp_path / "sr"
    assert main(_sample(model, out, "--task", "sr4", "--measurement", str(low))) == 0
    assert {p.name for p in out.iterdir()} == {"low_grid.png", "low_sample-1.png", "low_sample-2.png", "low_mean.png"}
    assert Image.open(out / "low_grid.png").size == (4 * 18 + 2, 20)  # measurement view, 2 samples, mean

    image = _png(tmp_path / "image.png", _rgb(16, 16))
    small = _png(tmp_path / "small.png", np.full((8, 8), 255, np.uint8))
    sim = ["--task", "sr4", "--image", str(image)]
    errors = {
        "5x5 but sr4 with the model's 16x16 images needs 4x4": _sample(
            model, tmp_path / "e1", "--task", "sr4", "--measurement", str(_png(tmp_path / "five.png", _rgb(5, 5)))
        ),
        "needs the mask": _sample(model, tmp_path / "e2", "--task", "inpaint", "--measurement", str(image)),
        "mask " + str(small) + " is 8x8 but must have the images' size, 16x16": _sample(
            model, tmp_path / "e3", "--task", "inpaint", "--measurement", str(image), "--mask", str(small)
        ),
        "nowhere does not exist": _sample(tmp_path / "nowhere", tmp_path / "e4", *sim),
        "not trained for measurements": _sample(runs["denoiser"], tmp_path / "e5", *sim),
    }
    for message, argv in errors.items():
        assert main(argv) == 2, message
        assert message in capsys.readouterr().err
    assert main(_sample(runs["denoiser"], tmp_path / "prior", "--task", "none")) == 0
    assert (tmp_path / "prior" / "prior_sample-2.png").exists()

    tensors = model.with_name("tiny.safetensors")
    tensors.write_bytes(tensors.read_bytes()[:1000])
    assert main(_sample(model, tmp_path / "e6", "--task", "sr4", "--measurement", str(low))) == 2
    assert f"{tensors} are truncated" in capsys.readouterr().err
    assert main(["export", str(runs["eps"]), "--out", str(model), "--force"]) == 0  # repaired


def test_cli_help_explains_sample(capsys):
    with pytest.raises(SystemExit):
        main(["sample", "--help"])
    text = capsys.readouterr().out
    assert all(s in text for s in ("--measurement", "simulation", "R/4 x R/4", "metrics.json", "white = observed"))


def test_cli_sample_refuses_what_would_silently_fail(runs, tmp_path, capsys):
    """Heun with too few NFE (saturated noise), a huge --num-samples (allocator traceback), a photo as
    --mask and a ground truth smaller than the model's images: named errors, nothing written."""
    model = runs["eps"]
    image = _png(tmp_path / "image.png", _rgb(16, 16))
    tiny = _png(tmp_path / "tiny.png", _rgb(1, 1))
    photo = _png(tmp_path / "photo.png", _rgb(16, 16, seed=3))
    base = ["sample", "--model", str(model), "--num-samples", "2"]
    errors = {
        "sampler heun needs at least 7 NFE, got 4": [*base, "--out", str(tmp_path / "e1"), "--sampler", "heun",
                                                     "--nfe", "4", "--task", "sr4", "--image", str(image)],
        "Use 20 NFE or more": [*base, "--out", str(tmp_path / "e2"), "--nfe", "6", "--task", "none"],
        "can be allocated": [*base[:-1], "1000000000", "--out", str(tmp_path / "e3"), "--nfe", "2", "--sampler",
                             "ddim", "--task", "sr4", "--image", str(image)],
        "image " + str(tiny) + " is 1x1 (height x width), smaller than the model's 16x16 images": [
            *base, "--out", str(tmp_path / "e4"), "--nfe", "2", "--sampler", "ddim", "--task", "sr4", "--image",
            str(tiny)],
        "has 3 channel(s) with": [*base, "--out", str(tmp_path / "e5"), "--nfe", "2", "--sampler", "ddim", "--task",
                                  "inpaint", "--measurement", str(image), "--mask", str(photo)],
    }  # fmt: skip
    for message, argv in errors.items():
        assert main(argv) == 2, message
        err = capsys.readouterr().err
        assert message in err, err
        if "channel" in message:
            assert f"mask {photo} has 3 channel(s) with 256 distinct colours" in err
            assert "a mask must be black (missing) and white (observed)" in err
    for k in range(1, 6):
        assert not (tmp_path / f"e{k}").exists() or not any((tmp_path / f"e{k}").iterdir())
    assert main([*base, "--out", str(tmp_path / "ok"), "--sampler", "heun", "--nfe", "7", "--task", "none"]) == 0
