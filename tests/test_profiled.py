"""The profiled (RE)ML deviance: analytic gradient, expected Hessian, both optimisers."""

import numpy as np
import pytest

from lmmscope import theta_optimiser
from lmmscope.cluster_stats import compute_cluster_stats
from lmmscope.deviance_derivatives import deviance_gradient, deviance_slope, expected_hessian
from lmmscope.profiled_deviance import solve_pls
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
    dev = lambda t: getattr(solve_pls(stats, t), "deviance_reml" if reml else "deviance_ml")
    h = 1e-6
    numeric = [(dev(theta + h * e) - dev(theta - h * e)) / (2 * h) for e in np.eye(theta.size)]
    analytic = deviance_gradient(stats, solve_pls(stats, theta), reml)
    np.testing.assert_allclose(analytic, numeric, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("reml", [True, False])
def test_fisher_scoring_and_fallback_agree(stats, reml, monkeypatch):
    theta_s, dev_s, result = theta_optimiser.optimise_theta(stats, reml=reml)
    assert result.message.startswith("Fisher scoring")
    # the expected Hessian is close to the observed one at the optimum
    sol = solve_pls(stats, theta_s)
    G, ZWZ = deviance_slope(stats, sol, reml)
    H, _gauss_newton = expected_hessian(sol.Lam, G, ZWZ,
                                        stats.n_obs - (stats.p if reml else 0))
    grad = lambda t: deviance_gradient(stats, solve_pls(stats, t), reml)
    H_obs = np.column_stack([(grad(theta_s + 1e-6 * e) - grad(theta_s - 1e-6 * e)) / 2e-6
                             for e in np.eye(theta_s.size)])
    ratio = np.linalg.eigvals(np.linalg.solve(H, H_obs)).real
    assert 0.7 < ratio.min() and ratio.max() < 1.3
    monkeypatch.setattr(theta_optimiser, "_fisher_scoring", lambda *a, **k: None)
    theta_f, dev_f, result_f = theta_optimiser.optimise_theta(stats, reml=reml)
    assert not str(result_f.message).startswith("Fisher scoring")
    np.testing.assert_allclose(theta_s, theta_f, atol=1e-7)
    assert dev_s == pytest.approx(dev_f, rel=1e-12, abs=1e-9)
    assert np.abs(grad(theta_s)).max() < 1e-6


@pytest.mark.parametrize("unit", [1e6, 1e-6])
def test_refit_does_not_depend_on_unit_free_z(unit):
    """``Control.unit_free_z`` sets the units of the selection's proxy covariance only:
    the refit optimises theta on Z's columns scaled to unit root mean square whatever it
    says, so a random slope in other units gives the same ML fit, rescaled.  Optimising
    on the raw Z instead (honouring ``unit_free_z=False`` in the refit) was measured to
    stop 124 REML deviance units short of the optimum at x1e-6 and to call this clear
    slope singular at x1e6 (theta of Z's units below ``singular_tol``)."""
    import pandas as pd

    import lmmscope
    from lmmscope.checks import ScaleWarning

    rng = np.random.default_rng(1)
    n, m = 30, 8
    g = np.repeat(np.arange(n), m)
    t = np.tile(np.arange(m, dtype=float), n)
    y = (3 + 0.5 * t + rng.standard_normal(n)[g] + 0.5 * rng.standard_normal(n)[g] * t
         + rng.standard_normal(n * m))
    ref = lmmscope.lmm("y ~ t + (t | g)", pd.DataFrame({"y": y, "t": t, "g": g}), method="ML")
    with pytest.warns(ScaleWarning):
        fit = lmmscope.lmm("y ~ t + (t | g)", pd.DataFrame({"y": y, "t": t * unit, "g": g}),
                           method="ML", control=lmmscope.Control(unit_free_z=False))
    assert fit.converged and not fit.singular and not ref.singular
    assert fit.loglik == pytest.approx(ref.loglik, rel=1e-12)
    np.testing.assert_allclose(np.sqrt(np.diag(fit.psi)) * [1, unit], np.sqrt(np.diag(ref.psi)),
                               rtol=1e-12)
