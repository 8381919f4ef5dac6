"""Per-image class labels (:mod:`exactps.classes`) for EDM's class-conditional ADM, offline.

The ADM is shrunk as in ``test_admunet.py`` (``adm-64`` monkeypatched: 16x16, two levels). The references
are independent of exactps' label path: deepinv's own ``ADMUNet.forward(x, sigma, class_labels=one-hot)``
with the training draws replayed by hand, and image contents that encode their class (class ``dark``: all
pixels below mid-grey, ``light``: all above).
"""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest
import torch
from helpers import CLASSES, class_folder, random_adm, shrink_adm
from PIL import Image

from exactps.admunet import ADMUNetDenoiser
from exactps.classes import ClassLabelsError, LabelledImages, with_class_labels
from exactps.cli.train import add_train_arguments
from exactps.cli.train import run as train_main
from exactps.covariance import IsotropicNoise
from exactps.data import ClassFolder, class_names
from exactps.loading import load_model
from exactps.models import ModelConfig
from exactps.networks import EPSDenoiser
from exactps.objectives import weighted_mse
from exactps.seeds import TrainSeed, derive_seed
from exactps.train import TrainConfig, Trainer, run_training
from exactps.train.batches import StepBatches


@pytest.fixture
def small(monkeypatch):
    shrink_adm(monkeypatch)


def _folder_model(source: torch.nn.Module) -> ADMUNetDenoiser:
    model = ADMUNetDenoiser("adm-64", 3, "none", 0.5, "folder").eval()
    model.load_backbone(source.state_dict())
    return model


def test_class_folder_numbers_sorted_sub_folders(tmp_path):
    root = class_folder(tmp_path / "data")
    (root / "zebra").mkdir()  # an empty class keeps its index
    data = ClassFolder(root, 16, flip=False)
    assert data.classes == ["dark", "light", "zebra"] == class_names(root)
    for i in range(len(data)):
        item = data[i]
        assert isinstance(item, LabelledImages) and item.labels.dtype == torch.int64
        assert int(item.labels) == int(item.images.mean() > 0)  # the class is in the pixels
    recorded = ClassFolder(root, 16, classes=["a", "dark", "light", "zebra"], flip=False)
    assert [int(recorded[i].labels) for i in range(len(recorded))] == [1, 1, 1, 2, 2, 2]
    with pytest.raises(ClassLabelsError, match=r"class sub-folders \['zebra'\] that are not among"):
        ClassFolder(root, 16, classes=["dark", "light"])
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(root / "stray.png")
    with pytest.raises(ClassLabelsError, match=r"stray\.png is not in a class sub-folder"):
        ClassFolder(root, 16)
    flat = tmp_path / "flat"
    flat.mkdir()
    with pytest.raises(ClassLabelsError, match="has no class sub-folders"):
        class_names(flat)


def test_step_batches_carry_each_images_own_label(tmp_path):
    data = ClassFolder(class_folder(tmp_path / "data", 4), 16)
    batches = StepBatches(data, micro_batch=3, n_shards=2, seed=5)
    for key in [(0, 0), (0, 1), (1, 0), (3, 1)]:  # across epochs too
        batch = batches[key]
        assert isinstance(batch, LabelledImages) and batch.labels.shape == (3,)
        assert torch.equal(batch.labels, (batch.images.flatten(1).mean(1) > 0).long())
        torch.testing.assert_close(batches[key].images, batch.images, rtol=0, atol=0)  # a pure function of the key


def test_labels_reach_the_network_as_deepinvs_one_hot_labels(small):
    source = random_adm()
    model = _folder_model(source)
    x = 0.6 * torch.randn(3, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    sigma, labels = torch.tensor([0.3, 1.0, 4.0]), torch.tensor([7, 0, 999])
    with torch.no_grad():
        ref = source(x, sigma, class_labels=torch.eye(1000)[labels], input_in_minus_one_one=True)
        torch.testing.assert_close(model(x, IsotropicNoise(sigma), class_labels=labels), ref, rtol=1e-5, atol=1e-5)
        vectors = torch.softmax(torch.randn(3, 1000), 1)  # label vectors pass as they are
        ref_v = source(x, sigma, class_labels=vectors, input_in_minus_one_one=True)
        torch.testing.assert_close(model(x, IsotropicNoise(sigma), class_labels=vectors), ref_v, rtol=1e-5, atol=1e-5)
        bound = with_class_labels(model, labels[:1])  # one label shared by the batch
        ref_1 = source(x, sigma, class_labels=torch.eye(1000)[[7, 7, 7]], input_in_minus_one_one=True)
        torch.testing.assert_close(bound(x, IsotropicNoise(sigma)), ref_1, rtol=1e-5, atol=1e-5)
        assert not torch.allclose(ref, ref_1, atol=1e-3)
    with pytest.raises(ClassLabelsError, match="class-conditional prior used without labels"):
        model(x, IsotropicNoise(sigma))
    with pytest.raises(ClassLabelsError, match=r"class indices must be \(B,\) in \[0, 1000\)"):
        model(x, IsotropicNoise(sigma), class_labels=torch.tensor([0, 1, 1000]))
    with pytest.raises(ClassLabelsError, match="2 class labels for a batch of 3 images"):
        with_class_labels(model, labels[:2])(x, IsotropicNoise(sigma))
    with pytest.raises(ClassLabelsError, match="EPSDenoiser is not class-conditional"):
        EPSDenoiser("tiny", 3, "none")(x, IsotropicNoise(sigma), class_labels=labels)


def test_the_training_loss_uses_each_images_label(small):
    """The trainer's held-out loss of labelled images equals the EDM loss of deepinv's network with the
    one-hot labels, the draws replayed from the shard's seed; permuted labels give another loss."""
    source = random_adm(2)
    cfg = TrainConfig(objective="denoiser", tasks=("none",), sigma_y=0.05, batch_size=2, steps=1, warmup_steps=0)
    trainer = Trainer(_folder_model(source), cfg, device="cpu", show_progress=False)
    x0 = 0.5 * torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(3))
    labels = torch.tensor([3, 500])
    loss = trainer.held_out_loss(LabelledImages(x0, labels), seed=11)
    g = torch.Generator().manual_seed(derive_seed(cfg.seed, TrainSeed.SHARD, 11, 0))
    rho = torch.exp(cfg.p_mean + cfg.p_std * torch.randn(2, generator=g))
    x_noisy = x0 + rho[:, None, None, None] * torch.randn(x0.shape, generator=g)
    with torch.no_grad():
        pred = source(x_noisy, rho, class_labels=torch.eye(1000)[labels], input_in_minus_one_one=True)
    assert loss == pytest.approx(float(weighted_mse(pred, x0, rho)), rel=1e-5)
    swapped = trainer.held_out_loss(LabelledImages(x0, labels.flip(0)), seed=11)
    assert abs(swapped - loss) > 1e-4 * loss
    with pytest.raises(ClassLabelsError, match="without labels"):
        trainer.held_out_loss(x0, seed=11)


def _train(argv: list[str]) -> int:
    return train_main(add_train_arguments(argparse.ArgumentParser()).parse_args(argv))


def _common(data) -> list[str]:
    return ["--data", str(data), "--size", "16", "--batch", "2", "--no-progress", "--task", "inpaint-random",
            "--objective", "eps", "--conditioning", "map", "--preset", "adm-64", "--lr", "1e-2",
            "--warmup", "0", "--grid-every", "1", "--log-every", "1", "--ckpt-every", "1", "--keep", "0"]  # fmt: skip


def _losses(run) -> list[float]:
    return [json.loads(line)["loss"] for line in (run / "log.jsonl").read_text().splitlines()]


def test_train_with_folder_labels_and_resume_exactly(small, tmp_path):
    data = class_folder(tmp_path / "data")
    straight, resumed = tmp_path / "straight", tmp_path / "resumed"
    assert _train([*_common(data), "--class-labels", "folder", "--steps", "3", "--out", str(straight)]) == 0
    assert _train([*_common(data), "--class-labels", "folder", "--steps", "2", "--out", str(resumed)]) == 0
    assert _train(["--resume", str(resumed), "--steps", "3", "--no-progress"]) == 0
    assert _losses(resumed) == _losses(straight)
    a, b = load_model(straight, device="cpu"), load_model(resumed, device="cpu")
    assert a.model_config.class_labels == "folder" and a.model_config.class_names == CLASSES
    for k, v in a.model.state_dict().items():
        torch.testing.assert_close(b.model.state_dict()[k], v, rtol=0, atol=0)
    x = torch.zeros(2, 3, 16, 16)
    with torch.no_grad(), pytest.raises(ClassLabelsError, match="without labels"):
        a.model(x, IsotropicNoise(torch.ones(2)))
    with torch.no_grad():  # the trained network tells the classes apart
        one = a.model(x, IsotropicNoise(torch.ones(2)), class_labels=torch.tensor([0, 1]))
        assert not torch.allclose(one[0], one[1], atol=1e-6)


def test_labels_are_refused_by_name_before_any_work(small, tmp_path):
    data = class_folder(tmp_path / "data")
    out = tmp_path / "run"
    with pytest.raises(ClassLabelsError, match=r"class-conditional prior used without labels.*--class-labels folder"):
        _train([*_common(data), "--out", str(out)])
    with pytest.raises(ClassLabelsError, match="not class-conditional: --class-labels folder does not apply"):
        _train([*_common(data), "--preset", "tiny", "--class-labels", "folder", "--out", str(out)])
    with pytest.raises(ClassLabelsError, match="needs --data to be a folder with one sub-folder per class"):
        _train([*_common("builtin"), "--class-labels", "folder", "--out", str(out)])
    with pytest.raises(ClassLabelsError, match=r"numbers ImageNet's 1000 classes.*has 2 class sub-folders"):
        _train([*_common(data), "--init", "edm-imagenet64-cond", "--class-labels", "folder", "--out", str(out)])
    with pytest.raises(ClassLabelsError, match="the data carries class labels but the network takes none"):
        cfg = TrainConfig(objective="eps", tasks=("inpaint-random",), batch_size=2, steps=1)
        run_training(cfg, ModelConfig("adm-64", 3, "map", 0.5, 16, class_labels="zero"), ClassFolder(data, 16), out)
    assert not out.exists()
    resumed = tmp_path / "resumed"
    assert _train([*_common(data), "--class-labels", "folder", "--steps", "1", "--out", str(resumed)]) == 0
    (data / "new-class").mkdir()
    with pytest.raises(ClassLabelsError, match=r"class sub-folders \['new-class'\] that are not among the 2"):
        _train(["--resume", str(resumed), "--steps", "2", "--no-progress"])
