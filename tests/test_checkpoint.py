"""Checkpoints: a trainer's state round trip, RNG states, missing and corrupt files."""

from __future__ import annotations

import random

import numpy as np
import pytest
import torch
from helpers import MLPEPS, _state_equal, gmm_prior, make_trainer

from exactps.checkpoint import (
    CheckpointError,
    capture_rng_state,
    load_checkpoint,
    restore_rng_state,
    save_checkpoint,
)
from exactps.models import load_pretrained
from exactps.train import TrainConfig


def test_checkpoint_round_trip(tmp_path):
    trainer = make_trainer(tmp_path / "run")
    trainer.fit(gmm_prior(), 3)
    path = trainer.save()
    ckpt = load_checkpoint(path)
    assert ckpt.step == 3 and path.name == "step-000000003.json"
    assert _state_equal(ckpt.model, trainer.model.state_dict())
    assert _state_equal(ckpt.ema, trainer.ema.state_dict())
    assert not _state_equal(ckpt.ema, ckpt.model)
    opt = trainer.optimizer.state_dict()
    assert ckpt.optimizer["param_groups"][0]["betas"] == opt["param_groups"][0]["betas"]
    for i, st in opt["state"].items():
        assert all(torch.equal(ckpt.optimizer["state"][i][k], v) for k, v in st.items())
    meta = ckpt.meta
    assert TrainConfig.from_dict(meta["train_config"]) == trainer.config
    assert meta["data_position"]["next_step"] == 3 and meta["data_position"]["images_seen"] == 96
    # a fresh trainer restores everything
    other = make_trainer(model_seed=1)
    other.load(path)
    assert other.step == 3
    assert _state_equal(other.model.state_dict(), trainer.model.state_dict())
    assert _state_equal(other.ema.state_dict(), trainer.ema.state_dict())
    assert other.optimizer.state_dict()["param_groups"] == opt["param_groups"]


def test_rng_states_round_trip(tmp_path):
    state = capture_rng_state()
    save_checkpoint(tmp_path, 1, {"w": torch.zeros(2)}, meta={"rng": state})
    first = (torch.rand(3), random.random(), np.random.rand(3))  # noqa: NPY002
    restore_rng_state(load_checkpoint(tmp_path).meta["rng"])
    again = (torch.rand(3), random.random(), np.random.rand(3))  # noqa: NPY002
    assert torch.equal(first[0], again[0]) and first[1] == again[1] and np.array_equal(first[2], again[2])


def test_missing_and_corrupt_checkpoints_raise_naming_the_file(tmp_path):
    with pytest.raises(FileNotFoundError, match="nowhere"):
        load_checkpoint(tmp_path / "nowhere.json")
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        load_checkpoint(tmp_path)
    trainer = make_trainer(tmp_path / "run")
    trainer.fit(gmm_prior(), 2)
    json_path = trainer.save()
    tensors = json_path.with_suffix(".safetensors")
    good = tensors.read_bytes()

    flipped = bytearray(good)
    flipped[len(good) // 2] ^= 0xFF
    tensors.write_bytes(bytes(flipped))
    with pytest.raises(CheckpointError, match=str(tensors.name)):
        load_checkpoint(json_path)
    tensors.write_bytes(good[:-10])
    with pytest.raises(CheckpointError, match="truncated"):
        load_checkpoint(json_path)
    tensors.unlink()
    with pytest.raises(FileNotFoundError, match=str(tensors.name)):
        load_checkpoint(json_path)
    tensors.write_bytes(good)
    load_checkpoint(json_path)  # intact again
    json_path.write_text("{not json")
    with pytest.raises(CheckpointError, match=json_path.name):
        load_checkpoint(json_path)
    with pytest.raises(CheckpointError, match=json_path.name):
        make_trainer(tmp_path / "run", resume=True)
    with pytest.raises(FileNotFoundError, match="cannot resume"):
        make_trainer(tmp_path / "empty", resume=True)
    with pytest.raises(CheckpointError, match=r"bad\.safetensors"):
        (tmp_path / "bad.safetensors").write_bytes(b"garbage")
        load_pretrained(MLPEPS(), tmp_path / "bad.safetensors")


def test_verify_checkpoint_checks_size_and_hash_without_loading(tmp_path):
    from exactps.checkpoint import verify_checkpoint

    trainer = make_trainer(tmp_path / "run")
    json_path = trainer.save()
    assert verify_checkpoint(json_path)["step"] == 0
    tensors = json_path.with_suffix(".safetensors")
    good = tensors.read_bytes()
    flipped = bytearray(good)
    flipped[len(good) // 2] ^= 0xFF
    tensors.write_bytes(bytes(flipped))
    with pytest.raises(CheckpointError, match="SHA-256"):
        verify_checkpoint(json_path)
    tensors.write_bytes(good[:-3])
    with pytest.raises(CheckpointError, match="truncated"):
        verify_checkpoint(json_path)
    json_path.write_text("{")
    with pytest.raises(CheckpointError, match="corrupt or unreadable"):
        verify_checkpoint(json_path)
