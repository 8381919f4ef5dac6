"""The exactness benchmark: measurements and exact references, the scores and their floors, tuning on
held-out measurements, the rows with standard errors, learned denoisers, and the command line."""

from __future__ import annotations

import json
import math
import warnings

import pytest
import torch

from exactps.baselines import Grid
from exactps.cli import main
from exactps.exactbench import (
    ExactBenchConfig,
    Scorer,
    draw_problem,
    family_prior,
    format_summary,
    format_tuning,
    learned_denoisers,
    oracle_denoisers,
    run_exactbench,
    tune_baseline,
    write_result,
)
from exactps.exactbench.methods import baseline_method, eps_method, exact_method, prior_method
from exactps.exactbench.report import format_paired
from exactps.mixture_fit import save_mixture
from exactps.priors import GaussianMixture
from exactps.seeds import ExactBenchSeed


@pytest.fixture(scope="module")
def gmm_problem():
    return draw_problem(family_prior("gmm"), "inpaint-box", 0, n_samples=300, n_refs=4)


@pytest.fixture(scope="module")
def gaussian_problem():
    return draw_problem(family_prior("gaussian"), "inpaint-box", 0, n_samples=300, n_refs=4)


def test_problems_are_reproducible_and_splits_are_disjoint():
    prior = family_prior("gmm")
    a, b = (draw_problem(prior, "deblur-gauss", 1, n_samples=10, n_refs=2) for _ in range(2))
    assert torch.equal(a.y, b.y) and torch.equal(a.references, b.references)
    other = draw_problem(prior, "deblur-gauss", 1, "tuning", n_samples=10, n_refs=2)
    nxt = draw_problem(prior, "deblur-gauss", 2, n_samples=10, n_refs=2)
    assert not torch.equal(a.y, other.y) and not torch.equal(a.y, nxt.y)
    assert a.references.shape == a.others.shape == (2, 10, 1, 8, 8)
    with pytest.raises(ValueError, match="split must be one of"):
        draw_problem(prior, "sr4", 0, "test")
    with pytest.raises(ValueError, match="sigma_y must be > 0"):
        draw_problem(prior, "sr4", 0, sigma_y=0.0)
    with pytest.raises(ValueError, match="unknown prior family"):
        family_prior("laplace")


def test_references_are_exact_posterior_samples(gaussian_problem):
    p = gaussian_problem
    sets = torch.cat([p.references, p.others]).reshape(-1, 64)
    post_mean, post_cov = p.posterior.means[0], p.posterior.covs[0]
    se = (post_cov.diagonal() / sets.shape[0]).sqrt()
    assert ((sets.mean(0) - post_mean).abs() < 5 * se).all()
    # the measurement matters: the posterior is far tighter than the Gaussian prior
    assert post_cov.trace() < 0.2 * p.prior.covs[0].trace()
    assert Scorer(p)(p.prior.sample(300, torch.Generator().manual_seed(0)))["sw2/floor"] > 10


def test_exact_samples_score_near_the_floor_and_the_prior_far_from_it(gmm_problem):
    scorer = Scorer(gmm_problem)
    g = gmm_problem.generator(ExactBenchSeed.SAMPLER, 0)
    exact = scorer(gmm_problem.posterior.sample(300, g))
    prior = scorer(gmm_problem.prior.sample(300, g))
    assert 0.7 < exact["sw2/floor"] < 1.4
    assert prior["sw2/floor"] > 5
    assert "KL" not in exact  # a mixture posterior: no Gaussian fit
    bad = gmm_problem.posterior.sample(300, g)
    bad[0, 0, 0, 0] = float("nan")
    assert scorer.sw2_ratio(bad) == math.inf


def test_gaussian_scores_see_a_bias_that_exact_samples_do_not_have(gaussian_problem):
    scorer = Scorer(gaussian_problem)
    g = gaussian_problem.generator(ExactBenchSeed.SAMPLER, 0)
    exact = scorer(gaussian_problem.posterior.sample(300, g))
    assert abs(exact["KL"] - exact["KL floor"]) < 0.3 * exact["KL floor"]
    assert abs(exact["W2"] - exact["W2 floor"]) < 0.3 * exact["W2 floor"]
    shifted = scorer(gaussian_problem.posterior.sample(300, g) + 0.05)
    assert shifted["W2"] > exact["W2"] + 0.2  # |shift| = 0.05 x 8 = 0.4
    assert shifted["KL"] > exact["KL"] + 1.0
    mean = gaussian_problem.posterior.means[0].reshape(1, 1, 8, 8)
    inflated = scorer(mean + 3 * (gaussian_problem.posterior.sample(300, g) - mean))
    assert inflated["KL"] > 10 * exact["KL floor"]


def test_tuning_picks_the_best_point_and_ranks_failures_last(gmm_problem):
    problems = [(gmm_problem, Scorer(gmm_problem))]
    grids = {"ddrm": {"eta": Grid((0.85, 0.0, 2.0))}}  # 2.0 is refused by the sampler
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = tune_baseline(oracle_denoisers(), "ddrm", problems, {"steps": 10}, grids)
    points = [p for p, _ in result.scores]
    assert points == [{"eta": 0.85}, {"eta": 0.0}, {"eta": 2.0}]  # the published point first
    assert result.scores[2][1] == math.inf and any("failed" in str(w.message) for w in caught)
    best = min(result.scores, key=lambda s: s[1])
    assert result.chosen == best[0] and result.measurements == 1
    # a budget's parameters are not searched: DDRM's steps grid is dropped at a fixed step count
    fixed = tune_baseline(oracle_denoisers(), "ddrm", problems, {"steps": 5}, {"ddrm": {"steps": Grid((20, 100))}})
    assert [p for p, _ in fixed.scores] == [{}]


def test_every_method_uses_the_same_draws_and_counts_its_cost(gmm_problem):
    dn = oracle_denoisers()
    g = lambda: gmm_problem.generator(ExactBenchSeed.SAMPLER, 0)  # noqa: E731
    x1, nfe, vjp = eps_method(dn, "ve", "dpmpp-2m", 10).draw(gmm_problem, g())
    x2, _, _ = eps_method(dn, "ve", "dpmpp-2m", 10).draw(gmm_problem, g())
    assert torch.equal(x1, x2) and (nfe, vjp) == (10, 0)
    _, nfe, vjp = baseline_method(dn, "dps", "inpaint-box", budget={"steps": 5}).draw(gmm_problem, g())
    assert (nfe, vjp) == (5, 5)
    tuned = baseline_method(dn, "ddnm", "inpaint-box", {"travel": {"travel_length": 2, "travel_repeat": 2}})
    assert tuned.tuned and tuned.settings["travel_length"] == 2 and "travel" not in tuned.settings
    assert exact_method().draw(gmm_problem, g())[0].shape == (300, 1, 8, 8)
    assert prior_method(dn, 10).draw(gmm_problem, g())[1] == 10


def test_run_reports_means_with_standard_errors_over_measurements(tmp_path):
    cfg = ExactBenchConfig(tasks=("inpaint-box",), baselines=("ddrm",), eps_specs=(("ve", "dpmpp-2m", 20),),
                           families=("gmm",), measurements=3, runs=2, tuning_measurements=1, n_samples=150,
                           n_refs=2)  # fmt: skip
    result = run_exactbench(cfg)
    methods = ["exact posterior", "prior sampler (ignores y)", "EPS dpmpp-2m (ve, 20)", "ddrm published", "ddrm tuned"]
    rows = {r["method"]: r for r in result.summary()}
    assert list(rows) == methods
    assert len(result.records) == len(methods) * 3 * 2
    eps = rows["EPS dpmpp-2m (ve, 20)"]["sw2/floor"]
    assert eps["mean"] < 1.8 and eps["n"] == 6 and eps["measurements"] == 3
    assert rows["prior sampler (ignores y)"]["sw2/floor"]["mean"] > 5 * eps["mean"]
    recs = [r for r in result.records if r.method == "ddrm published"]
    per = torch.tensor(
        [sum(r.scores["sw2/floor"] for r in recs if r.measurement == m) / 2 for m in range(3)], dtype=torch.float64
    )
    assert math.isclose(rows["ddrm published"]["sw2/floor"]["se"], float(per.std() / math.sqrt(3)), rel_tol=1e-9)
    assert rows["ddrm tuned"]["tuned"] and ("gmm", "oracle", "inpaint-box") in result.tuning
    text = format_summary(result)
    assert "±" in text and "n = 3 measurements x 2 runs" in text
    assert "gmm/oracle inpaint-box ddrm: chose" in format_tuning(result)
    paired = format_paired(result.summary())
    assert "| method | NFE | VJP | inpaint-box oracle |" in paired and paired.count("\n") == 1 + len(methods)
    write_result(result, tmp_path / "out")
    saved = json.loads((tmp_path / "out.json").read_text())
    assert saved["config"]["measurements"] == 3 and len(saved["records"]) == len(result.records)
    assert "ddrm tuned" in (tmp_path / "out.md").read_text()


def test_learned_denoisers_drive_eps_and_the_baselines(runs):
    from exactps.loading import load_model

    prior, eps = (load_model(runs[k], device="cpu") for k in ("denoiser", "eps"))
    dn = learned_denoisers(prior, eps)
    assert dn.dtype == torch.float32 and dn.label == "learned"
    mixture = GaussianMixture.random((3, 16, 16), 1, torch.Generator().manual_seed(0), decades=1.0)
    problem = draw_problem(mixture, "sr4", 0, n_samples=4, n_refs=1).with_dtype(torch.float32)
    g = torch.Generator().manual_seed(0)
    x, nfe, _ = eps_method(dn, "ve", "dpmpp-2m", 4).draw(problem, g)
    assert x.shape == (4, 3, 16, 16) and torch.isfinite(x).all() and nfe == 4
    x, nfe, vjp = baseline_method(dn, "pigdm", "sr4", budget={"steps": 3}).draw(problem, g)
    assert torch.isfinite(x).all() and (nfe, vjp) == (3, 3)
    with pytest.raises(ValueError, match="the prior needs an unconditional one"):
        learned_denoisers(eps, eps)
    with pytest.raises(ValueError, match="EPS needs an eps model"):
        learned_denoisers(prior, prior)
    with pytest.raises(ValueError, match="no EPS network"):
        eps_method(learned_denoisers(prior), "ve", "heun", 9)


def test_cli_prints_tables_and_writes_files(tmp_path, capsys):
    out = tmp_path / "bench"
    argv = ["bench", "exactness", "--tasks", "sr4", "--baselines", "ddnm:10", "--families", "gaussian",
            "--measurements", "2", "--runs", "1", "--tuning-measurements", "1", "--samples", "80", "--refs", "2",
            "--eps", "ve:dpmpp-2m:10", "--tune-with", "first",
            "--out", str(out), "--no-progress"]  # fmt: skip
    assert main(argv) == 0
    text = capsys.readouterr().out
    assert "gaussian prior, oracle denoisers: KL" in text and "ddnm [10 steps] tuned" in text
    assert "EPS dpmpp-2m (ve, 10)" in text and "EPS heun" not in text
    assert all(out.with_suffix(s).exists() for s in (".json", ".md", ".png"))
    assert main(argv) == 2  # no overwrite without --force
    assert "exists" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("extra", "match"),
    [
        (["--learned-eps", "x"], "--learned-eps needs --learned-prior"),
        (["--no-oracle"], "--no-oracle needs --learned-prior"),
        (["--families", "laplace"], "unknown"),
        (["--baselines", "dps:many"], "NAME:STEPS"),
        (["--baselines", "sgld"], "unknown baseline"),
        (["--learned-prior", "x"], "--learned-prior needs --mixture"),
        (["--tasks", "inpaint"], "inpaint"),
        (["--eps", "ve:heun"], "INTERPOLANT:SAMPLER:NFE"),
        (["--eps", "ve:heun:4"], "needs at least 7 NFE"),
        (["--eps", "ve:leapfrog:20"], "unknown sampler"),
        (["--eps", "cosine:ddim:20"], "cosine"),
    ],
)
def test_cli_names_bad_input_before_any_work(extra, match, capsys):
    assert main(["bench", "exactness", *extra]) == 2
    assert match in capsys.readouterr().err


def test_cli_refuses_networks_of_another_shape(tmp_path, runs, capsys):
    path = tmp_path / "mix.safetensors"
    save_mixture(GaussianMixture.random((1, 8, 8), 2, torch.Generator().manual_seed(0)), path)
    assert main(["bench", "exactness", "--mixture", str(path), "--learned-prior", str(runs["denoiser"])]) == 2
    assert "trained on (3, 16, 16) images, the mixture draws (1, 8, 8)" in capsys.readouterr().err
