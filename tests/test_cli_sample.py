"""``exactps sample`` (and ``exactps export``, which it is tested with): simulation from ground-truth
images at their own size, stored measurements, folders, the uncertainty outputs, the errors it
reports, and its help.

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
            "--no-progress", *extra]  # fmt: skip


def test_cli_sample_simulation_writes_the_uncertainty_outputs(runs, tmp_path, capsys):
    gt = _png(tmp_path / "gt.png", _rgb(20, 24))
    out = tmp_path / "out"
    args = _sample(runs["eps"], out, "--task", "inpaint-box", "--sigma-y", "0", "--image", str(gt))
    assert main(args) == 0
    text = capsys.readouterr().out
    assert "eps model (tiny" in text and "trained on 16x16 images" in text and "PSNR mean" in text
    names = {"contact.png", "mean.png", "std.png", "sample-1.png", "sample-2.png", "measurement.png", "mask.png",
             "report.json"}  # fmt: skip
    assert {p.name for p in (out / "gt").iterdir()} == names
    assert {p.name for p in out.iterdir()} == {"gt", "summary.json"}
    report = json.loads((out / "gt" / "report.json").read_text())
    assert report["task"] == "inpaint-box" and report["input"] == str(gt) and report["size"] == [20, 24]
    values = [report[k] for k in ("psnr_measurement", "psnr_mean", "mean_std", "coverage90")] + report["psnr_samples"]
    assert len(values) == 6 and all(np.isfinite(values)) and 0 <= report["coverage90"] <= 1
    assert report["nfe_per_sample"] == 4 and report["seconds"] > 0
    # restored at the photo's own size, not the model's 16x16
    assert Image.open(out / "gt" / "mean.png").size == (24, 20)
    sheet = Image.open(out / "gt" / "contact.png")
    assert sheet.width > 6 * 24 * 6 and sheet.height > 20 * 6  # 6 columns of 6x-enlarged pictures, titles
    std = np.asarray(Image.open(out / "gt" / "std.png").convert("RGB"))
    assert std.shape[0] > 20 * 6 and std.shape[1] > 24 * 6  # colour map + scale bar
    # noiseless inpainting, end to end: the sample files equal the measurement file where the mask is white
    observed = np.asarray(Image.open(out / "gt" / "mask.png")) > 127
    y = np.asarray(Image.open(out / "gt" / "measurement.png")).astype(int)
    assert 0.6 < observed.mean() < 0.95
    for k in (1, 2):
        s = np.asarray(Image.open(out / "gt" / f"sample-{k}.png")).astype(int)
        assert np.abs(s - y)[observed].max() <= 1 and np.abs(s - y)[~observed].max() > 10
    # zero std where measured exactly
    summary = json.loads((out / "summary.json").read_text())
    assert summary["images"][0]["name"] == "gt" and summary["failed"] == []
    # never overwrite without being asked
    assert main(args) == 2
    assert f"exactps: error: output directory {out}" in capsys.readouterr().err
    assert main([*args, "--force"]) == 0


def test_cli_sample_folder_skips_what_fails_and_summarises(runs, tmp_path, capsys):
    folder = tmp_path / "photos"
    folder.mkdir()
    _png(folder / "a.png", _rgb(16, 16))
    _png(folder / "b.png", _rgb(24, 20, seed=2))
    (folder / "broken.png").write_bytes(b"not a png")
    (folder / "notes.txt").write_text("ignored")
    out = tmp_path / "out"
    assert main(_sample(runs["eps"], out, "--task", "sr4", "--image", str(folder))) == 1  # one file failed
    captured = capsys.readouterr()
    assert f"skipped {folder / 'broken.png'}: could not read image" in captured.err
    assert "2 image(s) restored, 1 failed (broken.png)" in captured.out and "average" in captured.out
    assert {p.name for p in out.iterdir()} == {"a", "b", "summary.json"}
    assert Image.open(out / "b" / "mean.png").size == (20, 24)
    summary = json.loads((out / "summary.json").read_text())
    assert [r["name"] for r in summary["images"]] == ["a", "b"] and len(summary["failed"]) == 1
    assert summary["average"]["psnr_mean"] == pytest.approx(np.mean([r["psnr_mean"] for r in summary["images"]]))
    out = tmp_path / "first"
    assert main(_sample(runs["eps"], out, "--task", "sr4", "--image", str(folder), "--max-images", "1")) == 0
    assert {p.name for p in out.iterdir()} == {"a", "summary.json"}


def test_cli_sample_sizes_resize_crop_and_example(runs, tmp_path, capsys):
    gt = _png(tmp_path / "wide.png", _rgb(30, 45))
    out = tmp_path / "r"
    assert main(_sample(runs["eps"], out, "--task", "sr4", "--image", str(gt), "--resize", "18")) == 0
    err = capsys.readouterr().err
    assert "cropped from 18x27 to 16x24 (bottom/right): sr4 needs multiples of 4" in err
    assert Image.open(out / "wide" / "mean.png").size == (24, 16)
    assert Image.open(out / "wide" / "measurement.png").size == (6, 4)
    out = tmp_path / "c"
    assert main(_sample(runs["eps"], out, "--task", "sr4", "--image", str(gt), "--crop")) == 0
    assert Image.open(out / "wide" / "mean.png").size == (16, 16)
    out = tmp_path / "e"
    assert main(_sample(runs["eps"], out, "--task", "inpaint-random", "--example", "camera", "--resize", "32")) == 0
    report = json.loads((out / "camera" / "report.json").read_text())
    assert report["input"] == "scikit-image:camera" and report["size"] == [32, 32]
    out = tmp_path / "big"
    assert main(_sample(runs["eps"], out, "--task", "inpaint-random", "--example", "camera", "--resize", "80")) == 0
    assert "far from the training size" in capsys.readouterr().err


def test_cli_sample_measurement_export_and_errors(runs, tmp_path, capsys):
    model = tmp_path / "models" / "tiny"
    assert main(["export", str(runs["eps"]), "--out", str(model)]) == 0
    assert "float16" in capsys.readouterr().out
    assert main(["export", str(runs["eps"]), "--out", str(model)]) == 2
    assert f"{model}.json already exists" in capsys.readouterr().err

    low = _png(tmp_path / "low.png", _rgb(5, 4))
    out = tmp_path / "sr"
    assert main(_sample(model, out, "--task", "sr4", "--measurement", str(low))) == 0
    assert {p.name for p in (out / "low").iterdir()} == {"contact.png", "mean.png", "std.png", "sample-1.png",
                                                         "sample-2.png", "report.json"}  # fmt: skip
    assert Image.open(out / "low" / "mean.png").size == (16, 20)  # 4x the measurement
    assert "psnr_mean" not in json.loads((out / "low" / "report.json").read_text())  # no ground truth

    image = _png(tmp_path / "image.png", _rgb(16, 16))
    small = _png(tmp_path / "small.png", np.full((8, 8), 255, np.uint8))
    sim = ["--task", "sr4", "--image", str(image)]
    resized = ["--task", "sr4", "--measurement", str(low), "--resize", "8"]
    errors = {
        "--resize and --crop apply to ground truths": _sample(model, tmp_path / "e1", *resized),
        "needs the mask": _sample(model, tmp_path / "e2", "--task", "inpaint", "--measurement", str(image)),
        "nowhere does not exist": _sample(tmp_path / "nowhere", tmp_path / "e4", *sim),
        "not trained for measurements": _sample(runs["denoiser"], tmp_path / "e5", *sim),
        "--num-samples must be >= 2 for the uncertainty": _sample(model, tmp_path / "e6", "--num-samples", "1", *sim),
    }
    for message, argv in errors.items():
        assert main(argv) == 2, message
        assert message in capsys.readouterr().err
    # a mask of another size: that image is named and skipped
    code = main(_sample(model, tmp_path / "e3", "--task", "inpaint", "--measurement", str(image), "--mask", str(small)))
    assert code == 1 and "--mask is 8x8 but the image is 16x16" in capsys.readouterr().err
    assert main(_sample(runs["denoiser"], tmp_path / "prior", "--task", "none")) == 0
    assert (tmp_path / "prior" / "prior" / "sample-2.png").exists()

    tensors = model.with_name("tiny.safetensors")
    tensors.write_bytes(tensors.read_bytes()[:1000])
    assert main(_sample(model, tmp_path / "e7", "--task", "sr4", "--measurement", str(low))) == 2
    assert f"{tensors} are truncated" in capsys.readouterr().err
    assert main(["export", str(runs["eps"]), "--out", str(model), "--force"]) == 0  # repaired


def test_cli_help_explains_sample(capsys):
    with pytest.raises(SystemExit):
        main(["sample", "--help"])
    text = capsys.readouterr().out
    wanted = ("--measurement", "simulation", "H/4 x W/4", "report.json", "white = observed", "own size", "--threads",
              "OMP_NUM_THREADS", "std.png", "contact.png", "--example")  # fmt: skip
    assert all(s in text for s in wanted), [s for s in wanted if s not in text]


def test_cli_sample_refuses_what_would_silently_fail(runs, tmp_path, capsys):
    """Heun with too few NFE (saturated noise), a huge --num-samples (allocator traceback), a photo as
    --mask and a ground truth smaller than the model's images with --crop: named errors, nothing written."""
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
            str(tiny), "--crop"],
        "has 3 channel(s) with": [*base, "--out", str(tmp_path / "e5"), "--nfe", "2", "--sampler", "ddim", "--task",
                                  "inpaint", "--measurement", str(image), "--mask", str(photo)],
    }  # fmt: skip
    for message, argv in errors.items():
        assert main(argv) in (1, 2), message
        err = capsys.readouterr().err
        assert message in err, err
        if "channel" in message:
            assert f"mask {photo} has 3 channel(s) with 256 distinct colours" in err
            assert "a mask must be black (missing) and white (observed)" in err
    for k in range(1, 6):
        folder = tmp_path / f"e{k}"
        assert not folder.exists() or not any(p.suffix == ".png" for p in folder.rglob("*"))
    assert main([*base, "--out", str(tmp_path / "ok"), "--sampler", "heun", "--nfe", "7", "--task", "none"]) == 0
