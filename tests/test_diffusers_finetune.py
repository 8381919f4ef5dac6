"""Fine-tuning a diffusers ``UNet2DModel`` into EPS and saving it back (skipped without diffusers).

``exactps train --objective eps --init DIR`` on a small random U-Net folder (:func:`helpers.save_diffusers_unet`):
before any step the network is the folder's denoiser; the run resumes bitwise; ``load_model`` rebuilds it
from the checkpoint; ``exactps export --format diffusers`` writes a folder that diffusers loads as a plain
``UNet2DModel`` and that exactps reads back to the same network. Bad combinations are refused by name.
"""

from __future__ import annotations

import argparse
import copy
import json

import pytest
import torch

diffusers = pytest.importorskip("diffusers")

from helpers import checkpointed_pair, save_diffusers_unet, train_tiny  # noqa: E402

from exactps.checkpoint import list_checkpoints, load_checkpoint  # noqa: E402
from exactps.cli.export import add as add_export  # noqa: E402
from exactps.cli.train import add_train_arguments  # noqa: E402
from exactps.cli.train import run as train_main  # noqa: E402
from exactps.covariance import IsotropicNoise  # noqa: E402
from exactps.diffusers_unet import (  # noqa: E402
    EXTRAS_JSON,
    DiffusersDenoiser,
    from_diffusers_state,
    read_diffusers_folder,
    to_diffusers_state,
)
from exactps.loading import export_diffusers, export_model, load_model  # noqa: E402
from exactps.models import ModelConfig, build_model, load_pretrained  # noqa: E402
from exactps.networks import checkpoint_blocks  # noqa: E402
from exactps.operators import Inpaint, random_masks  # noqa: E402

SHAPE = (3, 16, 16)
_COMMON = ["--data", "builtin", "--size", "16", "--batch", "2", "--no-progress", "--task", "inpaint-random"]
_COMMON += ["--sigma-y", "0.02,0.2", "--lr", "1e-2", "--warmup", "1", "--ema", "0.5", "--grid-every", "100"]


def _train(argv: list[str]) -> int:
    return train_main(add_train_arguments(argparse.ArgumentParser()).parse_args(argv))


def _export(argv: list[str]) -> int:
    parser = argparse.ArgumentParser()
    add_export(parser.add_subparsers())
    args = parser.parse_args(["export", *argv])
    return args.func(args)


def _pivot_inputs(batch: int = 3, seed: int = 0):
    """An inpainting pivot ``(m, S_t)`` and the isotropic ``(x, sigma^2 I)`` of ``batch`` images."""
    g = torch.Generator().manual_seed(seed)
    x0 = torch.rand(batch, *SHAPE, generator=g) * 2 - 1
    op = Inpaint(random_masks(SHAPE, batch, 0.5, g), SHAPE)
    rho = torch.tensor([0.05, 0.7, 8.0])[:batch]
    x = x0 + rho[:, None, None, None] * torch.randn(x0.shape, generator=g)
    s_y = torch.full((batch,), 0.1)
    y = op.A(x0) + s_y[:, None, None, None] * torch.randn(op.A(x0).shape, generator=g)
    return op.pivot(x, rho, y, s_y), (x, IsotropicNoise(rho))


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    root = tmp_path_factory.mktemp("unet")
    save_diffusers_unet(root, seed=4)
    return root


def test_zero_new_weights_eps_model_is_the_folders_denoiser(folder):
    """``ModelConfig.backbone`` rebuilds the U-Net; with its conditioning at zero the EPS network at
    ``A = 0`` is exactly the plain folder's denoiser (itself checked against diffusers' scheduler in
    ``test_diffusers.py``), and the widened first convolution and ``s_y`` embedding are wired."""
    source = read_diffusers_folder(folder)
    config = ModelConfig.from_dict(json.loads(json.dumps(vars(ModelConfig.from_diffusers(source.backbone, "map")))))
    assert config.preset == "diffusers" and config.img_shape == SHAPE
    model = build_model("eps", config).eval()
    assert isinstance(model, DiffusersDenoiser)
    rebuilt = DiffusersDenoiser.from_config(json.loads(json.dumps(model.config())))
    assert rebuilt.backbone == model.backbone and rebuilt.state_dict().keys() == model.state_dict().keys()
    load_pretrained(model, folder)
    plain = load_model(folder, device="cpu").model
    (m, noise), (x, iso) = _pivot_inputs()
    with torch.no_grad():
        torch.testing.assert_close(model(x, iso), plain(x, iso), rtol=0, atol=0)
        before = model(m, noise)
        model.net.conv_in.extra_weight.fill_(0.05)
        assert not torch.allclose(model(m, noise), before, atol=1e-4)
        model.net.conv_in.extra_weight.zero_()
        model.sigma_y_embed.bias.fill_(0.5)
        assert not torch.allclose(model(m, noise), before, atol=1e-4)


def test_diffusers_state_round_trip_concatenates_the_first_convolution():
    """``conv([x, maps]; [W, W']) = conv(x; W) + conv(maps; W')``: the exported U-Net's first convolution
    is the two weights side by side, and :func:`from_diffusers_state` splits it back."""
    w, extra, bias = torch.randn(8, 3, 3, 3), torch.randn(8, 3, 3, 3), torch.randn(8)
    state = {"net.conv_in.weight": w, "net.conv_in.extra_weight": extra, "net.conv_in.bias": bias}
    state["sigma_y_embed.weight"] = torch.randn(4, 2)
    unet, extras = to_diffusers_state(state)
    assert set(unet) == {"conv_in.weight", "conv_in.bias"} and set(extras) == {"sigma_y_embed.weight"}
    x, maps = torch.randn(2, 3, 5, 5), torch.randn(2, 3, 5, 5)
    joint = torch.nn.functional.conv2d(torch.cat([x, maps], 1), unet["conv_in.weight"], bias, padding=1)
    split = torch.nn.functional.conv2d(x, w, bias, padding=1) + torch.nn.functional.conv2d(maps, extra, padding=1)
    torch.testing.assert_close(joint, split)
    back = from_diffusers_state(unet, extras, channels=3)
    assert back.keys() == state.keys() and all(torch.equal(back[k], state[k]) for k in state)


def test_finetune_resume_load_and_export_round_trip(folder, tmp_path, capsys):
    straight, split = tmp_path / "straight", tmp_path / "split"
    assert _train([*_COMMON, "--objective", "eps", "--init", str(folder), "--steps", "3", "--out", str(straight)]) == 0
    assert "loaded" in capsys.readouterr().out
    assert _train([*_COMMON, "--objective", "eps", "--init", str(folder), "--steps", "2", "--out", str(split)]) == 0
    assert _train(["--resume", str(split), "--steps", "3", "--no-progress"]) == 0
    record = json.loads((split / "config.json").read_text())
    assert record["model_config"]["preset"] == "diffusers" and record["model_config"]["backbone"]["type"] == "diffusers"
    # the resumed run is the uninterrupted one, bitwise
    a, b = (load_checkpoint(list_checkpoints(r / "checkpoints")[-1][1]) for r in (straight, split))
    assert a.step == b.step == 3
    for key in a.model:
        assert torch.equal(a.model[key], b.model[key]) and torch.equal(a.ema[key], b.ema[key]), key
    # load_model rebuilds the network from the checkpoint: the EMA weights, and they were trained
    loaded = load_model(split, device="cpu")
    assert isinstance(loaded.model, DiffusersDenoiser) and loaded.objective == "eps" and loaded.step == 3
    state = loaded.model.state_dict()
    assert state.keys() == b.ema.keys() and all(torch.equal(state[k], b.ema[k]) for k in state)
    assert loaded.model.net.conv_in.extra_weight.abs().max() > 1e-4
    assert loaded.model.sigma_y_embed.weight.abs().max() > 1e-4
    # export as a diffusers folder: a plain UNet2DModel for diffusers, the same EPS network for exactps
    out = tmp_path / "exported"
    assert _export([str(split), "--out", str(out), "--format", "diffusers", "--dtype", "float32"]) == 0
    assert "eps model (diffusers, 3x16x16, map conditioning), step 3" in capsys.readouterr().out
    unet = diffusers.UNet2DModel.from_pretrained(out / "unet")
    assert unet.config.in_channels == 6 and (out / EXTRAS_JSON).exists() and not (out / "model_index.json").exists()
    back = load_model(out, device="cpu")
    assert back.objective == "eps" and back.model_config == loaded.model_config and back.tasks == ("inpaint-random",)
    (m, noise), (x, iso) = _pivot_inputs(seed=1)
    with torch.no_grad():
        torch.testing.assert_close(back.model(m, noise), loaded.model(m, noise), rtol=0, atol=0)
        torch.testing.assert_close(back.model(x, iso), loaded.model(x, iso), rtol=0, atol=0)
    # the exactps format holds the same network (its record carries the backbone)
    again = load_model(export_model(split, tmp_path / "model", dtype=torch.float32), device="cpu")
    assert again.model_config == loaded.model_config
    assert all(torch.equal(v, state[k]) for k, v in again.model.state_dict().items())
    # and the exported folder is a valid --init (every weight loads, the conditioning ones included)
    model = build_model("eps", loaded.model_config)
    assert load_pretrained(model, out).missing == []
    assert all(torch.equal(v, state[k]) for k, v in model.state_dict().items())


def test_bad_combinations_are_named_before_any_work(folder, tmp_path):
    out = tmp_path / "run"
    with pytest.raises(ValueError, match=r"--preset tiny does not fit --init .*a diffusers UNet2DModel folder"):
        _train([*_COMMON, "--objective", "eps", "--preset", "tiny", "--init", str(folder), "--out", str(out)])
    with pytest.raises(ValueError, match=r"--channels 1 does not fit .* 3-channel images"):
        _train([*_COMMON, "--objective", "eps", "--channels", "1", "--init", str(folder), "--out", str(out)])
    with pytest.raises(ValueError, match=r"conditional baseline .* not on a diffusers U-Net"):
        _train([*_COMMON, "--objective", "conditional", "--init", str(folder), "--out", str(out)])
    assert not out.exists()
    with pytest.raises(ValueError, match=r"only those are saved as diffusers folders"):
        export_diffusers(train_tiny(tmp_path / "tiny", "eps"), tmp_path / "x")
    assert not (tmp_path / "x").exists()
    (tmp_path / "taken").mkdir()
    with pytest.raises(FileExistsError, match="taken already exists"):
        export_diffusers(folder, tmp_path / "taken")


def test_gradient_checkpointing_gives_the_same_values_and_gradients(folder):
    """``--grad-checkpoint`` on a diffusers U-Net turns on diffusers' own checkpointing of its blocks: a
    block's first convolution runs again in the backward pass; the output and every gradient are the same."""
    model = DiffusersDenoiser.from_folder(read_diffusers_folder(folder), "map").train()
    load_pretrained(model, folder)
    with torch.no_grad():
        model.net.conv_in.extra_weight.normal_(0, 0.1)
        model.sigma_y_embed.weight.normal_(0, 0.1)
    ckpt = checkpoint_blocks(copy.deepcopy(model))
    (m, noise), _ = _pivot_inputs()
    outs, grads, calls = checkpointed_pair(model, ckpt, lambda net: net.net.down_blocks[0].resnets[0].conv1, m, noise)
    torch.testing.assert_close(outs[1], outs[0], rtol=1e-5, atol=1e-6)
    assert calls == [1, 2]
    for (name, p), (_, q) in zip(grads[0], grads[1], strict=True):
        torch.testing.assert_close(q, p, rtol=1e-4, atol=1e-7, msg=name)
