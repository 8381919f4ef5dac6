"""``exactps bench``: ``bench models`` scores every checkpoint of a run (``tiny`` U-Net)."""

from __future__ import annotations

import json
import math

import torch

from exactps.cli import main
from exactps.models import ModelConfig
from exactps.train import TrainConfig, run_training


def test_bench_models_cli_scores_every_checkpoint(tmp_path, capsys):
    cfg = TrainConfig(objective="eps", tasks=("sr4",), batch_size=2, steps=2, lr=1e-2, warmup_steps=1,
                      log_every=100, ckpt_every=1, grid_every=100, keep_checkpoints=0)  # fmt: skip
    data = torch.rand(8, 3, 16, 16, generator=torch.Generator().manual_seed(0)) * 2 - 1
    run = tmp_path / "run"
    run_training(cfg, ModelConfig("tiny", 3, "map", 0.5, 16), data, run, device="cpu", show_progress=False)
    out = tmp_path / "scores"
    argv = ["bench", "models", str(run), "--all-checkpoints", "--images", "3", "--rho", "1", "--samples", "2",
            "--nfe", "4", "--sigma-y", "0.05,0.2", "--out", str(out), "--grid", str(tmp_path / "grid.png"),
            "--grid-scale", "2", "--plot", str(tmp_path / "curve.png")]  # fmt: skip
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "| run/step-000000001 | 2 |" in text and "| run/step-000000002 | 4 |" in text
    assert "sr4 s_y=0.2" in text and "posterior samples" in text and "no-model reference" in text
    rows = json.loads(out.with_suffix(".json").read_text())
    assert [r["images_seen"] for r in rows] == [2, 4]
    assert {(d["sigma_y"], d["rho"]) for d in rows[0]["denoiser_psnr"]} == {(0.05, 1.0), (0.2, 1.0)}
    assert all(math.isfinite(s["psnr"]) and math.isfinite(s["mean_psnr"]) for s in rows[1]["samples"])
    from PIL import Image

    grid = Image.open(tmp_path / "grid.png")  # rows: measurement, 2 checkpoints, ground truth; 3 images
    assert grid.size == (2 * (3 * 18 + 2), 2 * (4 * 18 + 2))
    assert Image.open(tmp_path / "curve.png").size[0] > 0
    assert main(argv) == 2  # refuses to overwrite
    assert "exists" in capsys.readouterr().err
    assert main(["bench", "models", str(tmp_path / "missing")]) == 2
