"""``exactps train``: a new run, its resume, and fine-tuning it into the other objectives (``tiny`` U-Net)."""

from __future__ import annotations

import argparse
import json

import pytest
import torch

from exactps.checkpoint import list_checkpoints
from exactps.cli.train import add_train_arguments
from exactps.cli.train import run as train_main
from exactps.train import TrainConfig


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


def _main(argv: list[str], capsys) -> tuple[int, str]:
    from exactps.cli import main

    capsys.readouterr()
    code = main(["train", *argv])
    return code, capsys.readouterr().err


_TINY = ["--data", "builtin", "--preset", "tiny", "--batch", "2", "--no-progress", "--threads", "1"]


def test_data_must_be_a_folder_or_builtin(tmp_path, capsys):
    photo = tmp_path / "photo.png"
    photo.write_bytes(b"\x89PNG not really")
    code, err = _main([*_TINY, "--data", str(photo), "--out", str(tmp_path / "run")], capsys)
    assert code == 2 and err.count("\n") == 1 and err.startswith("exactps: error: ")
    assert str(photo) in err and "not a folder" in err and "'builtin'" in err
    code, err = _main([*_TINY, "--data", str(tmp_path / "nowhere"), "--out", str(tmp_path / "run")], capsys)
    assert code == 2 and "nowhere does not exist" in err
    assert not (tmp_path / "run").exists()


def test_size_is_checked_before_any_work(tmp_path, capsys, monkeypatch):
    from exactps.models import ModelConfig
    from exactps.train import session

    out = tmp_path / "run"
    for size in ("-16", "0", "15"):
        code, err = _main([*_TINY, "--size", size, "--out", str(out)], capsys)
        assert code == 2 and f"--size {size} " in err and "positive multiple of 2" in err
    code, err = _main([*_TINY, "--size", "4096", "--batch", "64", "--out", str(out)], capsys)
    assert code == 2 and "GiB" in err and "--micro-batch" in err and "--size" in err
    assert not out.exists()
    # the bound grows with micro-batch x size^2 and is refused against the device's memory
    small = session.estimate_step_memory(ModelConfig("tiny", 3, "map", 0.5, 16), 2, 10**6)
    assert session.estimate_step_memory(ModelConfig("tiny", 3, "map", 0.5, 32), 4, 10**6) - 20 * 10**6 == 8 * (
        small - 20 * 10**6
    )
    assert session.device_memory(torch.device("cpu")) > 2**28
    # gradient checkpointing keeps a quarter of the activation bound
    ckpt = session.estimate_step_memory(ModelConfig("tiny", 3, "map", 0.5, 16), 2, 10**6, grad_checkpoint=True)
    assert ckpt - 20 * 10**6 == pytest.approx((small - 20 * 10**6) / 4, abs=1)
    monkeypatch.setattr(session, "device_memory", lambda device: small // 2)
    with pytest.raises(session.InsufficientMemoryError, match="smaller --micro-batch"):
        train_main(_parse([*_TINY, "--size", "16", "--out", str(out)]))
    assert not out.exists()


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"lr": -1.0}, "lr must be > 0, got -1.0"),
        ({"ema_decay": 1.0}, "ema_decay must be in [0, 1), got 1.0"),
        ({"warmup_steps": -5}, "warmup_steps must be >= 0, got -5"),
        ({"p_std": 0.0}, "p_std must be > 0, got 0.0"),
        ({"weight_decay": -0.1}, "weight_decay must be >= 0, got -0.1"),
        ({"keep_checkpoints": -1}, "keep_checkpoints must be >= 0, got -1"),
        ({"grid_images": 0}, "grid_images must be >= 1, got 0"),
        ({"micro_batch": 0}, "micro_batch must be >= 1, got 0"),
        ({"task_probs": (0.0,) * len(TrainConfig.tasks)}, "task_probs must not be all zero"),
    ],
)
def test_config_errors_name_only_the_failing_field(change, message):
    with pytest.raises(ValueError) as err:
        TrainConfig(**change).validate()
    assert str(err.value).startswith(message)
    others = {"lr", "ema_decay", "warmup_steps", "p_std", "weight_decay", "keep_checkpoints", "grid_images"}
    assert not [f for f in others - set(change) if f in str(err.value)]


def test_warmup_default_fits_the_help_example(tmp_path):
    from exactps.cli import _EPILOG
    from exactps.cli.train import _configs_from_args

    example = next(line.split()[2:] for line in _EPILOG.splitlines() if line.strip().startswith("exactps train"))
    cfg, _, _ = _configs_from_args(_parse(example))
    assert cfg.steps == 200 and cfg.warmup_steps == 20 and "20 steps" in _EPILOG
    assert _configs_from_args(_parse([*example, "--steps", "100000"]))[0].warmup_steps == 1000
    assert _configs_from_args(_parse([*example, "--warmup", "7"]))[0].warmup_steps == 7


def test_resume_resolves_checkpoint_paths_cleans_up_and_explains_damage(tmp_path, capsys):
    run = tmp_path / "run"
    argv = [*_TINY, "--size", "16", "--task", "none", "--objective", "denoiser", "--warmup", "1000"]
    argv += ["--steps", "2", "--ckpt-every", "1", "--grid-every", "1000", "--keep", "0", "--out", str(run)]
    assert train_main(_parse(argv)) == 0
    ckpts = run / "checkpoints"
    assert [s for s, _ in list_checkpoints(ckpts)] == [1, 2]
    # a resumed run keeps its stored warm-up (not the new-run default min(1000, steps // 10))
    from exactps.cli.train import _configs_from_run

    assert _configs_from_run(_parse(["--resume", str(run), "--steps", "50"]))[0].warmup_steps == 1000
    # temporary files of a killed run are removed when it resumes
    stale = [ckpts / ".step-000000003.safetensors.k2j4h5g6.tmp", run / ".log.jsonl.abcdefgh.tmp"]
    for p in stale:
        p.write_bytes(b"partial")
    assert train_main(_parse(["--resume", str(run), "--steps", "2", "--no-progress"])) == 0
    assert not any(p.exists() for p in stale) and "removed" in capsys.readouterr().out
    # a checkpoint file: the latest is accepted (its run resumes), an older one is refused naming the run
    latest = ckpts / "step-000000002.json"
    for given in (latest, latest.with_suffix(".safetensors"), ckpts / "step-2.json", ckpts):
        assert train_main(_parse(["--resume", str(given), "--steps", "2", "--no-progress"])) == 0
    for older in (ckpts / "step-000000001.json", ckpts / "step-1.json"):
        code, err = _main(["--resume", str(older), "--steps", "2"], capsys)
        assert code == 2 and "not the latest checkpoint" in err and f"--resume {run}" in err
    code, err = _main(["--resume", str(ckpts / "step-350.json")], capsys)
    assert code == 2 and "expects a run directory" in err and f"--resume {run}" in err and "[1, 2]" in err
    code, err = _main(["--resume", str(tmp_path / "nowhere")], capsys)
    assert code == 2 and "expects a run directory" in err and "nowhere does not exist" in err
    # a damaged latest checkpoint: the error names the newest intact one and how to resume from it
    tensors = latest.with_suffix(".safetensors")
    tensors.write_bytes(tensors.read_bytes()[:-5])
    code, err = _main(["--resume", str(run), "--steps", "3"], capsys)
    assert code == 2 and err.count("\n") == 1 and "step-000000001.json" in err and "move" in err
    for name in ("step-000000002.json", "step-000000002.safetensors"):
        (ckpts / name).rename(tmp_path / name)
    assert train_main(_parse(["--resume", str(run), "--steps", "2", "--no-progress"])) == 0
    assert [s for s, _ in list_checkpoints(ckpts)] == [1, 2]
