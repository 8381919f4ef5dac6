"""Files written before the redesign still load: the shipped model and a run directory made by
exactps 0.1.0 at commit 7f77e35 (``tests/fixtures/legacy-run``, written by
``tests/fixtures/make_legacy_run.py`` with a micro U-Net registered as ``fixture-micro``).

The legacy run trained 4 steps and logged every step; its step-4 checkpoint was removed, so resuming
from step 2 with today's code must reproduce the logged losses of steps 3 and 4 exactly.
"""

import json
import math
import shutil
from pathlib import Path

import pytest
import torch

from exactps.cli import main as exactps
from exactps.loading import load_model
from exactps.networks import PRESETS, BackbonePreset

FIXTURES = Path(__file__).resolve().parent / "fixtures"
MODELS = Path(__file__).resolve().parents[1] / "models"
MICRO = BackbonePreset(8, 32, (1,), 1, (), channel_mult_emb=1, dropout=0.0)  # as in make_legacy_run.py


@pytest.fixture
def legacy_run(tmp_path, monkeypatch):
    monkeypatch.setitem(PRESETS, "fixture-micro", MICRO)
    run = tmp_path / "legacy-run"
    shutil.copytree(FIXTURES / "legacy-run", run)
    return run


def _losses(run: Path) -> dict[int, float]:
    return {e["step"]: e["loss"] for e in map(json.loads, (run / "log.jsonl").read_text().splitlines())}


def test_legacy_run_loads_for_sampling(legacy_run):
    loaded = load_model(legacy_run, device="cpu")
    assert loaded.objective == "eps" and loaded.step == 2 and loaded.images_seen == 8
    assert loaded.tasks == ("inpaint-box", "deblur-gauss") and loaded.img_shape == (3, 8, 8)
    with torch.no_grad():
        out = loaded.model.denoise(torch.zeros(1, 3, 8, 8), 1.0)
    assert out.shape == (1, 3, 8, 8) and bool(torch.isfinite(out).all())


def test_legacy_run_resumes_exactly(legacy_run):
    logged = _losses(legacy_run)
    args = ["train", "--resume", str(legacy_run), "--steps", "4", "--no-progress", "--threads", "1"]
    assert exactps(args) == 0
    resumed = _losses(legacy_run)
    assert sorted(resumed) == [1, 2, 3, 4]
    for step in (3, 4):
        assert math.isclose(resumed[step], logged[step], rel_tol=1e-6), (step, resumed[step], logged[step])


def test_shipped_model_loads_and_exports(tmp_path):
    loaded = load_model(MODELS / "sr4-tiny-16px", device="cpu")
    assert loaded.objective == "eps" and loaded.img_shape == (3, 16, 16) and loaded.tasks == ("sr4",)
    assert exactps(["export", str(MODELS / "sr4-tiny-16px.json"), "--out", str(tmp_path / "again")]) == 0
    again = load_model(tmp_path / "again", device="cpu")
    for (k, a), (_, b) in zip(loaded.model.state_dict().items(), again.model.state_dict().items(), strict=True):
        assert torch.equal(a, b), k
