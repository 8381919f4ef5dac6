"""The trainer: the loss goes down, the run directory, exact resume (also after kill -9), DDP on the CPU,
the exactness of a trained EPS denoiser (slow), and the preflight check of a run.

The tests use a small MLP EPS denoiser on 8-pixel images (1, 2, 4) drawn from a Gaussian mixture
(:mod:`helpers`), so they run in seconds on a CPU.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import (
    MLPEPS,
    SD,
    SHAPE,
    TESTS_DIR,
    MLPConditionalBackbone,
    _state_equal,
    gmm_prior,
    inpaint_tasks,
    make_trainer,
    small_config,
)

from exactps.checkpoint import list_checkpoints, save_checkpoint
from exactps.conditional import ConditionalDenoiser, ConditionalPredictor
from exactps.operators import Inpaint, random_masks
from exactps.train import TrainConfig, Trainer


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
    trainer = Trainer(model, cfg, tasks=inpaint_tasks(), show_progress=False)
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


# -- exact resume --------------------------------------------------------------------------------------------


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
from helpers import gmm_prior, make_trainer
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
                          tasks=inpaint_tasks())  # fmt: skip
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
    from exactps.models import ModelConfig
    from exactps.train import run_training

    data = torch.rand(4, 3, 18, 18) * 2 - 1
    cfg = TrainConfig(objective="eps", tasks=("sr4",), batch_size=2, steps=1)
    with pytest.raises(ValueError, match=r"sr4.*factor 4"):
        run_training(cfg, ModelConfig("tiny", 3, "map", 0.5, 18), data, tmp_path / "run", show_progress=False)
    assert not (tmp_path / "run").exists()
    with pytest.raises(ValueError, match="betas"):
        TrainConfig(betas=(0.9,)).validate()
    with pytest.raises(ValueError, match="num_workers"):
        TrainConfig(num_workers=-1).validate()
