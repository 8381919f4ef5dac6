"""The run directory: created once, never overwritten, log truncated on resume, checkpoints pruned."""

import json

import pytest
import torch

from exactps.checkpoint import CheckpointError, list_checkpoints, load_checkpoint
from exactps.train.rundir import RunDir


def _save(run: RunDir, step: int, keep: int = 2):
    w = {"w": torch.full((2,), float(step))}
    return run.save_checkpoint(step, w, w, {"state": {}, "param_groups": []}, {"note": step}, keep)


def test_a_new_run_needs_an_empty_directory(tmp_path):
    RunDir(tmp_path / "absent").check_new()
    (tmp_path / "empty").mkdir()
    RunDir(tmp_path / "empty").check_new()
    (tmp_path / "used").mkdir()
    (tmp_path / "used" / "x").write_text("")
    with pytest.raises(FileExistsError, match="--resume"):
        RunDir(tmp_path / "used").check_new()
    with pytest.raises(FileNotFoundError, match="no checkpoint"):
        RunDir(tmp_path / "used").check_resumable()


def test_create_log_and_truncate(tmp_path):
    run = RunDir(tmp_path / "run")
    run.create({"objective": "eps"})
    assert json.loads((run.path / "config.json").read_text()) == {"objective": "eps"}
    assert run.checkpoints.is_dir()
    for step in (1, 2, 3):
        run.append_log({"step": step, "loss": 1.0 / step})
    with run.log.open("a") as f:
        f.write("{half a line\n")  # what a killed run may leave
    run.truncate_log(2)
    assert [json.loads(line)["step"] for line in run.log.read_text().splitlines()] == [1, 2]


def test_checkpoints_are_pruned_and_an_existing_step_is_kept(tmp_path):
    run = RunDir(tmp_path / "run")
    run.create({})
    for step in (10, 20, 30):
        _save(run, step)
    assert [s for s, _ in list_checkpoints(run.checkpoints)] == [20, 30]
    assert run.latest_checkpoint().name == "step-000000030.json"
    before = run.latest_checkpoint().read_text()
    _save(run, 30)  # resumed from exactly this state: not rewritten
    assert run.latest_checkpoint().read_text() == before
    assert load_checkpoint(run.latest_checkpoint()).meta["note"] == 30
    _save(run, 40, keep=0)  # keep = 0: all
    assert len(list_checkpoints(run.checkpoints)) == 3


def test_grids_are_named_by_step(tmp_path):
    path = RunDir(tmp_path).save_grid(7, [torch.zeros(2, 3, 4, 4), torch.ones(2, 3, 4, 4)])
    assert path == tmp_path / "grids" / "step-000000007.png" and path.exists()


def test_stale_temporary_files_of_the_run_are_removed(tmp_path):
    run = RunDir(tmp_path / "run")
    run.create({"objective": "eps"})
    _save(run, 1)
    (run.path / "grids").mkdir()
    stale = [
        run.checkpoints / ".step-000000350.safetensors.ab12cd_3.tmp",
        run.checkpoints / ".step-000000350.json.x9y8z7w6.tmp",
        run.path / ".log.jsonl.abcdefgh.tmp",
        run.path / ".config.json.abcdefgh.tmp",
        run.path / "grids" / ".step-000000350.png.qwertyui.tmp",
    ]
    foreign = [  # not a temporary file of what a run writes: left alone
        run.path / ".notes.txt.abcdefgh.tmp",
        run.checkpoints / "step-000000350.safetensors.tmp",
        run.path / "my.tmp",
    ]
    for p in stale + foreign:
        p.write_text("x")
    assert sorted(run.remove_stale_temporaries()) == sorted(stale)
    assert not any(p.exists() for p in stale) and all(p.exists() for p in foreign)
    assert [s for s, _ in list_checkpoints(run.checkpoints)] == [1]
    assert run.remove_stale_temporaries() == []


def test_a_damaged_latest_checkpoint_names_the_newest_intact_one(tmp_path):
    run = RunDir(tmp_path / "run")
    for step in (1, 2, 3):
        _save(run, step, keep=0)
    assert run.latest_checkpoint(verify=True).name == "step-000000003.json"
    tensors = run.checkpoints / "step-000000003.safetensors"
    tensors.write_bytes(tensors.read_bytes()[:-7])  # truncated
    with pytest.raises(CheckpointError, match=r"step-000000002\.json") as err:
        run.latest_checkpoint(verify=True)
    assert "step-000000003.json and step-000000003.safetensors" in str(err.value)
    assert f"--resume {run.path}" in str(err.value)
    flipped = bytearray((run.checkpoints / "step-000000002.safetensors").read_bytes())
    flipped[len(flipped) // 2] ^= 0xFF  # SHA mismatch: step 1 is the newest intact one
    (run.checkpoints / "step-000000002.safetensors").write_bytes(bytes(flipped))
    with pytest.raises(CheckpointError, match=r"newest intact checkpoint is .*step-000000001\.json"):
        run.latest_checkpoint(verify=True)
    (run.checkpoints / "step-000000001.safetensors").unlink()
    with pytest.raises(CheckpointError, match="No older intact checkpoint"):
        run.latest_checkpoint(verify=True)
