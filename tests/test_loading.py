"""Loading trained models: a run directory, a checkpoint and an exported model file give the same
weights, and loading errors name the file.

The models are the ``tiny`` U-Net runs of the ``runs`` fixture (``conftest.py``).
"""

from __future__ import annotations

import hashlib
import json

import pytest
import torch
from helpers import IMAGE_SHAPE as SHAPE
from helpers import _x0

from exactps.checkpoint import (
    CheckpointError,
    load_checkpoint,
    load_state_dict_file,
    save_checkpoint,
    save_model_file,
)
from exactps.covariance import IsotropicNoise
from exactps.loading import export_model, load_model


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
