"""``exactps train``: a new run, its resume, and fine-tuning it into the other objectives (``tiny`` U-Net)."""

from __future__ import annotations

import argparse
import json

import pytest

from exactps.checkpoint import list_checkpoints
from exactps.cli.train import add_train_arguments
from exactps.cli.train import run as train_main


def _parse(argv: list[str]) -> argparse.Namespace:
    return add_train_arguments(argparse.ArgumentParser()).parse_args(argv)


def test_train_main_new_run_resume_and_finetune(tmp_path, capsys):
    common = ["--data", "builtin", "--preset", "tiny", "--size", "16", "--batch", "2", "--no-progress"]
    common += ["--grid-every", "1000", "--task", "inpaint-random,none"]
    run = tmp_path / "pre"
    assert train_main(_parse([*common, "--objective", "denoiser", "--steps", "2", "--out", str(run)])) == 0
    assert [s for s, _ in list_checkpoints(run / "checkpoints")] == [2]
    record = json.loads((run / "config.json").read_text())
    assert record["model_config"]["conditioning"] == "none" and record["run"]["data"] == "builtin"
    # resume: only --steps (and intervals) may change
    assert train_main(_parse(["--resume", str(run), "--steps", "3", "--no-progress"])) == 0
    assert [s for s, _ in list_checkpoints(run / "checkpoints")] == [2, 3]
    with pytest.raises(ValueError, match="--lr"):
        train_main(_parse(["--resume", str(run), "--lr", "1e-3"]))
    with pytest.raises(FileExistsError, match=str(run)):
        train_main(_parse([*common, "--steps", "1", "--out", str(run)]))
    # fine-tune the unconditional run into EPS and into the conditional baseline
    for objective in ("eps", "conditional"):
        out = tmp_path / objective
        argv = [*common, "--objective", objective, "--init", str(run), "--steps", "1", "--out", str(out)]
        assert train_main(_parse(argv)) == 0
        assert "loaded" in capsys.readouterr().out
        assert list_checkpoints(out / "checkpoints")
