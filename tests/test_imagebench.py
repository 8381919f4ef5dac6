"""The image benchmark harness on tiny trained models and generated photographs (no ../shared needed).

The runs of ``conftest.runs`` are 16x16 ``tiny`` U-Nets (eps, conditional, denoiser); the images are
random smooth pictures written as PNG files, so every path of ``exactps bench images`` is exercised
in seconds: the fixed draws shared by every method, tuning on validation images only, the tables,
files and figures, and the errors raised before any work.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from exactps.baselines import BASELINES
from exactps.cli import main
from exactps.imagebench import BenchConfig, load_images, make_problem
from exactps.imagebench.methods import BASELINE_BUDGETS, baseline_budgets, baseline_method, reference_method
from exactps.imagebench.tuning import TUNING_GRIDS, candidates, published_point
from exactps.loading import load_model
from exactps.metrics import psnr
from exactps.posterior import measurement_image
from exactps.tasks import PAPER_TASKS

PIXEL_METRICS = "psnr,psnr_mean,ssim,crps_pix,mmd_pix,coverage"


def _photos(folder: Path, n: int, size: int = 24, seed: int = 0) -> Path:
    """``n`` smooth random RGB pictures of ``size`` px (larger than the models' 16 px)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        coarse = rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)
        Image.fromarray(coarse).resize((size, size), Image.Resampling.BICUBIC).save(folder / f"img{i:02d}.png")
    return folder


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("photos")
    return _photos(root / "test", 4), _photos(root / "val", 3, seed=1)


def _args(runs, folders, out: Path, *extra: str) -> list[str]:
    test, val = folders
    return ["bench", "images", "--test", str(test), "--val", str(val), "--prior", str(runs["denoiser"]),
            "--eps", str(runs["eps"]), "--conditional", str(runs["conditional"]), "--tasks",
            "paper-inpaint-random,paper-sr4", "--images", "3", "--samples", "2", "--val-images", "2",
            "--eps-nfe", "4,1", "--conditional-nfe", "4", "--baselines", "ddrm,ddnm", "--metrics", PIXEL_METRICS,
            "--device", "cpu", "--no-progress", "--out", str(out), *extra]  # fmt: skip


def test_bench_images_end_to_end(runs, folders, tmp_path, capsys):
    out = tmp_path / "bench"
    assert main(_args(runs, folders, out)) == 0
    text = capsys.readouterr().out
    assert "### paper-sr4 (3 images x 2 samples)" in text and "EPS step vs the bare network step" in text
    record = json.loads(out.with_suffix(".json").read_text())
    rows = record["rows"]
    methods = {r["method"] for r in rows}
    # reference, eps at 4 and 1 NFE, conditional at 4, ddrm and ddnm published and tuned
    assert len(methods) == 1 + 2 + 1 + 4 and len(rows) == 2 * len(methods)
    assert {"ddrm [20] tuned", "ddnm [100] published"} <= methods
    for r in rows:
        assert r["images"] == 3 and r["samples"] == 2 and r["sigma_y"] == 0.05
        assert all(math.isfinite(r[m]) for m in PIXEL_METRICS.split(","))
        assert r["psnr_se"] > 0 or r["method"].startswith("measurement")
    eps1 = next(r for r in rows if r["method"].endswith("[1]") and r["method"].startswith("eps"))
    assert eps1["nfe"] == 1 and eps1["crps_pix"] >= 0
    ddnm = next(r for r in rows if r["method"] == "ddnm [100] published")
    assert ddnm["nfe"] == 100 and ddnm["vjp"] == 0
    tuned = record["tuning"]["paper-sr4"]["ddnm [100]"]
    assert len(tuned["scores"]) == len(candidates("ddnm", "paper-sr4"))
    assert (out.parent / "bench-paper-sr4.png").exists() and out.with_suffix(".csv").exists()
    assert record["overhead"]["paper-sr4"]["eps_seconds"] > 0


def test_every_method_sees_the_same_measurements(runs, folders):
    """The reference row's PSNR is the measurement view of the fixed problem (same operators and noise)."""
    x0, names = load_images(folders[0], 3, 16)
    a = make_problem("paper-inpaint-random", x0, names, 0.05, seed=0)
    b = make_problem("paper-inpaint-random", x0, names, 0.05, seed=0)
    assert torch.equal(a.y, b.y) and torch.equal(a.operator.physics.mask, b.operator.physics.mask)
    val = make_problem("paper-inpaint-random", x0, names, 0.05, seed=0, purpose=4)
    assert not torch.equal(val.operator.physics.mask, a.operator.physics.mask)  # validation draws are its own
    x, nfe, vjp = reference_method().draw(a, torch.Generator())
    assert (nfe, vjp) == (0, 0) and torch.equal(x, measurement_image(a.operator, a.y, 0.05))
    assert float(psnr(x.clamp(-1, 1), x0).mean()) < 40


def test_tuning_grids_contain_the_published_point():
    for name in TUNING_GRIDS:
        assert name in BASELINES and name in BASELINE_BUDGETS
        for task in ("paper-sr4", "paper-inpaint-box", "paper-deblur-gauss"):
            points = candidates(name, task)
            assert points[0] == published_point(name, task) and len(points) == len({str(p) for p in points})


def test_errors_come_before_any_work(runs, folders, tmp_path, capsys):
    val = folders[1]
    out = tmp_path / "bench"

    def fails(argv: list[str], match: str) -> None:
        assert main(argv) == 2
        assert match in capsys.readouterr().err
        assert not list(tmp_path.glob("bench*"))  # nothing written

    fails(_args(runs, folders, out, "--images", "9"), "fewer than the 9 asked for")
    fails(_args(runs, (tmp_path / "absent", val), out), "does not exist")
    fails(_args(runs, folders, out, "--tasks", "paper-sr5"), "unknown task 'paper-sr5'")
    fails(_args(runs, folders, out, "--metrics", "psnr,fidd"), "unknown metric(s) ['fidd']")
    fails(_args(runs, folders, out, "--baselines", "dpss"), "unknown baseline(s) ['dpss']")
    fails(_args(runs, folders, out, "--tasks", "inpaint"), "task 'inpaint' cannot be simulated")
    fails(_args(runs, folders, out, "--samples", "1"), "samples (J) must be >= 2")
    small = _photos(tmp_path / "small", 4, size=8)
    fails(_args(runs, (small, val), out), "smaller than the model's 16x16")
    fails(_args(runs, folders, out, "--metrics", "psnr,lpips", "--lpips-weights", str(tmp_path / "none")), "none")
    out.with_suffix(".json").write_text("{}")
    assert main(_args(runs, folders, out)) == 2
    assert "use --force" in capsys.readouterr().err
    assert out.with_suffix(".json").read_text() == "{}"


def test_baseline_budgets():
    assert baseline_budgets("dps") == ("dps", BASELINE_BUDGETS["dps"])
    assert baseline_budgets("dps:250") == ("dps", ({"steps": 250},))
    for bad in ("dps:0", "dps:x", "daps:5"):
        with pytest.raises(ValueError, match="K in name:K"):
            baseline_budgets(bad)
    with pytest.raises(ValueError, match="unknown baseline"):
        baseline_budgets("dpz:5")


def test_config_validation():
    with pytest.raises(ValueError, match="finite"):
        BenchConfig(sigma_y=math.inf).validate()
    with pytest.raises(ValueError, match="images >= 2"):
        BenchConfig(images=1).validate()


#: Tiny budgets: every baseline, a few network calls each.
_SMALL = {"dps": {"steps": 3}, "pigdm": {"steps": 3}, "ddrm": {"steps": 3}, "diffpir": {"steps": 3},
          "ddnm": {"steps": 3}, "daps": {"annealing_steps": 2, "ode_steps": 1, "langevin_steps": 2},
          "mpgd": {"steps": 3}}  # fmt: skip


def test_every_baseline_runs_on_a_trained_prior(runs, folders):
    """The baselines' x0-predictor is the learned unconditional denoiser (a LoadedModel), like EPS's."""
    assert set(_SMALL) == set(BASELINES)
    prior = load_model(runs["denoiser"], device="cpu")
    x0, names = load_images(folders[0], 2, 16)
    problem = make_problem("paper-deblur-gauss", x0, names, 0.05, seed=0)
    for name, budget in _SMALL.items():
        method = baseline_method(prior, name, problem.task, budget)
        x, nfe, vjp = method.draw(problem, torch.Generator().manual_seed(0))
        assert x.shape == x0.shape and bool(torch.isfinite(x).all()), name
        assert nfe >= 2 and vjp in (0, nfe), name


def test_every_tuning_candidate_is_a_valid_setting(runs, folders):
    """Each point of every grid runs (with a tiny budget) on every paper task: no grid value is refused."""
    prior = load_model(runs["denoiser"], device="cpu")
    x0, names = load_images(folders[0], 1, 16)
    for task in PAPER_TASKS:
        problem = make_problem(task, x0, names, 0.05, seed=0)
        for name in TUNING_GRIDS:
            for point in candidates(name, task):
                x, _, _ = baseline_method(prior, name, task, _SMALL[name], point).draw(problem, torch.Generator())
                assert x.shape == x0.shape, (name, task, point)


def test_diverged_samples_are_counted_and_lpips_needs_32_px(runs, folders):
    from exactps.imagebench.methods import Method
    from exactps.imagebench.run import _sample, run_image_benchmark
    from exactps.imagebench.scoring import Scorer

    x0, names = load_images(folders[0], 2, 16)
    problem = make_problem("paper-sr4", x0, names, 0.05, seed=0)

    def half_nan(problem, generator):
        x = problem.x0.clone()
        x[0] = math.nan
        return x, 1, 0

    xs, _, _, _, nonfinite = _sample(Method("nan", half_nan), problem, 2, seed=0)
    assert nonfinite == 0.5 and bool(torch.isfinite(xs).all())
    eps = load_model(runs["eps"], device="cpu")
    config = BenchConfig(tasks=("paper-sr4",), images=2, metrics=("psnr", "lpips"), tune=False)
    with pytest.raises(ValueError, match="at least 32x32"):
        run_image_benchmark(config, (x0, names), eps=[eps], scorer=Scorer(("psnr",)), progress=False)


def test_zero_shot_pivot_rows_on_the_prior(runs, folders, tmp_path, capsys):
    """``--zero-shot-nfe``: the prior, not fine-tuned, at the pivot; one row per NFE; needs a prior."""
    test, _ = folders
    out = tmp_path / "zs"
    argv = ["bench", "images", "--test", str(test), "--prior", str(runs["denoiser"]), "--tasks", "paper-sr4",
            "--images", "2", "--samples", "2", "--baselines", "", "--no-tune", "--zero-shot-nfe", "3,1",
            "--sampler", "ddim", "--metrics", "psnr", "--device", "cpu", "--no-progress",
            "--out", str(out)]  # fmt: skip
    assert main(argv) == 0
    rows = json.loads(out.with_suffix(".json").read_text())["rows"]
    zero_shot = {r["method"]: r for r in rows if r["method"].startswith("zero-shot")}
    assert sorted(r["nfe"] for r in zero_shot.values()) == [1, 3] and len(rows) == 3
    for r in zero_shot.values():
        assert math.isfinite(r["psnr"]) and json.loads(r["settings"])["method"] == "zero-shot pivot"
    capsys.readouterr()
    no_prior = [a for a in argv if a not in ("--prior", str(runs["denoiser"]))]
    no_prior[no_prior.index("--out") + 1] = str(tmp_path / "none")
    assert main([*no_prior, "--eps", str(runs["eps"])]) == 2
    assert "--zero-shot-nfe runs the zero-shot pivot on the --prior" in capsys.readouterr().err
