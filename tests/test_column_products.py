"""The two sources of what the column and rank checks read (column_products): from the
Gram and from X's rows they answer alike, so the checks give the same errors, warnings
and columns on either layout."""

import numpy as np
import pytest

from lmmscope import checks, rank
from lmmscope.cluster_stats import compute_cluster_stats
from lmmscope.column_products import GramProducts, RowProducts, as_column_products
from lmmscope.exceptions import InputError
from lmmscope.intercept import InterceptPrepended
from lmmscope.rank import RankDeficiencyWarning

N, CLUSTERS = 400, 40


def _both(X, y):
    """(GramProducts, RowProducts) of X's statistics (Gram kept, Gram not computed)."""
    codes = np.repeat(np.arange(CLUSTERS), N // CLUSTERS)
    Z = np.ones((N, 1))
    gram = GramProducts(compute_cluster_stats(X, y, Z, codes, CLUSTERS, gram=True))
    rows = RowProducts(compute_cluster_stats(X, y, Z, codes, CLUSTERS, gram=False), X)
    return gram, rows


def _relative(a, b, scale):
    return np.max(np.abs(a - b) / scale)


@pytest.mark.parametrize("prepended", [True, False])
def test_gram_and_rows_give_the_same_products(prepended):
    """Squares, sums, rows and blocks agree to rounding (measured <= 1.4e-15 relative to
    the columns' norms; 1e-13 asserted), also for a column at epoch-seconds location."""
    rng = np.random.default_rng(11)
    base = rng.standard_normal((N, 8)) * [1, 10, 1e-3, 1, 5, 1, 2, 1]
    base[:, 1] += 1.7e9
    base[:, 4] += 3.0
    X = InterceptPrepended(base) if prepended else base
    gram, rows = _both(X, rng.standard_normal(N))
    assert gram.stats.intercept == rows.stats.intercept == (0 if prepended else None)
    norms = gram.squares
    assert _relative(gram.squares, rows.squares, norms) <= 1e-13
    if prepended:
        assert _relative(gram.sums, rows.sums, np.sqrt(N * norms)) <= 1e-13
    else:
        assert gram.sums is None and rows.sums is None
    columns = [0, 2, 5]
    assert _relative(gram.rows(columns), rows.rows(columns),
                     np.sqrt(np.outer(norms[columns], norms))) <= 1e-13
    few = [1, 3, 4]
    assert _relative(gram.block(few), rows.block(few),
                     np.sqrt(np.outer(norms[few], norms[few]))) <= 1e-13
    assert gram.block() is gram.stats.XtX  # all columns: the Gram itself, no copy


def _awkward_design(rng):
    """Intercept, x2 = x0 + x1 (aliased), a constant-to-precision column, a duplicate
    (x5 = -2 x4 + 1) and plain columns."""
    base = rng.standard_normal((N, 7))
    base[:, 2] = base[:, 0] + base[:, 1]
    base[:, 3] = 2.0 + 1e-14 * rng.standard_normal(N)
    base[:, 5] = -2 * base[:, 4] + 1
    return InterceptPrepended(base), ["(Intercept)"] + [f"x{j}" for j in range(7)]


def test_the_checks_answer_alike_on_both_products():
    rng = np.random.default_rng(5)
    X, names = _awkward_design(rng)
    y = X.base[:, 6] + rng.standard_normal(N)
    outcomes = []
    for products in _both(X, y):
        with pytest.raises(InputError, match="constant column.*x3"):
            checks.check_design_columns(products, names, [0])
        # x3 unpenalised: no constant error; the duplicate pair is named
        with pytest.raises(InputError, match="duplicated column.*x4 = x5"):
            checks.check_design_columns(products, names, [0, 4])
        checks.check_response_not_a_predictor(products, names)
        with pytest.warns(RankDeficiencyWarning) as seen:
            screened = rank.screen_design(products, names, [0, 1, 2, 3, 4])
        with pytest.warns(RankDeficiencyWarning, match="dropping 3 columns.*x2, x3, x5"):
            kept = rank.full_rank_columns(products, names)
        outcomes.append((screened, kept.tolist(), [str(w.message) for w in seen]))
    assert outcomes[0] == outcomes[1]
    assert outcomes[0][0] == ([0, 1, 2], [3, 4])
    assert outcomes[0][1] == [0, 1, 2, 5, 7]


def test_a_copy_of_the_response_is_refused_on_both_products():
    rng = np.random.default_rng(8)
    base = rng.standard_normal((N, 3))
    y = rng.standard_normal(N)
    base[:, 1] = 3 * y + 1
    for products in _both(InterceptPrepended(base), y):
        with pytest.raises(InputError, match="x1 are the response"):
            checks.check_response_not_a_predictor(products, ["(Intercept)", "x0", "x1", "x2"])


def test_statistics_without_a_gram_need_the_rows():
    """Statistics are read through their Gram; without one the caller must name the rows."""
    rng = np.random.default_rng(1)
    X = rng.standard_normal((N, 3))
    gram, rows = _both(X, rng.standard_normal(N))
    assert as_column_products(rows) is rows
    assert isinstance(as_column_products(gram.stats), GramProducts)
    with pytest.raises(ValueError, match="no Gram"):
        as_column_products(rows.stats)
