"""Training machinery: EPS loss, trainer, checkpoints, exact resume, fine-tuning, DDP, CLI entry.

Most tests use a small MLP EPS denoiser on 8-pixel images (1, 2, 4) drawn from a Gaussian mixture,
so they run in seconds on a CPU; the fine-tuning and CLI tests use the ``tiny`` U-Net preset.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from exactps.training import TrainConfig, Trainer, add_train_arguments, load_pretrained, train_main
from torch import nn

from exactps.checkpoint import (
    CheckpointError,
    capture_rng_state,
    list_checkpoints,
    load_checkpoint,
    restore_rng_state,
    save_checkpoint,
)
from exactps.conditional import ConditionalDenoiser, ConditionalPredictor, conditioning_image
from exactps.covariance import IsotropicNoise, SpectralNoise
from exactps.data import ShardLayout, StepBatches
from exactps.images import save_grid
from exactps.operators import Inpaint, random_masks
from exactps.priors import GaussianMixture

SHAPE = (1, 2, 4)
D = 8
SD = 0.5
TESTS_DIR = Path(__file__).resolve().parent


# -- small models ---------------------------------------------------------------------------------------


def _levels(v: torch.Tensor, lo: float, hi: float, batch: int) -> torch.Tensor:
    return torch.broadcast_to(v.reshape(-1), (batch,)).clamp(lo, hi).log().unsqueeze(1) / 4


def _mlp(n_in: int, n_out: int, width: int, depth: int, dropout: float = 0.0) -> nn.Sequential:
    layers: list[nn.Module] = []
    d = n_in
    for _ in range(depth):
        layers += [nn.Linear(d, width), nn.SiLU()]
        if dropout:
            layers.append(nn.Dropout(dropout))
        d = width
    layers.append(nn.Linear(d, n_out))
    return nn.Sequential(*layers)


class MLPEPS(nn.Module):
    """EPS denoiser for 8-pixel images: ``F(c_in(S) m, mask, log rho, log s_y)`` with the matrix EDM
    preconditioning ``D = c_skip(S) m + c_out(S) F`` (``S`` diagonal for inpainting)."""

    def __init__(self, width: int = 64, depth: int = 2, dropout: float = 0.0):
        super().__init__()
        self.net = _mlp(2 * D + 2, D, width, depth, dropout)

    def forward(self, m: torch.Tensor, noise) -> torch.Tensor:
        batch = m.shape[0]
        if isinstance(noise, SpectralNoise):
            mask = noise.operator.physics.mask.expand(m.shape).flatten(1).to(m.dtype)
        else:
            mask = torch.zeros(batch, D, dtype=m.dtype, device=m.device)
        x = noise.apply(lambda l: torch.rsqrt(SD**2 + l), m).flatten(1)
        feats = [x, mask, _levels(noise.rho, 1e-5, 1e5, batch), _levels(noise.sigma_y, 1e-3, 1e3, batch)]
        out = self.net(torch.cat(feats, 1)).reshape(m.shape)
        skip = noise.apply(lambda l: SD**2 / (SD**2 + l), m)
        return skip + noise.apply(lambda l: SD * torch.rsqrt(1 + SD**2 / l), out)


class MLPConditionalBackbone(nn.Module):
    """``(x (B, 2, 2, 4), rho, s_y) -> F (B, 1, 2, 4)`` for :class:`ConditionalDenoiser`."""

    def __init__(self, width: int = 64, depth: int = 2):
        super().__init__()
        self.net = _mlp(2 * D + 2, D, width, depth)

    def forward(self, x: torch.Tensor, rho: torch.Tensor, sigma_y: torch.Tensor) -> torch.Tensor:
        b = x.shape[0]
        feats = [x.flatten(1), _levels(rho, 1e-5, 1e5, b), _levels(sigma_y, 1e-3, 1e3, b)]
        return self.net(torch.cat(feats, 1)).reshape(b, *SHAPE)


def inpaint_factory(p_missing: float = 0.5):
    """Task factory: an inpainting mask per sample (every task name maps to it)."""

    def factory(task, img_shape, generator, dtype, batch=1):
        return Inpaint(random_masks(img_shape, batch, p_missing, generator).to(dtype), img_shape)

    return factory


def gmm_prior(seed: int = 0, n_components: int = 4) -> GaussianMixture:
    return GaussianMixture.random(SHAPE, n_components, torch.Generator().manual_seed(seed))


def small_config(**kw) -> TrainConfig:
    base = {
        "objective": "eps",
        "tasks": ("inpaint-random",),
        "sigma_y": (0.02, 0.2),
        "batch_size": 32,
        "lr": 2e-3,
        "warmup_steps": 5,
        "ema_decay": 0.99,
        "steps": 10,
        "log_every": 1000,
        "ckpt_every": 1000,
        "grid_every": 1000,
        "keep_checkpoints": 0,
    }
    base.update(kw)
    return TrainConfig(**base)


def make_trainer(out=None, *, model_seed: int = 0, dropout: float = 0.1, resume: bool = False, **kw) -> Trainer:
    """An MLP EPS trainer (dropout on, so resume must also restore the dropout masks)."""
    torch.manual_seed(model_seed)
    model = MLPEPS(dropout=dropout)
    cfg = small_config(**kw)
    return Trainer(model, cfg, out, resume=resume, task_factory=inpaint_factory(), show_progress=False)


def _state_equal(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_config_validation_and_round_trip():
    cfg = small_config(sigma_y=(0.01, 0.1), task_probs=(1.0,))
    again = TrainConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert again == cfg
    for bad in (
        {"objective": "score"},
        {"sigma_y": (0.2, 0.1)},
        {"task_probs": (1.0, 2.0)},
        {"micro_batch": 5},
        {"batch_size": 0},
    ):
        with pytest.raises(ValueError):
            small_config(**bad).validate()
    with pytest.raises(ValueError, match="shards"):
        ShardLayout(batch_size=12, micro_batch=4, world=2)
    lay = ShardLayout(batch_size=16, micro_batch=4, world=2, rank=1)
    assert (lay.n_shards, lay.accum, list(lay.shards)) == (4, 2, [2, 3])


# -- the trainer --------------------------------------------------------------------------------------------


def test_loss_decreases_on_a_gaussian_mixture():
    prior = gmm_prior()
    trainer = make_trainer(dropout=0.0, batch_size=128, lr=3e-3)
    held_out = prior.sample(512, torch.Generator().manual_seed(9))
    before = trainer.held_out_loss(held_out)
    losses = trainer.fit(prior, 150)
    after = trainer.held_out_loss(held_out)
    assert len(losses) == 150 and trainer.step == 150
    assert after < 0.75 * before, (before, after)
    assert np.mean(losses[-20:]) < np.mean(losses[:20])
    assert trainer.held_out_loss(held_out, use_ema=True) < before


@pytest.mark.parametrize("objective", ["denoiser", "conditional"])
def test_other_objectives_train(objective):
    torch.manual_seed(0)
    model = MLPEPS() if objective == "denoiser" else ConditionalDenoiser(MLPConditionalBackbone(), 1, SD)
    cfg = small_config(objective=objective, tasks=("inpaint-random", "none"), batch_size=64)
    trainer = Trainer(model, cfg, task_factory=inpaint_factory(), show_progress=False)
    losses = trainer.fit(gmm_prior(), 40)
    assert all(math.isfinite(v) for v in losses)
    assert np.mean(losses[-10:]) < np.mean(losses[:10])


def test_trainer_writes_logs_grids_and_checkpoints(tmp_path):
    out = tmp_path / "run"
    trainer = make_trainer(out, log_every=2, ckpt_every=3, grid_every=4, grid_nfe=3, keep_checkpoints=2)
    trainer.fit(gmm_prior(), 8)
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert [e["step"] for e in log] == [2, 4, 6, 8]
    assert all({"loss", "lr", "img_per_s", "grad_norm"} <= e.keys() for e in log)
    assert [s for s, _ in list_checkpoints(out / "checkpoints")] == [6, 8]  # kept 2 (3 pruned), final 8
    assert sorted(p.name for p in (out / "grids").iterdir()) == ["step-000000004.png", "step-000000008.png"]
    assert json.loads((out / "config.json").read_text())["train_config"]["ckpt_every"] == 3
    assert not list(out.rglob("*.tmp"))
    resumed = make_trainer(out, resume=True, log_every=2, ckpt_every=3, grid_every=4, grid_nfe=3, keep_checkpoints=2)
    assert torch.equal(resumed.preview_images(gmm_prior()), trainer.preview_images(gmm_prior()))  # same grid images


def test_save_grid(tmp_path):
    from PIL import Image

    rows = [torch.rand(3, 3, 4, 5) * 2 - 1, torch.rand(2, 3, 4, 5) * 2 - 1]
    path = save_grid(rows, tmp_path / "g" / "grid.png", pad=1)
    img = Image.open(path)
    assert img.size == (3 * 6 + 1, 2 * 5 + 1) and img.mode == "RGB"
    gray = save_grid([torch.zeros(2, 1, 4, 4)], tmp_path / "gray.png")
    assert Image.open(gray).mode == "L"


def test_step_batches_cover_each_epoch_and_are_reproducible():
    data = torch.arange(10.0).reshape(10, 1, 1, 1)
    source = StepBatches(data, micro_batch=3, n_shards=2, seed=0)
    got = torch.cat([source[(k, j)] for k in range(5) for j in range(2)]).flatten()  # 30 = 3 epochs
    for epoch in range(3):
        assert sorted(got[10 * epoch : 10 * epoch + 10].tolist()) == list(range(10))
    assert torch.equal(source[(3, 1)], StepBatches(data, 3, 2, 0)[(3, 1)])
    assert not torch.equal(got[:10], got[10:20])  # a new permutation every epoch


def test_loader_worker_processes_give_the_same_batches():
    from exactps.data import BuiltinSource

    data = BuiltinSource(8, channels=1)
    serial = make_trainer(batch_size=4, micro_batch=2, num_workers=0)
    parallel = make_trainer(batch_size=4, micro_batch=2, num_workers=2)
    assert serial.data_workers() == 0 and parallel.data_workers() == 2
    assert make_trainer().data_workers() == 0  # default on the CPU
    for a, b in zip(serial.batches(data, 3), parallel.batches(data, 3), strict=True):
        assert len(a) == len(b) == 2 and all(torch.equal(u, v) for u, v in zip(a, b, strict=True))


def test_dataset_item_randomness_is_seeded_and_global_rng_untouched():
    class Flippy(torch.utils.data.Dataset):
        def __len__(self):
            return 4

        def __getitem__(self, i):
            return torch.full((1, 2, 4), float(i)) + torch.rand(()) + random.random() + np.random.rand()  # noqa: NPY002

    torch.manual_seed(123)
    state = torch.get_rng_state()
    a = StepBatches(Flippy(), 2, 1, seed=5)[(1, 0)]
    assert torch.equal(torch.get_rng_state(), state)
    b = StepBatches(Flippy(), 2, 1, seed=5)[(1, 0)]
    assert torch.equal(a, b)


def test_plain_iterable_of_batches():
    prior = gmm_prior()
    batches = [prior.sample(32, torch.Generator().manual_seed(i)) for i in range(3)]
    trainer = make_trainer()
    assert len(trainer.fit(batches, 10)) == 3  # stops when the iterable ends


# -- checkpoints --------------------------------------------------------------------------------------------


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


def test_resume_gives_bitwise_identical_losses(tmp_path):
    prior = gmm_prior()
    reference = make_trainer(tmp_path / "ref")
    expected = reference.fit(prior, 8)
    first = make_trainer(tmp_path / "run")
    assert first.fit(prior, 4) == expected[:4]
    del first  # "killed" after its checkpoint at step 4
    resumed = make_trainer(tmp_path / "run", model_seed=7, resume=True)
    assert resumed.step == 4
    assert resumed.fit(prior, 8) == expected[4:]  # bitwise
    assert _state_equal(resumed.model.state_dict(), reference.model.state_dict())
    assert _state_equal(resumed.ema.state_dict(), reference.ema.state_dict())


def test_resume_with_a_dataset_across_epochs(tmp_path):
    data = gmm_prior().sample(40, torch.Generator().manual_seed(3)).float()  # an epoch = 1.25 steps
    expected = make_trainer(tmp_path / "ref", dropout=0.0).fit(data, 6)
    make_trainer(tmp_path / "run", dropout=0.0).fit(data, 3)
    assert make_trainer(tmp_path / "run", dropout=0.0, resume=True).fit(data, 6) == expected[3:]


_KILL_SCRIPT = """
import sys, torch
torch.set_num_threads(1)
sys.path.insert(0, {tests!r})
from test_training import gmm_prior, make_trainer
trainer = make_trainer({out!r}, ckpt_every=2, log_every=1)
trainer.fit(gmm_prior(), 10**6)
"""


def test_kill_9_and_resume(tmp_path):
    """A training process killed with SIGKILL resumes from its last checkpoint and continues exactly."""
    out = tmp_path / "run"
    script = _KILL_SCRIPT.format(tests=str(TESTS_DIR), out=str(out))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen([sys.executable, "-c", script], env=env, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 120
        while len(list_checkpoints(out / "checkpoints")) < 3:
            if proc.poll() is not None:
                pytest.fail(f"training process exited early: {proc.stderr.read().decode()[-2000:]}")
            if time.monotonic() > deadline:
                pytest.fail("no checkpoint within 120 s")
            time.sleep(0.05)
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait()
    resumed = make_trainer(out, resume=True)
    k = resumed.step
    assert k >= 6 and k % 2 == 0
    log_steps = [json.loads(line)["step"] for line in (out / "log.jsonl").read_text().splitlines()]
    assert log_steps == list(range(1, k + 1))  # lines written after the checkpoint were dropped
    prior = gmm_prior()
    continued = resumed.fit(prior, k + 3)
    expected = make_trainer(tmp_path / "ref").fit(prior, k + 3)[k:]
    assert continued == expected


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


def test_existing_output_directory_needs_resume(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    with pytest.raises(FileExistsError, match=str(out)):
        make_trainer(out)
    assert (out / "notes.txt").read_text() == "mine" and len(list(out.iterdir())) == 1
    make_trainer(tmp_path / "empty_ok")  # a new (or empty) directory is fine
    (tmp_path / "empty").mkdir()
    make_trainer(tmp_path / "empty")
    save_checkpoint(tmp_path / "c", 1, {"w": torch.zeros(1)})
    with pytest.raises(FileExistsError):
        save_checkpoint(tmp_path / "c", 1, {"w": torch.ones(1)})


# -- fine-tuning -----------------------------------------------------------------------------------------------


def _unconditional_checkpoint(tmp_path: Path):
    from exactps.networks import EPSDenoiser

    torch.manual_seed(0)
    base = EPSDenoiser("tiny", channels=3, conditioning="none").eval()
    with torch.no_grad():  # make every weight non-trivial (zero-initialised output layers included)
        g = torch.Generator().manual_seed(1)
        for p in base.parameters():
            p.add_(0.05 * torch.randn(p.shape, generator=g))
    path = save_checkpoint(tmp_path / "pre", 100, base.state_dict(), ema=base.state_dict())
    return base, path


@pytest.mark.parametrize("conditioning", ["scalar", "map"])
def test_finetune_loads_every_unconditional_weight(tmp_path, conditioning):
    from exactps.networks import EPSDenoiser

    base, path = _unconditional_checkpoint(tmp_path)
    torch.manual_seed(5)
    model = EPSDenoiser("tiny", channels=3, conditioning=conditioning).eval()
    report = load_pretrained(model, path)
    assert sorted(report.missing) == sorted(model.conditioning_keys()) and not report.unexpected
    assert report.loaded == len(base.state_dict())
    state = model.state_dict()
    assert all(torch.equal(state[k], v) for k, v in base.state_dict().items())
    assert all(state[k].abs().sum() == 0 for k in report.missing)
    # A = 0: the first EPS prediction is the unconditional model's
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(2))
    noise = IsotropicNoise(torch.tensor([0.3, 2.0]))
    with torch.no_grad():
        assert torch.allclose(model(x, noise), base(x, noise), atol=1e-6)


def test_finetune_conditional_baseline_from_unconditional(tmp_path):
    from exactps.conditional import ConditionalUNet

    base, path = _unconditional_checkpoint(tmp_path)
    model = ConditionalDenoiser(ConditionalUNet("tiny", 3), 3).eval()
    report = load_pretrained(model, path)
    assert sorted(report.missing) == sorted(model.conditioning_keys())
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(2))
    rho = torch.tensor([0.3, 2.0])
    cond = torch.randn_like(x)  # conditioning weights start at zero: ignored until trained
    with torch.no_grad():
        assert torch.allclose(model(x, rho, cond, torch.tensor([0.05, 0.05])), base(x, IsotropicNoise(rho)), atol=1e-6)


def test_finetune_rejects_a_mismatched_checkpoint(tmp_path):
    path = save_checkpoint(tmp_path, 1, MLPEPS(width=32).state_dict())
    with pytest.raises(ValueError, match=str(path)):
        load_pretrained(MLPEPS(width=64), path)


# -- distributed ---------------------------------------------------------------------------------------------


def _ddp_worker(rank: int, world: int, init: str, out: str) -> None:
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=init, rank=rank, world_size=world)
    try:
        trainer = make_trainer(Path(out) / "run", batch_size=16, micro_batch=8)
        losses = trainer.fit(gmm_prior(), 6)
        if rank == 0:
            torch.save({"losses": losses, "state": trainer.model.state_dict()}, Path(out) / "ddp.pt")
    finally:
        dist.destroy_process_group()


def test_ddp_on_cpu_matches_one_process(tmp_path):
    """2 gloo processes x 8 images = 1 process x 16 images in 2 micro-batches (same shards, same seeds)."""
    import torch.multiprocessing as mp

    init = f"file://{tmp_path / 'rendezvous'}"
    mp.spawn(_ddp_worker, args=(2, init, str(tmp_path)), nprocs=2, join=True)
    ddp = torch.load(tmp_path / "ddp.pt")
    single = make_trainer(batch_size=16, micro_batch=8)
    losses = single.fit(gmm_prior(), 6)
    assert single.layout.accum == 2
    np.testing.assert_allclose(ddp["losses"], losses, rtol=1e-5)
    for k, v in single.model.state_dict().items():
        torch.testing.assert_close(ddp["state"][k], v, rtol=1e-4, atol=1e-6)
    assert [s for s, _ in list_checkpoints(tmp_path / "run" / "checkpoints")] == [6]  # rank 0 only


# -- command-line entry ------------------------------------------------------------------------------------------


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


def test_conditional_predictor_matches_denoiser_call():
    from exactps.interpolants import get_interpolant

    torch.manual_seed(0)
    model = ConditionalDenoiser(MLPConditionalBackbone(), 1, SD)
    interp = get_interpolant("vp-cosine")
    op = inpaint_factory()("t", SHAPE, torch.Generator().manual_seed(1), torch.float32, batch=1)
    y = op.measure(torch.zeros(1, *SHAPE), 0.1, torch.Generator().manual_seed(2))
    x_t = torch.randn(3, *SHAPE)
    t = torch.tensor(0.4)
    a, s = interp.alpha(t), interp.sigma(t)
    with torch.no_grad():
        got = ConditionalPredictor(model, interp, op, y, 0.1)(x_t, t)
        want = model(x_t / a, (s / a).expand(3), conditioning_image(op, y).expand(3, *SHAPE), torch.full((3,), 0.1))
    torch.testing.assert_close(got, want)


# -- exactness of a trained EPS denoiser (slow) --------------------------------------------------------------


@pytest.mark.slow
def test_trained_eps_samples_the_exact_posterior():
    """MLP EPS denoiser trained on an 8-D Gaussian mixture with random inpainting masks: Heun at 50 NFE
    on held-out measurements has SW2 / Monte-Carlo floor <= 2 against the exact posterior. The
    conditional baseline (same budget, same draws) is reported beside it."""
    from exactps.interpolants import get_interpolant
    from exactps.metrics import sliced_w2
    from exactps.posterior import PosteriorPredictor
    from exactps.priors import dense_matrix
    from exactps.samplers import sample
    from exactps.verify import GMMProblem, gmm_sw2_ratio

    prior, sigma_y, n = gmm_prior(), 0.1, 2000
    cfg = small_config(sigma_y=sigma_y, batch_size=1024, steps=4000, warmup_steps=100, ema_decay=0.999)
    nets = {}
    for objective in ("eps", "conditional"):
        torch.manual_seed(0)
        model = MLPEPS(256, 3) if objective == "eps" else ConditionalDenoiser(MLPConditionalBackbone(256, 3), 1, SD)
        trainer = Trainer(model, TrainConfig(**{**cfg.to_dict(), "objective": objective}), show_progress=False,
                          task_factory=inpaint_factory())  # fmt: skip
        trainer.fit(prior)
        nets[objective] = trainer.ema
    interp = get_interpolant("ve")
    report = []
    for seed in (123, 124):
        g = torch.Generator().manual_seed(seed)
        x0 = prior.sample(1, g)
        mask = random_masks(SHAPE, 1, 0.5, g)
        op = Inpaint(mask.double(), SHAPE)
        y = op.measure(x0, sigma_y, g)
        post = prior.posterior(dense_matrix(op), y, sigma_y)
        ref, other = post.sample(n, g), post.sample(n, g)
        floor = sliced_w2(other, ref, 256, torch.Generator().manual_seed(1))
        problem = GMMProblem(prior, op, x0, y, sigma_y, post, ref, floor, 256, 1)
        op32, y32 = Inpaint(mask, SHAPE), y.float()
        ratios = {}
        for name, net in nets.items():
            cls = PosteriorPredictor if name == "eps" else ConditionalPredictor
            with torch.no_grad():
                out = sample(cls(net, interp, op32, y32, sigma_y), interp, (n, *SHAPE), "heun", 50,
                             generator=torch.Generator().manual_seed(7))  # fmt: skip
            ratios[name] = gmm_sw2_ratio(problem, out.x.double())
        exact = sample(problem.predictor(interp), interp, (n, *SHAPE), "heun", 50,
                       generator=torch.Generator().manual_seed(7), dtype=torch.float64)  # fmt: skip
        ratios["exact denoiser"] = gmm_sw2_ratio(problem, exact.x)
        report.append((seed, ratios))
        print(f"held-out {seed}: SW2/floor at 50 NFE (Heun): " + ", ".join(f"{k} {v:.2f}" for k, v in ratios.items()))
    for seed, ratios in report:
        assert ratios["eps"] <= 2.0, (seed, ratios)


def test_preflight_refuses_bad_task_and_size_before_creating_the_run(tmp_path):
    from exactps.training import ModelConfig, run_training

    data = torch.rand(4, 3, 18, 18) * 2 - 1
    cfg = TrainConfig(objective="eps", tasks=("sr4",), batch_size=2, steps=1)
    with pytest.raises(ValueError, match=r"sr4.*factor 4"):
        run_training(cfg, ModelConfig("tiny", 3, "map", 0.5, 18), data, tmp_path / "run", show_progress=False)
    assert not (tmp_path / "run").exists()
    with pytest.raises(ValueError, match="betas"):
        TrainConfig(betas=(0.9,)).validate()
    with pytest.raises(ValueError, match="num_workers"):
        TrainConfig(num_workers=-1).validate()
