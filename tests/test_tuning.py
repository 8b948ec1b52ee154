"""The tuning of k and a (tuning.py) and the refit cache (refit.py)."""

import ast
import inspect

import numpy as np
import pytest

import lmmscope
from lmmscope import tuning
from lmmscope.refit import Refitter
from lmmscope.simulate import seed_formula


def test_no_function_in_tuning_over_40_lines():
    tree = ast.parse(inspect.getsource(tuning))
    long = [(f.name, f.end_lineno - f.lineno + 1) for f in ast.walk(tree)
            if isinstance(f, ast.FunctionDef) and f.end_lineno - f.lineno + 1 > 40]
    assert long == []


def test_k_cv_with_a_cv(seed_data):
    """k="cv", a="cv": a by the raw held-out error (each fold's k by the criterion), then k
    at that a by the whitened held-out error, as documented in tuning.py."""
    df, _beta = seed_data
    grid = (0.5, 2.0, 8.0)
    fit = lmmscope.lmm_scope(seed_formula(), df, k="cv", a="cv", a_grid=grid, k_max=6)
    assert fit.support == ["x1", "x5", "x10"] and fit.criterion == "cv"
    errors = fit.a_history.set_index("a")["cv_error"]
    assert fit.a == errors.idxmin()
    assert int(fit.path.loc[int(np.argmin(fit.path["cv_error"])), "k"]) == fit.k == 3
    same_a = lmmscope.lmm_scope(seed_formula(), df, k="cv", a=fit.a, k_max=6)
    np.testing.assert_allclose(same_a.path["cv_error"], fit.path["cv_error"], rtol=1e-12)
    by_gic = lmmscope.lmm_scope(seed_formula(), df, a="cv", a_grid=grid, k_max=6)
    np.testing.assert_allclose(by_gic.a_history["cv_error"], errors.to_numpy(), rtol=1e-12)


def test_a_history_records_both_starts_and_the_comparison(seed_data):
    df, _beta = seed_data
    fit = lmmscope.lmm_scope(seed_formula(), df)
    starts = list(dict.fromkeys(fit.a_history["start"]))
    # the iteration from a = 0 moved (its support changed): the second start ran
    assert starts == ["a = 0", "unpenalised REML", "refitted likelihood"]
    first = fit.a_history[fit.a_history["start"] == "a = 0"]
    assert first["support"].nunique() > 1
    final = fit.a_history.iloc[-1]
    assert final["refit_criterion"] == fit.a_history["refit_criterion"].min()
    assert final["a"] == fit.a and final["k"] == fit.k == 3


def test_refitter_caches_by_columns(seed_data):
    """Column order and duplicates do not matter; a REML and an ML fit are two entries
    (on one set of subset statistics: the last columns' are kept); asking for the
    convergence check re-uses the optimum as its start."""
    df, _beta = seed_data
    fit = lmmscope.lmm_scope(seed_formula(), df, k=3, a=2.0)
    calls = []

    class Counting:
        stats = fit._data.stats

        def subset_stats(self, columns):
            calls.append(tuple(columns))
            return fit._data.subset_stats(columns)

    refitter = Refitter(Counting())
    first = refitter.fit([3, 1, 0])
    assert refitter.fit([0, 1, 3, 3]) is first and len(calls) == 1
    ml = refitter.fit([0, 1, 3], reml=False)
    assert ml is not first and len(calls) == 1
    assert ml.deviance < first.deviance + 50  # both are -2 log-likelihoods of one model
    checked = refitter.fit([0, 1, 3], check=True)
    assert checked.converged and np.allclose(checked.theta, first.theta, atol=1e-6)
    refitter.fit([0, 1])
    refitter.fit([0, 1, 3], reml=False, check=True)  # other columns in between: asked again
    assert calls == [(0, 1, 3), (0, 1), (0, 1, 3)]


def test_random_slope_columns_unpenalised_by_default(seed_data):
    """A fixed column that is also a random slope is kept like the intercept (lme4's
    hierarchy); penalize_random_slopes=True makes it a candidate again; an integer k
    counting it is refused with the reason."""
    df, _beta = seed_data
    kept = lmmscope.lmm_scope("y ~ x1 + x5 + x10 + x20 + z1 + (z1 | cluster)", df)
    assert kept.unpenalised == ["Intercept", "z1"] and "z1" in kept.selected
    assert kept.coef["z1"] != 0
    free = lmmscope.lmm_scope("y ~ x1 + x5 + x10 + x20 + z1 + (z1 | cluster)", df,
                              penalize_random_slopes=True)
    assert free.unpenalised == ["Intercept"]
    with pytest.raises(ValueError, match=r"random-slope column\(s\) z1 are kept unpenalised"):
        lmmscope.lmm_scope("y ~ z1 + (z1 | cluster)", df, k=1)


def test_k_cv_with_a_iteration_reports_cv_path(seed_data):
    """k="cv" with the a-iteration: the path of the returned a carries its CV errors, and
    the support is the truth."""
    df, _beta = seed_data
    fit = lmmscope.lmm_scope(seed_formula(), df, k="cv", k_max=6)
    assert fit.support == ["x1", "x5", "x10"] and fit.criterion == "cv"
    assert "cv_error" in fit.path and fit.path["cv_error"].notna().all()
    same_a = lmmscope.lmm_scope(seed_formula(), df, k="cv", a=fit.a, k_max=6)
    np.testing.assert_allclose(same_a.path["cv_error"], fit.path["cv_error"], rtol=1e-12)


@pytest.mark.parametrize("scale_z, scale_x", [(1e6, 1e-6), (1e-6, 1e6)])
def test_selection_free_of_z_and_x_units(seed_data, scale_z, scale_x):
    """A random-slope column times 1e6 with a penalised column times 1e-6 used to change
    logLik by 19% (and the support): now support, a, logLik and the rescaled
    coefficients are unchanged."""
    df, _beta = seed_data
    ref = lmmscope.lmm_scope(seed_formula(), df, method="ML")
    scaled = df.assign(z1=df["z1"] * scale_z, x1=df["x1"] * scale_x)
    fit = lmmscope.lmm_scope(seed_formula(), scaled, method="ML")
    assert fit.support == ref.support == ["x1", "x5", "x10"]
    assert fit.a == pytest.approx(ref.a, rel=1e-9)
    assert fit.loglik == pytest.approx(ref.loglik, rel=1e-9)
    assert fit.coef["x1"] * scale_x == pytest.approx(ref.coef["x1"], rel=1e-9)
    assert fit.fixef["x1"] * scale_x == pytest.approx(ref.fixef["x1"], rel=1e-9)
    sd, sd_ref = np.sqrt(np.diag(fit.psi)), np.sqrt(np.diag(ref.psi))
    assert sd[1] * scale_z == pytest.approx(sd_ref[1], rel=1e-6)


def test_raw_z_proxy_on_request(seed_data):
    """Control(unit_free_z=False): the proxy on the raw Z (the paper's definition)."""
    df, _beta = seed_data
    raw = lmmscope.lmm_scope(seed_formula(), df, k=3, a=1.5, control=lmmscope.Control(unit_free_z=False))
    assert np.all(raw._data.z_scale == 1.0)
    free = lmmscope.lmm_scope(seed_formula(), df, k=3, a=1.5)
    assert not np.allclose(free._data.z_scale, 1.0)
    assert raw.support == free.support == ["x1", "x5", "x10"]
