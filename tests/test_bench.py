import pytest

from exactps.bench import format_bench, published_settings, run_bench
from exactps.tasks import STANDARD_TASKS

BASELINES = ("dps", "pigdm", "ddrm", "diffpir", "ddnm")


@pytest.mark.parametrize("task", STANDARD_TASKS)
def test_eps_beats_every_baseline_at_lower_cost_on_the_gmm_prior(task):
    """EPS at 20 NFE, no backward pass, is closer to the exact posterior than every baseline.

    Baselines run at their published step counts, except DPS (200 instead of 1000 steps, still
    10x the cost of EPS here) to keep the test fast; the full comparison is ``exactps bench exactness``.
    """
    rows = run_bench(
        [task],
        baselines=BASELINES,
        eps_specs=[("ve", "dpmpp-2m", 20)],
        gmm_samples=400,
        baseline_overrides={"dps": {"steps": 200}},
    )
    by_method = {r.method: r for r in rows}
    eps = by_method["EPS dpmpp-2m (ve, 20)"]
    assert eps.vjp == 0 and eps.nfe == 20
    assert eps.value < 1.6, eps  # close to the Monte-Carlo floor
    for name in BASELINES:
        base = by_method[name]
        assert base.nfe + base.vjp >= eps.nfe
        assert eps.value < base.value, (name, base.value, eps.value)
    assert by_method["prior sampler (ignores y)"].value > 10 * eps.value
    assert by_method["exact posterior"].value < 1.5
    assert "mean PSNR" in format_bench(rows)


def test_published_settings_follow_the_official_configs():
    assert published_settings("dps", "inpaint-box") == {"zeta": 0.5}
    assert published_settings("dps", "sr4") == {"zeta": 0.3}
    assert published_settings("diffpir", "inpaint-random") == {"zeta": 1.0, "steps": 20}
    assert published_settings("diffpir", "deblur-motion") == {"zeta": 0.1}
    assert published_settings("ddrm", "sr4") == {}
