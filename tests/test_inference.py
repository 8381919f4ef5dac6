"""Sampling from trained models: loading (run, checkpoint, export), export, posterior samples, files, CLI.

The models are the ``tiny`` preset at 16x16 trained for 2 steps (large learning rate, so that every
weight, the near-zero initial output layer included, is far from its initialisation).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from exactps.training import ModelConfig, TrainConfig, run_training
from PIL import Image

from exactps.checkpoint import (
    CheckpointError,
    load_checkpoint,
    load_state_dict_file,
    save_checkpoint,
    save_model_file,
)
from exactps.cli import main
from exactps.covariance import IsotropicNoise
from exactps.data import ImageFolder
from exactps.inference import (
    build_operator,
    export_model,
    load_model,
    measurement_from_image,
    posterior_samples,
    read_image,
    read_kernel,
    read_mask,
)
from exactps.operators import Inpaint, SeparableSR, random_masks

SHAPE = (3, 16, 16)


def _train(out: Path, objective: str) -> Path:
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
    data = torch.rand(8, *SHAPE, generator=torch.Generator().manual_seed(0)) * 2 - 1
    run_training(cfg, mcfg, data, out, device="cpu", show_progress=False)
    return out


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("runs")
    return {objective: _train(root / objective, objective) for objective in ("eps", "conditional", "denoiser")}


@pytest.fixture(scope="module")
def eps(runs):
    return load_model(runs["eps"], device="cpu")


def _x0(batch: int = 2, seed: int = 0) -> torch.Tensor:
    return torch.rand(batch, *SHAPE, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def _png(path: Path, array: np.ndarray) -> Path:
    Image.fromarray(array).save(path)
    return path


def _rgb(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


# -- loading and export ---------------------------------------------------------------------------------------


def test_run_dir_checkpoint_and_export_load_the_same_weights(runs, eps, tmp_path):
    ckpt = load_checkpoint(runs["eps"])
    by_json = load_model(ckpt.path, device="cpu")
    by_tensors = load_model(ckpt.path.with_suffix(".safetensors"), device="cpu")
    assert (eps.objective, eps.step, eps.images_seen, eps.img_shape) == ("eps", 2, 4, SHAPE)
    assert eps.tasks == ("inpaint-random", "sr4") and eps.sigma_y == (0.02, 0.2)
    assert eps.source == ckpt.path and "eps model (tiny" in eps.describe()
    for loaded in (eps, by_json, by_tensors):
        state = loaded.model.state_dict()
        assert all(torch.equal(state[k], v) for k, v in ckpt.ema.items()) and state.keys() == ckpt.ema.keys()
        assert not any(m.training for m in loaded.model.modules())
        assert not any(p.requires_grad for p in loaded.model.parameters())
    raw = load_model(runs["eps"], device="cpu", prefer_ema=False).model.state_dict()
    assert all(torch.equal(raw[k], v) for k, v in ckpt.model.items())
    assert any(not torch.equal(ckpt.model[k], ckpt.ema[k]) for k in ckpt.ema)  # the EMA really is different

    json_path = export_model(runs["eps"], tmp_path / "shared" / "tiny")
    tensors = json_path.with_suffix(".safetensors")
    record = json.loads(json_path.read_text())
    assert json_path.name == "tiny.json" and record["format"] == "exactps-model/1"
    assert record["objective"] == "eps" and record["model_config"]["preset"] == "tiny"
    assert record["train"]["tasks"] == ["inpaint-random", "sr4"] and record["train"]["sigma_y"] == [0.02, 0.2]
    assert record["images_seen"] == 4 and record["sha256"] == hashlib.sha256(tensors.read_bytes()).hexdigest()
    assert str(tmp_path) not in json_path.read_text()  # nothing machine-specific in a shared file
    for name in ("tiny", "tiny.json", "tiny.safetensors"):
        exported = load_model(tmp_path / "shared" / name, device="cpu")
        assert exported.objective == "eps" and exported.images_seen == 4 and exported.tasks == eps.tasks
        state = exported.model.state_dict()
        assert all(v.dtype == torch.float32 and torch.equal(v, ckpt.ema[k].half().float()) for k, v in state.items())
        assert not any(m.training for m in exported.model.modules())

    shared = load_state_dict_file(json_path)  # what `exactps train --init NAME.json` reads
    assert all(v.dtype == torch.float16 and torch.equal(v, ckpt.ema[k].half()) for k, v in shared.items())

    x = _x0(2, 1)
    noise = IsotropicNoise(torch.tensor([0.3, 2.0]))
    with torch.no_grad():
        out = eps.model(x, noise)
        assert torch.equal(out, eps.model(x, noise)) and torch.equal(out, by_json.model(x, noise))
        assert (out - x).abs().max() > 1e-3  # the network contributes (not just the skip path)
        torch.testing.assert_close(exported.model(x, noise), out, atol=0.05, rtol=0)

    with pytest.raises(FileExistsError, match="tiny"):
        export_model(runs["eps"], tmp_path / "shared" / "tiny.json")
    assert export_model(runs["eps"], tmp_path / "shared" / "tiny", dtype=torch.float32, force=True) == json_path
    state = load_model(json_path, device="cpu").model.state_dict()
    assert all(torch.equal(state[k], v) for k, v in ckpt.ema.items())


def test_loading_errors_name_the_file(runs, tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        load_model(tmp_path / "nowhere", device="cpu")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        load_model(tmp_path / "empty", device="cpu")
    json_path = export_model(runs["eps"], tmp_path / "m")
    tensors = json_path.with_suffix(".safetensors")
    good = tensors.read_bytes()
    tensors.write_bytes(good[: len(good) // 2])
    with pytest.raises(CheckpointError, match=r"m\.safetensors.*truncated"):
        load_model(json_path, device="cpu")
    flipped = bytearray(good)
    flipped[-100] ^= 0xFF
    tensors.write_bytes(bytes(flipped))
    with pytest.raises(CheckpointError, match=r"m\.safetensors.*corrupt"):
        load_model(tmp_path / "m", device="cpu")
    tensors.unlink()
    with pytest.raises(FileNotFoundError, match=r"m\.safetensors"):
        load_model(json_path, device="cpu")
    # weights that do not fit the recorded network (a key missing), a bare state dict, no model record
    record = json.loads(json_path.read_text())
    state = load_model(runs["eps"], device="cpu").model.state_dict()
    state.pop(next(iter(state)))
    save_model_file(tmp_path / "wrong", state, {k: record[k] for k in ("objective", "model_config")})
    with pytest.raises(ValueError, match=r"wrong\.json.*do not fit"):
        load_model(tmp_path / "wrong", device="cpu")
    (tmp_path / "wrong.json").unlink()
    with pytest.raises(ValueError, match=r"wrong\.safetensors has no record"):
        load_model(tmp_path / "wrong.safetensors", device="cpu")
    bare = save_checkpoint(tmp_path / "bare", 1, state)
    with pytest.raises(ValueError, match="does not record which network"):
        load_model(bare, device="cpu")


# -- posterior samples ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("per_element", [True, False])
def test_noiseless_inpainting_samples_pass_y_through(eps, per_element):
    """EPS at s_y = 0: measured pixels have zero variance in S_t, so every sample equals y there."""
    x0 = _x0(2)
    masks = random_masks(SHAPE, 2 if per_element else 1, 0.5, torch.Generator().manual_seed(3))
    op = Inpaint(masks, SHAPE)
    y = op.measure(x0, 0.0)
    samples = posterior_samples(eps, op, y, 0.0, num_samples=3, nfe=6, generator=0)
    assert samples.shape == (3, 2, *SHAPE)
    observed = op.physics.mask.expand(2, *SHAPE).bool()
    assert (samples - y)[:, observed].abs().max() < 1e-5
    holes = ~observed
    assert (samples[0] - samples[1])[holes].abs().min() > 0  # the unobserved pixels are sampled


def test_noisy_samples_depend_on_the_seed_only(eps):
    op = SeparableSR(SHAPE, 4)
    y = op.measure(_x0(2), 0.1, torch.Generator().manual_seed(1))
    a = posterior_samples(eps, op, y, 0.1, num_samples=2, sampler="dpmpp-2m", nfe=5, generator=1)
    b = posterior_samples(eps, op, y, 0.1, num_samples=2, sampler="dpmpp-2m", nfe=5, generator=1)
    c = posterior_samples(eps, op, y, 0.1, num_samples=2, sampler="dpmpp-2m", nfe=5, generator=2)
    assert torch.equal(a, b) and (a - c).abs().max() > 0.1
    assert (a[0] - a[1]).abs().max() > 0.1  # samples of one measurement differ
    chunked = posterior_samples(eps, op, y, torch.tensor([0.1, 0.2]), 2, "dpmpp-2m", 5, generator=1, batch_size=3)
    assert chunked.shape == (2, 2, *SHAPE) and torch.isfinite(chunked).all()


def test_conditional_and_unconditional_models(runs):
    cond = load_model(runs["conditional"], device="cpu")
    op = Inpaint(random_masks(SHAPE, 2, 0.5, torch.Generator().manual_seed(0)), SHAPE)
    y = op.measure(_x0(2), 0.05, torch.Generator().manual_seed(1))
    a = posterior_samples(cond, op, y, 0.05, num_samples=2, nfe=4, generator=5)
    assert a.shape == (2, 2, *SHAPE) and torch.equal(a, posterior_samples(cond, op, y, 0.05, 2, nfe=4, generator=5))
    assert posterior_samples(cond, None, None, num_samples=2, nfe=4).shape == (2, 1, *SHAPE)
    den = load_model(runs["denoiser"], device="cpu")
    assert den.objective == "denoiser" and den.tasks == ("none",)
    with pytest.raises(ValueError, match="not trained for measurements"):
        posterior_samples(den, op, y, 0.05)
    prior = posterior_samples(den, None, None, num_samples=3, nfe=4, generator=0)
    assert prior.shape == (3, 1, *SHAPE) and torch.isfinite(prior).all()


def test_posterior_samples_checks_its_inputs(eps):
    op = Inpaint(random_masks(SHAPE, 2, 0.5, torch.Generator().manual_seed(0)), SHAPE)
    y = op.measure(_x0(2), 0.05)
    with pytest.raises(ValueError, match="batch size 3"):
        posterior_samples(eps, op, torch.cat([y, y[:1]]), 0.05)
    with pytest.raises(ValueError, match="shape"):
        posterior_samples(eps, SeparableSR(SHAPE, 4), y, 0.05)
    with pytest.raises(ValueError, match="NaN"):
        posterior_samples(eps, op, y.clone().fill_(float("nan")), 0.05)
    with pytest.raises(ValueError, match=">= 0"):
        posterior_samples(eps, op, y, -0.1)
    with pytest.raises(ValueError, match="without an operator"):
        posterior_samples(eps, None, y, 0.05)
    with pytest.raises(ValueError, match="1-channel"):
        posterior_samples(eps, Inpaint(torch.ones(1, 16, 16), (1, 16, 16)), y[:, :1], 0.05)
    with pytest.raises(ValueError, match="num_samples"):
        posterior_samples(eps, op, y, 0.05, num_samples=0)


# -- files ---------------------------------------------------------------------------------------------------


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


# -- command line -------------------------------------------------------------------------------------------


def _sample(model, out, *extra) -> list[str]:
    return ["sample", "--model", str(model), "--out", str(out), "--num-samples", "2", "--nfe", "4", *extra]


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
