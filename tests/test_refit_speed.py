"""The fast (RE)ML refit: batched evaluation, the exact observed Hessian, and results
equal to the previous implementation's (one theta at a time, forward-difference
Hessian in the convergence check, Fisher scoring with the expected information only)."""

import re

import numpy as np
import pytest

from lmmscope import theta_optimiser
from lmmscope.cluster_stats import compute_cluster_stats
from lmmscope.control import Performance
from lmmscope.deviance_derivatives import deviance_gradient, deviance_gradients, observed_hessian
from lmmscope.profiled_deviance import solve_pls, solve_pls_batch
from lmmscope.refit import fit_theta
from lmmscope.simulate import make_unbalanced
from lmmscope.z_units import rescale_z, z_column_scale


def _stats(columns=(1, 5, 10), intercept=True):
    X, Zs, y, groups, _beta = make_unbalanced(n=40, p=12, q=3, seed=3)
    codes = np.unique(groups, return_inverse=True)[1]
    X = X[:, list(columns)]
    if intercept:
        X = np.column_stack([np.ones(len(y)), X])
    return compute_cluster_stats(X, y, Zs, codes, codes.max() + 1)


THETAS = np.array([[0.9, 0.2, -0.3, 0.7, 0.1, 0.5],
                   [2.0, 0.0, 0.0, 1.0, 0.0, 0.3],
                   [0.1, -1.2, 0.4, 3.0, -0.2, 1.5],
                   [3.4, 2.2, 1.7, 3.5, 2.1, 4.0]])


@pytest.mark.parametrize("reml", [True, False])
@pytest.mark.parametrize("columns", [(1, 5, 10), ()])
def test_batched_evaluation_equals_one_theta_at_a_time(reml, columns):
    stats = _stats(columns, intercept=bool(columns))
    batch = solve_pls_batch(stats, THETAS)
    gradients = deviance_gradients(stats, batch, reml)
    for t, theta in enumerate(THETAS):
        one = solve_pls(stats, theta)
        assert batch.deviance(reml)[t] == pytest.approx(
            one.deviance_reml if reml else one.deviance_ml, rel=1e-13)
        np.testing.assert_allclose(batch.beta[t], one.beta, rtol=1e-11, atol=1e-12)
        np.testing.assert_allclose(batch.u[t], one.u, rtol=1e-11, atol=1e-12)
        np.testing.assert_allclose(gradients[t], deviance_gradient(stats, one, reml),
                                   rtol=1e-10, atol=1e-10)


@pytest.mark.filterwarnings("ignore:overflow:RuntimeWarning")
def test_batches_split_by_size_and_undefined_thetas_give_inf():
    stats = _stats()
    thetas = np.vstack([THETAS, [np.nan] * 6, [1e200, 0, 0, 1, 0, 1]])
    whole_values, whole_grads = theta_optimiser._evaluate(stats, THETAS, True)
    one_per_batch = Performance(theta_batch_doubles=1)  # one theta per batch
    values, grads = theta_optimiser._evaluate(stats, thetas, True, fill=-7.0,
                                              performance=one_per_batch)
    np.testing.assert_allclose(values[:4], whole_values, rtol=1e-13)
    np.testing.assert_allclose(grads[:4], whole_grads, rtol=1e-10, atol=1e-10)
    assert np.all(np.isinf(values[4:])) and np.all(grads[4:] == -7.0)


@pytest.mark.parametrize("reml", [True, False])
@pytest.mark.parametrize("columns", [(1, 5, 10), ()])
@pytest.mark.parametrize("theta", [THETAS[0], THETAS[2]])
def test_observed_hessian_equals_differences_of_the_gradient(reml, columns, theta):
    stats = _stats(columns, intercept=bool(columns))
    H = observed_hessian(stats, solve_pls_batch(stats, theta[None]), reml)
    gradient = lambda t: deviance_gradient(stats, solve_pls(stats, t), reml)
    h = 1e-5
    numeric = np.column_stack([(gradient(theta + h * e) - gradient(theta - h * e)) / (2 * h)
                               for e in np.eye(theta.size)])
    # central differences are exact to O(h^2) ~ 1e-10 relative here (measured 1.4e-10)
    assert np.abs(H - numeric).max() <= 2e-9 * np.abs(numeric).max()


def _reference_optimum(stats, reml):
    """The profiled (RE)ML deviance minimised by scipy's L-BFGS-B with the analytic gradient,
    from lme4's start, with lme4's bounds (diagonal of the Cholesky factor >= 0)."""
    from scipy.optimize import minimize

    def value_and_gradient(theta):
        sol = solve_pls(stats, theta)
        value = sol.deviance_reml if reml else sol.deviance_ml
        return value, deviance_gradient(stats, sol, reml)

    diagonal = {0, 3, 5}  # lme4's order of a 3 x 3 lower triangle, column by column
    bounds = [(0, None) if i in diagonal else (None, None) for i in range(6)]
    out = minimize(value_and_gradient, np.array([1.0, 0, 0, 1, 0, 1]), jac=True,
                   method="L-BFGS-B", bounds=bounds,
                   options={"ftol": 1e-15, "gtol": 1e-10, "maxiter": 10_000})
    return out.x, out.fun


@pytest.mark.parametrize("reml", [True, False])
def test_refit_reaches_the_optimum_of_an_independent_optimiser(reml):
    stats = _stats()
    theta, deviance, info = theta_optimiser.optimise_theta(stats, reml=reml)
    theta_ref, deviance_ref = _reference_optimum(stats, reml)
    # the same optimum as L-BFGS-B run to its limits (measured: deviance 3e-11 apart on ~600,
    # theta 3e-7 apart)
    assert deviance == pytest.approx(deviance_ref, abs=1e-9)
    np.testing.assert_allclose(theta, theta_ref, rtol=1e-5, atol=1e-5)
    assert info.message == "Fisher scoring converged"
    assert info.converged and info.convergence_messages == [] and not info.singular
    # lme4's final check flags a theta off the optimum, with lme4's message and tolerance
    for factor in (1.001, 1.05):
        off = fit_theta(stats, reml, theta0=theta * factor, optimise=False)
        assert not off.converged and len(off.messages) == 1
        match = re.fullmatch(r"model failed to converge with max\|grad\| = ([0-9.e+-]+) "
                             r"\(tol = 0\.002, component \d\)", off.messages[0])
        assert match and float(match.group(1)) > 0.002, off.messages
    on = fit_theta(stats, reml, theta0=theta, optimise=False)
    assert on.converged and on.messages == []


def test_fisher_scoring_ends_with_what_the_check_needs():
    """The solve, slope and Hessian Fisher scoring hands the check are those at its theta."""
    stats = _stats()
    scaled = rescale_z(stats, z_column_scale(stats))
    identity = np.array([1.0, 0, 0, 1, 0, 1])
    start, _solution = theta_optimiser._best_scaled_start(scaled, True, identity)
    theta, value, _iterations, (sol, parts, H) = theta_optimiser._fisher_scoring(scaled, True,
                                                                                 start)
    fresh = solve_pls_batch(scaled, theta[None])
    assert value == pytest.approx(float(fresh.deviance_reml[0]), rel=1e-14)
    np.testing.assert_allclose(H, observed_hessian(scaled, fresh, True), rtol=1e-9)
    assert np.abs(deviance_gradients(scaled, fresh, True)).max() < 1e-6


def test_fitted_model_reuses_the_optimisers_solve():
    """MixedModelFit takes the optimiser's last solve (in Z's units) instead of solving
    again: the same numbers as a fresh solve at the fitted theta."""
    from lmmscope.mixed import MixedModelFit

    stats = _stats()
    optimum = fit_theta(stats, True, check=True)
    assert optimum.solution is not None and "pls_solution" not in optimum.info
    fresh = solve_pls(stats, optimum.theta)
    for name in ("beta", "u", "Lam", "LinvLamT", "Linv", "RX"):
        np.testing.assert_allclose(getattr(optimum.solution, name), getattr(fresh, name),
                                   rtol=1e-12, atol=1e-14, err_msg=name)  # measured 3e-14
    assert optimum.solution.pwrss == pytest.approx(fresh.pwrss, rel=1e-13)
    assert optimum.solution.deviance_reml == pytest.approx(fresh.deviance_reml, abs=1e-11)
    mixed = MixedModelFit(stats, ["(Intercept)", "a", "b", "c"], ["z0", "z1", "z2"],
                          np.arange(stats.n_groups), optimum=optimum)
    assert mixed._sol is optimum.solution
    assert mixed.sigma == pytest.approx(np.sqrt(fresh.pwrss / (stats.n_obs - 4)), rel=1e-12)
    np.testing.assert_allclose(mixed.ranef.to_numpy(), fresh.u @ fresh.Lam.T, rtol=1e-12,
                               atol=1e-14)
    # an optimum without a solve (unchecked fits keep none) is solved afresh
    unchecked = fit_theta(stats, True, check=False)
    assert unchecked.solution is None


@pytest.mark.parametrize("n", [50, 1000])  # LAPACK's stack, then the column algorithm
@pytest.mark.parametrize("q", [1, 4, 7])
def test_batched_cholesky_both_regimes(n, q):
    from lmmscope.batched import LAPACK_STACK, cholesky_with_inverse
    assert (n <= LAPACK_STACK) == (n == 50)
    rng = np.random.default_rng(q)
    B = rng.standard_normal((n, q, q + 1))
    A = B @ np.swapaxes(B, 1, 2) + np.eye(q)
    L, Linv = cholesky_with_inverse(A)
    np.testing.assert_allclose(L @ np.swapaxes(L, 1, 2), A, rtol=1e-13, atol=1e-13)
    np.testing.assert_allclose(Linv @ L, np.broadcast_to(np.eye(q), A.shape), atol=1e-13)
    assert np.all(np.triu(Linv, 1) == 0) and L.flags.c_contiguous and Linv.flags.c_contiguous
    for bad in (-np.eye(q), np.full((q, q), np.nan)):
        A[n // 2] = bad
        with pytest.raises(np.linalg.LinAlgError):
            cholesky_with_inverse(A)
