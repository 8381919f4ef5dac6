"""The training configuration: validation, JSON round trip, shard layout and the schedules."""

from __future__ import annotations

import itertools
import json

import pytest
import torch
from helpers import gmm_prior, make_trainer, small_config

from exactps.train import TrainConfig
from exactps.train.batches import ShardLayout


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


def test_schedules_warm_up_the_learning_rate_and_the_ema_decay():
    cfg = small_config(lr=2e-3, warmup_steps=5, ema_decay=0.99)
    assert [cfg.lr_at(k) for k in (0, 1, 4, 5, 1000)] == pytest.approx([4e-4, 8e-4, 2e-3, 2e-3, 2e-3])
    assert small_config(warmup_steps=0).lr_at(0) == cfg.lr
    decays = [cfg.ema_decay_at(k) for k in range(2000)]
    assert decays[0] == pytest.approx(0.1) and decays[-1] == 0.99
    assert all(a <= b for a, b in itertools.pairwise(decays))
    # the trainer follows them: the optimizer's learning rate, and the EMA update of a step
    trainer = make_trainer(dropout=0.0, lr=2e-3, warmup_steps=5, ema_decay=0.99)
    start = {k: v.clone() for k, v in trainer.model.state_dict().items()}
    trainer.fit(gmm_prior(), 1)
    assert trainer.optimizer.param_groups[0]["lr"] == cfg.lr_at(0)
    d = trainer.config.ema_decay_at(0)
    ema = trainer.ema.state_dict()
    for k, v in trainer.model.state_dict().items():
        torch.testing.assert_close(ema[k], d * start[k] + (1 - d) * v)
