"""The profiled (RE)ML deviance: analytic gradient, expected Hessian, both optimisers."""

import numpy as np
import pytest

from lmmscope import profiled
from lmmscope.crossprod import compute_cluster_stats
from lmmscope.simulate import make_unbalanced


@pytest.fixture(scope="module")
def stats():
    X, Zs, y, groups, _beta = make_unbalanced(n=40, p=12, q=3, seed=3)
    codes = np.unique(groups, return_inverse=True)[1]
    X = np.column_stack([np.ones(len(y)), X[:, [1, 5, 10]]])
    return compute_cluster_stats(X, y, Zs, codes, codes.max() + 1)


@pytest.mark.parametrize("reml", [True, False])
def test_gradient_matches_central_differences(stats, reml):
    theta = np.array([0.9, 0.2, -0.3, 0.7, 0.1, 0.5])
    dev = lambda t: getattr(profiled.solve_pls(stats, t), "deviance_reml" if reml else "deviance_ml")
    h = 1e-6
    numeric = [(dev(theta + h * e) - dev(theta - h * e)) / (2 * h) for e in np.eye(theta.size)]
    analytic = profiled.deviance_gradient(stats, profiled.solve_pls(stats, theta), reml)
    np.testing.assert_allclose(analytic, numeric, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("reml", [True, False])
def test_fisher_scoring_and_fallback_agree(stats, reml, monkeypatch):
    theta_s, dev_s, result = profiled.optimise_theta(stats, reml=reml)
    assert result.message.startswith("Fisher scoring")
    # the expected Hessian is close to the observed one at the optimum
    sol = profiled.solve_pls(stats, theta_s)
    G, ZWZ = profiled.deviance_slope(stats, sol, reml)
    H, _gauss_newton = profiled.expected_hessian(sol.Lam, G, ZWZ,
                                                 stats.n_obs - (stats.p if reml else 0))
    grad = lambda t: profiled.deviance_gradient(stats, profiled.solve_pls(stats, t), reml)
    H_obs = np.column_stack([(grad(theta_s + 1e-6 * e) - grad(theta_s - 1e-6 * e)) / 2e-6
                             for e in np.eye(theta_s.size)])
    ratio = np.linalg.eigvals(np.linalg.solve(H, H_obs)).real
    assert 0.7 < ratio.min() and ratio.max() < 1.3
    monkeypatch.setattr(profiled, "_fisher_scoring", lambda *a, **k: None)
    theta_f, dev_f, result_f = profiled.optimise_theta(stats, reml=reml)
    assert not str(result_f.message).startswith("Fisher scoring")
    np.testing.assert_allclose(theta_s, theta_f, atol=1e-7)
    assert dev_s == pytest.approx(dev_f, rel=1e-12, abs=1e-9)
    assert np.abs(grad(theta_s)).max() < 1e-6
