import copy
import pickle

import pytest
import torch

from exactps.covariance import IsotropicNoise
from exactps.interpolants import VE
from exactps.operators import Blur, DenseOperator, Inpaint, gaussian_kernel
from exactps.posterior import pivot
from exactps.priors import FiniteImagePrior, GaussianMixture, dense_matrix

F64 = torch.float64


def test_gmm_denoiser_is_the_posterior_mean_of_a_direct_bayes_computation():
    """E[x0 | m] for m = x0 + N(0, S): compare with importance weights over many prior draws."""
    shape = (1, 2, 2)
    g = torch.Generator().manual_seed(0)
    gmm = GaussianMixture.random(shape, 3, g)
    op = DenseOperator(torch.randn(2, 4, generator=g, dtype=F64), shape)
    m, noise = pivot(
        VE(), torch.randn(1, *shape, generator=g, dtype=F64), 0.4, op, torch.randn(1, 2, generator=g, dtype=F64), 0.2
    )
    s = noise.to_dense(shape)[0]
    draws = gmm.sample(400_000, g).reshape(-1, 4)
    diff = m.reshape(1, 4) - draws
    logw = -0.5 * (diff @ torch.linalg.inv(s) * diff).sum(1)
    w = torch.softmax(logw, 0)
    mc = (w.unsqueeze(1) * draws).sum(0)
    ours = gmm.denoise(m, noise).reshape(4)
    ess = 1 / (w**2).sum()
    assert ess > 1000
    assert (ours - mc).abs().max() < 6 * draws.std(0).max() / ess.sqrt()


def test_gmm_posterior_samples_have_the_posterior_moments_even_when_singular():
    shape = (1, 2, 3)
    g = torch.Generator().manual_seed(1)
    gmm = GaussianMixture.random(shape, 2, g)
    a_mat = torch.randn(3, 6, generator=g, dtype=F64)
    y = a_mat @ gmm.sample(1, g).reshape(6)
    post = gmm.posterior(a_mat, y.reshape(1, 3), 0.0)  # noiseless: rank-deficient covariances
    x = post.sample(50_000, g).reshape(-1, 6)
    assert (x @ a_mat.T - y).abs().max() < 1e-8  # every sample explains y exactly
    mean = (post.weights.unsqueeze(1) * post.means).sum(0)
    assert (x.mean(0) - mean).abs().max() < 0.02


def test_finite_prior_denoiser_matches_dense_softmax_and_is_chunk_invariant():
    g = torch.Generator().manual_seed(2)
    atoms = torch.randn(37, 1, 4, 4, generator=g, dtype=F64)
    shape = (1, 4, 4)
    op = Blur(gaussian_kernel(0.8, 3).to(F64), shape)
    m, noise = pivot(
        VE(),
        torch.randn(5, *shape, generator=g, dtype=F64),
        0.7,
        op,
        torch.randn(5, *shape, generator=g, dtype=F64),
        0.3,
    )
    s_inv = torch.linalg.inv(noise.to_dense(shape)[0])
    d = m.reshape(5, 1, 16) - atoms.reshape(1, 37, 16)
    w = torch.softmax(-0.5 * torch.einsum("bnd,de,bne->bn", d, s_inv, d), 1)
    ref = (w @ atoms.reshape(37, 16)).reshape(5, *shape)
    torch.testing.assert_close(FiniteImagePrior(atoms, chunk=5).denoise(m, noise), ref)
    torch.testing.assert_close(FiniteImagePrior(atoms, chunk=1000).denoise(m, noise), ref)


def test_finite_prior_posterior_weights_and_nearest_atom():
    g = torch.Generator().manual_seed(3)
    atoms = torch.randn(10, 1, 4, 4, generator=g, dtype=F64)
    prior = FiniteImagePrior(atoms)
    op = Inpaint((torch.rand(1, 1, 4, 4, generator=g) > 0.5).to(F64), (1, 4, 4))
    y = op.measure(atoms[3:4], 0.5, g)
    w = prior.posterior_weights(op, y, 0.5)
    a_mat = dense_matrix(op)
    direct = torch.softmax(-((y.reshape(1, 16) - atoms.reshape(10, 16) @ a_mat.T) ** 2).sum(1) / 0.5, 0)
    torch.testing.assert_close(w, direct)
    noisy = atoms + 1e-3 * torch.randn(atoms.shape, generator=g, dtype=F64)
    assert (prior.nearest_atom(noisy) == torch.arange(10)).all()


def test_isotropic_denoising_of_a_single_gaussian_is_linear_shrinkage():
    shape = (1, 1, 3)
    cov = torch.diag(torch.tensor([0.5, 1.0, 2.0], dtype=F64))
    gmm = GaussianMixture(torch.ones(1, dtype=F64), torch.zeros(1, 3, dtype=F64), cov.unsqueeze(0), shape)
    m = torch.randn(4, *shape, dtype=F64)
    out = gmm.denoise(m, IsotropicNoise(torch.tensor([0.7], dtype=F64)))
    expected = m.reshape(4, 3) * torch.diagonal(cov) / (torch.diagonal(cov) + 0.49)
    torch.testing.assert_close(out.reshape(4, 3), expected)


def test_mixture_rejects_bad_arguments_before_any_work():
    from exactps.priors import GaussianMixture

    for n in (0, -1, 1.5):
        with pytest.raises(ValueError, match="n_components"):
            GaussianMixture.random((1, 2, 2), n)
    with pytest.raises(ValueError, match="img_shape"):
        GaussianMixture.random((1, 0, 2), 2)
    with pytest.raises(ValueError, match="weights of shape"):
        GaussianMixture(torch.ones(0, dtype=torch.float64), torch.zeros(0, 4), torch.zeros(0, 4, 4), (1, 2, 2))


def test_mixture_with_overflowing_sigma_y_is_a_named_error():
    from exactps.interpolants import get_interpolant
    from exactps.operators import AvgPoolSR
    from exactps.posterior import PosteriorPredictor
    from exactps.priors import GaussianMixture, dense_matrix
    from exactps.samplers import sample

    g = torch.Generator().manual_seed(0)
    prior = GaussianMixture.random((1, 4, 4), 2, g)
    op = AvgPoolSR((1, 4, 4), 2, torch.float64)
    y = op.measure(prior.sample(1, g), 0.1, g)
    a = dense_matrix(op)
    prior.posterior(a, y, 1e30)  # a float64 s_y of 1e30 is fine (the posterior is the prior)
    for bad in (torch.tensor(1e30), float("nan"), -1.0):
        with pytest.raises(ValueError, match="sigma_y"):
            prior.posterior(a, y, bad)
    ve = get_interpolant("ve")
    predict = PosteriorPredictor(prior.denoise, ve, op.to_dtype(torch.float32), y.float(), 1e30)
    with pytest.raises(ValueError, match="overflows when squared"):
        sample(predict, ve, (2, 1, 4, 4), "ddim", 3)


def test_mixture_denoiser_is_robust_for_float32_dense_operators_at_huge_noise():
    """A float32 DenseOperator with fewer rows than pixels, rho up to 1e6 (flow interpolant, first
    steps): once a raw Cholesky error. Now finite, and equal to the float64 computation."""
    shape = (1, 4, 4)
    g = torch.Generator().manual_seed(0)
    gm = GaussianMixture.random(shape, 4, g)
    a = torch.randn(6, 16, generator=g)
    x = torch.randn(2, *shape, generator=g)
    op32, op64 = DenseOperator(a, shape), DenseOperator(a.double(), shape)
    for rho in (1e-2, 1.0, 1e2, 1e4, 1e6):
        for sy in (0.0, 0.05):
            m, noise = op32.pivot(x, torch.tensor([rho]), op32.A(x), torch.tensor([sy]))
            _, noise64 = op64.pivot(x.double(), torch.tensor([rho], dtype=torch.float64), op64.A(x.double()),
                                    torch.tensor([sy], dtype=torch.float64))  # fmt: skip
            out = gm.denoise(m, noise)
            assert out.dtype == torch.float32 and torch.isfinite(out).all(), (rho, sy)
            assert torch.allclose(out.double(), gm.denoise(m.double(), noise64), atol=1e-5), (rho, sy)


def test_gmm_denoiser_keeps_each_operators_factorisation_apart_interleaved():
    """The SVD of ``A`` is kept per operator object: interleaved calls on two operators give what a fresh
    mixture (empty cache) gives, and a new operator object is factored afresh."""
    g = torch.Generator().manual_seed(4)
    prior = GaussianMixture.random((1, 4, 4), 3, g)
    ops = [Inpaint((torch.rand(1, 4, 4, generator=g) > 0.5).double(), (1, 4, 4)),
           Blur(gaussian_kernel(1.0, 3).double(), (1, 4, 4))]  # fmt: skip
    x_t = torch.randn(5, 1, 4, 4, generator=g, dtype=torch.float64)
    for op in (*ops, *ops):
        y = op.measure(torch.zeros(1, 1, 4, 4, dtype=torch.float64), 0.1, g)
        m, noise = pivot(VE(), x_t, torch.tensor(2.0, dtype=torch.float64), op, y, 0.1)
        fresh = GaussianMixture(prior.weights, prior.means, prior.covs, prior.img_shape)
        torch.testing.assert_close(prior.denoise(m, noise), fresh.denoise(m, noise), rtol=0, atol=1e-12)
    assert len(prior._operator_cache) == 2
    for clone in (copy.deepcopy(prior), pickle.loads(pickle.dumps(prior))):
        assert clone._operator_cache == {} and torch.equal(clone.covs, prior.covs)
