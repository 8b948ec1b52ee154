"""The fast selection paths against straightforward reference computations.

The whitening fused with its products (row_whitening.whitened_rows), the whitened rows as
an operator (row_whitening.WhitenedOperator), the loss with a column scale and its caches,
and the column-subset view must give the numbers a dense per-cluster computation
gives, for unequal cluster sizes, sorted or shuffled rows, with and without centring.
"""

import numpy as np
import pytest

from lmmscope.cluster_blocks import encode_groups
from lmmscope.cluster_stats import compute_cluster_stats
from lmmscope.row_whitening import WhitenedOperator, whitened_rows
from lmmscope.intercept import InterceptPrepended
from lmmscope.loss import QuadraticLoss
from lmmscope.reduction import reduce_operator, reduce_rows
from lmmscope.selection import selection_path
from lmmscope.tuning import Data, select


# "runs": sorted rows, runs of equal-size clusters (batched row blocks); "sorted":
# unequal sizes; "shuffled": clusters not contiguous (sparse column blocks)
ORDERS = ["runs", "sorted", "shuffled"]


def _problem(seed, order, n_groups=40, p=30, q=2, mean=0.0):
    rng = np.random.default_rng(seed)
    sizes = np.repeat([4, 7], n_groups // 2) if order == "runs" else rng.integers(2, 9, n_groups)
    groups = np.repeat(np.arange(n_groups), sizes)
    if order == "shuffled":
        groups = rng.permutation(groups)
    N = groups.size
    X = rng.standard_normal((N, p)) + mean
    Z = np.column_stack([np.ones(N), rng.standard_normal((N, q - 1))])
    b = rng.standard_normal((n_groups, q))
    y = X[:, :3] @ [1.0, -0.7, 0.4] + np.einsum("ij,ij->i", Z, b[groups]) \
        + 0.3 * rng.standard_normal(N)
    codes, _ = encode_groups(groups)
    return X, y, Z, codes, n_groups


def _reference_whitening(Xc, yc, Z, codes, n_groups, a):
    """Sigma_a,i^{-1/2} (Xc_i, yc_i) with the dense symmetric inverse root per cluster."""
    Xa, ya = np.empty_like(Xc), np.empty_like(yc)
    for i in range(n_groups):
        rows = np.flatnonzero(codes == i)
        S = a * Z[rows] @ Z[rows].T + np.eye(rows.size)
        w, v = np.linalg.eigh(S)
        root = (v / np.sqrt(w)) @ v.T
        Xa[rows], ya[rows] = root @ Xc[rows], root @ yc[rows]
    return Xa, ya


def _close(actual, expected, tol=1e-12):
    scale = max(np.max(np.abs(expected)), 1.0)
    assert np.max(np.abs(actual - expected)) <= tol * scale


@pytest.mark.parametrize("order", ORDERS)
@pytest.mark.parametrize("centre", ["none", "ones column", "prepended"])
def test_fused_whitening_equals_dense_reference(order, centre):
    X, y, Z, codes, n = _problem(1, order, mean=5.0)
    a = 1.3
    if centre == "ones column":
        X[:, 0] = 1.0
    design = InterceptPrepended(X) if centre == "prepended" else X
    stats = compute_cluster_stats(design, y, Z, codes, n, gram=False,
                                  center=False if centre == "none" else None)
    dense = np.column_stack([np.ones(X.shape[0]), X]) if centre == "prepended" else X
    Xc, yc = dense - stats.x_shift, y - stats.y_shift
    ref_X, ref_y = _reference_whitening(Xc, yc, Z, codes, n, a)
    # small blocks: several row (sorted) or column (shuffled) blocks are exercised
    w = whitened_rows(design, y, Z, codes, n, a, stats=stats, chunk_bytes=4096)
    _close(w.X, ref_X)
    _close(w.y, ref_y)
    _close(w.squares, np.einsum("ij,ij->j", ref_X, ref_X))
    _close(w.xty, ref_X.T @ ref_y)
    assert stats.centred == (centre != "none")


@pytest.mark.parametrize("order", ORDERS)
def test_whitened_operator_equals_dense_reference(order):
    X, y, Z, codes, n = _problem(2, order)
    a = 0.8
    stats = compute_cluster_stats(X, y, Z, codes, n, gram=False)
    assert not stats.centred
    ref_X, ref_y = _reference_whitening(X, y, Z, codes, n, a)
    op = WhitenedOperator(X, y, Z, codes, n, a, stats)
    r = np.random.default_rng(3).standard_normal(X.shape[0])
    _close(op.y, ref_y)
    _close(op.xty, ref_X.T @ ref_y)  # from the statistics alone
    _close(op.rmatvec(r), ref_X.T @ r)
    _close(op.squares, np.einsum("ij,ij->j", ref_X, ref_X), 1e-11)
    cols = np.array([4, 0, 17, 4])
    _close(op.columns(cols), ref_X[:, cols])
    _close(op.columns(np.array([17, 2])), ref_X[:, [17, 2]])  # partly cached
    # X's own sums of squares, as the input checks computed them, are not scanned again
    from lmmscope.column_products import raw_moments
    given = WhitenedOperator(np.asfortranarray(X), y, Z, codes, n, a, stats,
                             raw_squares=raw_moments(np.asfortranarray(X)).squares)
    _close(given.squares, np.einsum("ij,ij->j", ref_X, ref_X), 1e-11)


def test_whitened_operator_xty_where_z_explains_most_of_y():
    """y in its own units with large cluster means (1e6, spread 1e3), Z = [1, epoch
    seconds]: with a large a, X'y and the part Z removes are 400-140,000 times
    X_a'y_a, and their difference loses digits (relative error 2e-7 at a = 1e6, 60x
    the pass over X); X_a'y_a is then computed from y_a, as accurate as that pass
    against a long-double reference.  At a = 1 (ratio 13) the statistics serve."""
    rng = np.random.default_rng(11)
    n, m, p = 60, 6, 20
    codes = np.repeat(np.arange(n), m)
    t = 1.7e9 + rng.uniform(0, 3e7, n * m)  # epoch seconds
    Z = np.column_stack([np.ones(n * m), t])
    Z = Z / np.sqrt(np.mean(Z ** 2, axis=0))  # unit root mean square, as the fit does
    X = rng.standard_normal((n * m, p))
    y = 1e6 + 1e3 * rng.standard_normal(n)[codes] + X[:, 0] + rng.standard_normal(n * m)
    stats = compute_cluster_stats(X, y, Z, codes, n, gram=False, center=False)
    for a in (1.0, 1e3, 1e6, 1e8):
        want = np.zeros(p, dtype=np.longdouble)
        for i in range(n):
            rows = slice(i * m, (i + 1) * m)
            Zi = Z[rows].astype(np.longdouble)
            S = a * Zi @ Zi.T + np.eye(m, dtype=np.longdouble)
            inv = np.linalg.inv(S.astype(float)).astype(np.longdouble)
            inv = inv @ (2 * np.eye(m, dtype=np.longdouble) - S @ inv)  # refined
            want += X[rows].astype(np.longdouble).T @ (inv @ y[rows].astype(np.longdouble))
        want = want.astype(float)
        op = WhitenedOperator(X, y, Z, codes, n, a, stats)
        error = np.max(np.abs(op.xty - want)) / np.max(np.abs(want))
        by_pass = np.max(np.abs(op.rmatvec(op.y) - want)) / np.max(np.abs(want))
        assert error <= 1.01 * by_pass + 2e-14, (a, error, by_pass)


def test_whitened_operator_column_cache_refills_without_losing_columns():
    X, y, Z, codes, n = _problem(13, "shuffled", p=90)
    stats = compute_cluster_stats(X, y, Z, codes, n, gram=False)
    ref_X, _ = _reference_whitening(X, y, Z, codes, n, 0.5)
    op = WhitenedOperator(X, y, Z, codes, n, 0.5, stats, cache_bytes=1)  # 64 columns kept
    for request in (np.arange(60), np.arange(50, 70), np.array([3, 89, 3])):
        _close(op.columns(request), ref_X[:, request])


def test_whitened_operator_refuses_centred_statistics():
    X, y, Z, codes, n = _problem(4, "runs")
    X[:, 0] = 1.0
    stats = compute_cluster_stats(X, y, Z, codes, n, gram=False)
    assert stats.centred
    with pytest.raises(ValueError, match="uncentred"):
        WhitenedOperator(X, y, Z, codes, n, 1.0, stats)


def test_loss_with_column_scale_equals_loss_on_scaled_rows():
    rng = np.random.default_rng(5)
    R, y = rng.standard_normal((60, 12)), rng.standard_normal(60)
    scale = rng.uniform(0.5, 3.0, 12)
    lazy = QuadraticLoss(rows=R.copy(), response=y, column_scale=scale)
    plain = QuadraticLoss(rows=R / scale, response=y)
    for support in ([], [3], [1, 7, 10]):
        b = np.zeros(12)
        b[support] = rng.standard_normal(len(support))
        assert lazy.rss(b) == pytest.approx(plain.rss(b), rel=1e-13)
        _close(lazy.solve_on(support), plain.solve_on(support))
        # the same support again, other coefficients: the caches must not answer stale values
        b[support] = rng.standard_normal(len(support))
        assert lazy.rss(b) == pytest.approx(plain.rss(b), rel=1e-13)
    # the Gram's columns and blocks the search reads, computed from the rows
    _close(lazy.gram_columns(np.array([7, 1])), (R / scale).T @ (R / scale)[:, [7, 1]])
    _close(lazy.gram_block(np.array([1, 7, 10])),
           (R / scale)[:, [1, 7, 10]].T @ (R / scale)[:, [1, 7, 10]])


@pytest.mark.parametrize("order", ORDERS)
def test_operator_problem_selects_as_the_explicit_rows(order):
    X, y, Z, codes, n = _problem(7, order, p=60)
    X[:, 11] = 0.0  # never selectable: the problem keeps the other columns
    a = 1.1
    stats = compute_cluster_stats(X, y, Z, codes, n, gram=False)
    op = reduce_operator(WhitenedOperator(X, y, Z, codes, n, a, stats))
    Xa, ya = _reference_whitening(X, y, Z, codes, n, a)
    rows = reduce_rows(Xa, ya, [])
    assert op.penalised.tolist() == rows.penalised.tolist() == [j for j in range(60) if j != 11]
    _close(op.scale, rows.scale, 1e-11)
    fast = selection_path(op, [0, 1, 2, 3, 5])
    slow = selection_path(rows, [0, 1, 2, 3, 5])
    for f, s in zip(fast, slow):
        assert f.support.tolist() == s.support.tolist()
        _close(f.coef, s.coef, 1e-10)
        assert f.rss == pytest.approx(s.rss, rel=1e-10)
    assert set(fast[3].support.tolist()) == {0, 1, 2}


@pytest.mark.parametrize("intercept", [False, True])
def test_row_and_gram_layouts_select_the_same(intercept):
    X, y, Z, codes, n = _problem(8, "shuffled", p=50, mean=3.0)
    if intercept:
        X[:, 0] = 1.0
    unpenalised = [0] if intercept else []
    fits = {}
    for use_gram in (True, False):
        data = Data(X, y, Z, codes, n, use_gram=use_gram)
        fits[use_gram] = select(data, unpenalised=unpenalised, names=list(range(50)), k=3, a=0.9)
    assert fits[True].support.tolist() == fits[False].support.tolist()
    # signals 0, 1, 2; with an intercept, column 0 is the (unpenalised) intercept
    assert {1, 2} <= set(fits[False].support.tolist())
    assert intercept or 0 in fits[False].support
    _close(fits[False].coef, fits[True].coef, 1e-9)


@pytest.mark.parametrize("order", ["runs", "shuffled"])
@pytest.mark.parametrize("unpenalised", [[], [0], [0, 5]])
def test_gram_columns_on_demand_equal_the_whitened_gram(order, unpenalised):
    from lmmscope.whitening import WhitenedGramColumns, whiten_stats
    from lmmscope.reduction import reduce_gram, reduce_gram_columns

    X, y, Z, codes, n = _problem(9, order, p=40, mean=2.0)
    X[:, 0] = 1.0  # an intercept: the statistics are centred
    X[:, 7] = 2.0 * X[:, 5] + 1.0  # in the span of columns 0 and 5: left out when they are
    stats = compute_cluster_stats(X, y, Z, codes, n, gram=True)
    a = 1.4
    explicit = whiten_stats(stats, a)
    columns = WhitenedGramColumns(stats, a)
    _close(columns.columns(np.array([3, 0, 39])), explicit.gram[:, [3, 0, 39]])
    _close(columns.diagonal, np.diag(explicit.gram))
    _close(columns.xty, explicit.xty)
    assert columns.trace_inv == pytest.approx(explicit.trace_inv, rel=1e-13)
    fast = reduce_gram_columns(columns, unpenalised)
    slow = reduce_gram(explicit.gram.copy(), explicit.xty, explicit.yty, unpenalised)
    assert fast.penalised.tolist() == slow.penalised.tolist()
    assert (7 in fast.penalised) == (5 not in unpenalised)
    _close(fast.scale, slow.scale)
    every = np.arange(fast.penalised.size)
    _close(fast.loss.gram_columns(every), slow.loss.gram, 1e-11)
    _close(fast.loss.xty, slow.loss.xty, 1e-11)
    assert fast.loss.yty == pytest.approx(slow.loss.yty, rel=1e-12)
    for f, s in zip(selection_path(fast, [1, 3]), selection_path(slow, [1, 3])):
        assert f.support.tolist() == s.support.tolist()
        _close(f.coef, s.coef, 1e-10)


def test_single_problem_gram_layout_reads_columns_on_demand():
    from lmmscope.layouts import GramLayout, choose_layout

    layout = choose_layout(20_000, 3_000, k=3, a=1.0)
    assert isinstance(layout, GramLayout) and layout.columns_on_demand
    assert not choose_layout(20_000, 3_000, k=None, a=1.0).columns_on_demand
    X, y, Z, codes, n = _problem(10, "runs", p=60)
    X[:, 0] = 1.0
    fits = [select(Data(X, y, Z, codes, n, layout=GramLayout(columns_on_demand=flag)),
                   unpenalised=[0], names=list(range(60)), k=3, a=0.7) for flag in (False, True)]
    assert fits[0].support.tolist() == fits[1].support.tolist()
    _close(fits[1].coef, fits[0].coef, 1e-10)


@pytest.mark.parametrize("unpenalised", [[0], [0, 1], [3, 8]])  # leading, or not
def test_row_reduction_equals_the_gram_reduction(unpenalised):
    from lmmscope.reduction import reduce_gram

    rng = np.random.default_rng(11)
    Xa, ya = rng.standard_normal((80, 25)), rng.standard_normal(80)
    Xa[:, 12] = Xa[:, 3] - 2 * Xa[:, 8]  # in the span of columns 3 and 8
    gram = reduce_gram(Xa.T @ Xa, Xa.T @ ya, ya @ ya, unpenalised)
    rows = reduce_rows(Xa.copy(), ya, unpenalised)
    assert rows.penalised.tolist() == gram.penalised.tolist()
    assert (12 in rows.penalised) == (unpenalised != [3, 8])
    _close(rows.scale, gram.scale)
    every = np.arange(rows.penalised.size)
    R = rows.loss.columns(every)
    _close(R.T @ R, gram.loss.gram, 1e-11)
    _close(rows.loss.xty, gram.loss.xty, 1e-11)
    assert rows.loss.yty == pytest.approx(gram.loss.yty, rel=1e-12)
    b = np.zeros(every.size)
    b[[2, 5]] = [0.7, -1.1]
    _close(rows.recover(b), gram.recover(b), 1e-11)


def test_gram_column_store_refills_and_grows_without_stale_columns():
    from lmmscope.whitening import WhitenedGramColumns, whiten_stats
    from lmmscope.reduction import ReducedGramColumns, reduce_gram, reduce_gram_columns

    X, y, Z, codes, n = _problem(12, "shuffled", p=30)
    X[:, 0] = 1.0
    stats = compute_cluster_stats(X, y, Z, codes, n, gram=True)
    explicit = whiten_stats(stats, 0.6)
    slow = reduce_gram(explicit.gram.copy(), explicit.xty, explicit.yty, [0]).loss.gram
    fast = reduce_gram_columns(WhitenedGramColumns(stats, 0.6), [0]).loss.gram
    # a store of 8 columns (blocks of 2): refilled, then grown for a 12-column request
    small = ReducedGramColumns(fast.wg, fast.pen, fast.G_up, fast.A, fast.scale,
                               fast.diagonal * fast.scale ** 2, cache_bytes=1, block=2)
    for request in ([3, 1, 4], [1, 5, 9, 2, 6], [5, 3, 5, 8], list(range(12)), [28, 0]):
        _close(small.columns(request), slow[:, request], 1e-11)
        _close(small.block(request), slow[np.ix_(request, request)], 1e-11)


@pytest.mark.parametrize("mean", [0.5, 3.0])  # corrected after the product (mild means)
def test_centred_gram_equals_the_gram_of_centred_columns(mean):
    X, y, Z, codes, n = _problem(14, "runs", p=25, mean=mean)
    X[:, 0] = 1.0
    stats = compute_cluster_stats(X, y, Z, codes, n, gram=True)
    assert stats.centred
    Xc = X - stats.x_shift
    _close(stats.XtX, Xc.T @ Xc, 1e-12)
    _close(stats.Xty, Xc.T @ (y - stats.y_shift), 1e-12)


@pytest.mark.parametrize("centre", ["none", "prepended"])
def test_column_major_whitening_in_tiles_equals_dense_reference(centre):
    """A column-major X (a data frame's own block) is whitened in tiles of columns;
    tiles of 8 of its 30 columns (a partial last one) give the dense reference's numbers."""
    from lmmscope.control import Performance

    tiles = Performance(column_tile=8)  # products (the statistics) and whitening in tiles
    X, y, Z, codes, n = _problem(4, "runs", mean=5.0)
    X = np.asfortranarray(X)
    a = 0.7
    design = InterceptPrepended(X) if centre == "prepended" else X
    stats = compute_cluster_stats(design, y, Z, codes, n, gram=False,
                                  center=False if centre == "none" else None, performance=tiles)
    dense = np.column_stack([np.ones(X.shape[0]), X]) if centre == "prepended" else X
    ref_X, ref_y = _reference_whitening(dense - stats.x_shift, y - stats.y_shift, Z, codes, n, a)
    w = whitened_rows(design, y, Z, codes, n, a, stats=stats, chunk_bytes=4096,
                      performance=tiles)
    _close(w.X, ref_X)
    _close(w.squares, np.einsum("ij,ij->j", ref_X, ref_X))
    _close(w.xty, ref_X.T @ ref_y)


@pytest.mark.parametrize("order", ORDERS)
@pytest.mark.parametrize("centre", ["none", "ones column", "prepended"])
def test_whitening_in_place_equals_the_fresh_whitening(order, centre):
    """A row-major copy of X whitened in place (``overwrite``) holds bit for bit the
    X_a a fresh whitening gives, with the same sums of squares and X_a'y_a."""
    X, y, Z, codes, n = _problem(5, order, mean=5.0)
    if centre == "ones column":
        X[:, 0] = 1.0
    design = InterceptPrepended(np.asfortranarray(X)) if centre == "prepended" else X
    stats = compute_cluster_stats(design, y, Z, codes, n, gram=False,
                                  center=False if centre == "none" else None)
    fresh = whitened_rows(design, y, Z, codes, n, 0.8, stats=stats, chunk_bytes=4096)
    lead = int(centre == "prepended")
    copy = np.full((X.shape[0], lead + X.shape[1]), np.nan)  # lead column: never read
    copy[:, lead:] = X
    done = whitened_rows(design, y, Z, codes, n, 0.8, stats=stats, chunk_bytes=4096,
                         overwrite=copy)
    assert done.X is copy
    np.testing.assert_array_equal(done.X, fresh.X)
    np.testing.assert_array_equal(done.y, fresh.y)
    np.testing.assert_array_equal(done.squares, fresh.squares)
    np.testing.assert_array_equal(done.xty, fresh.xty)
    with pytest.raises(ValueError, match="row-major array of X's shape"):
        whitened_rows(design, y, Z, codes, n, 0.8, stats=stats, overwrite=np.asfortranarray(copy))


@pytest.mark.parametrize("shape", [(700, 300), (3000, 5), (37, 90), (2, 3)])
def test_column_major_moments_and_row_major_copy(shape):
    """A column-major X's moments are read along its columns in tiles (small tiles
    here: several of rows and columns, partial last ones) and agree with the row-major
    reading; the row-major copy made in the same pass is X exactly."""
    from lmmscope import centring, column_products
    from lmmscope.control import Performance

    tiles = Performance(moment_tile_bytes=2**14, copy_block_bytes=2**11)
    rng = np.random.default_rng(7)
    X = rng.standard_normal(shape) * rng.uniform(0.1, 50, shape[1]) + rng.uniform(-1e3, 1e3, shape[1])
    by_rows = column_products.raw_moments(X)
    copy = np.zeros((shape[0], 1 + shape[1]))
    by_columns = column_products.raw_moments(np.asfortranarray(X), copy_to=copy[:, 1:], performance=tiles)
    np.testing.assert_array_equal(copy[:, 1:], X)
    assert not copy[:, 0].any()
    for got, want in ((by_columns.sums, by_rows.sums), (by_columns.squares, by_rows.squares),
                      (by_columns.projections, by_rows.projections)):
        np.testing.assert_allclose(got, want, rtol=1e-13, atol=1e-13 * np.abs(want).max())
    with pytest.raises(ValueError, match="column-major"):
        centring.column_moments(X, copy_to=np.empty(shape))


@pytest.mark.parametrize("intercept", [True, False])
def test_fit_on_a_column_major_x_whitens_a_copy_in_place(intercept, monkeypatch):
    """One selection (k, a fixed) on a column-major X: the input checks copy X
    row-major and the whitening overwrites that copy.  The fit equals the fit on a
    row-major X; afterwards the data backend holds the caller's X (never the
    overwritten copy), so inference on the result is that of the row-major fit."""
    import lmmscope
    import lmmscope.tuning as tuning

    X, y, Z, codes, n = _problem(6, "runs", n_groups=60, p=40, mean=3.0)
    taken = []
    original = tuning.whitened_rows

    def spy(*args, overwrite=None, **kwargs):
        taken.append(overwrite is not None)
        return original(*args, overwrite=overwrite, **kwargs)

    monkeypatch.setattr(tuning, "whitened_rows", spy)
    always = None if intercept else [5]
    C = lmmscope.LmmScope(k=3, a=1.0, fit_intercept=intercept, always=always).fit(
        X, y, Z=Z, groups=codes)
    assert taken == [False]
    XF = np.asfortranarray(X)
    F = lmmscope.LmmScope(k=3, a=1.0, fit_intercept=intercept, always=always).fit(
        XF, y, Z=Z, groups=codes)
    assert taken == [False, True]
    assert list(F.support_) == list(C.support_)
    np.testing.assert_allclose(F.coef_, C.coef_, rtol=0, atol=1e-11)
    data = F.result_._data
    assert data._overwritable is None
    base = data.X.base if intercept else data.X
    assert base is XF
    got, want = F.result_.inference(), C.result_.inference()
    np.testing.assert_allclose(got["std_error"], want["std_error"], rtol=1e-8)
    np.testing.assert_allclose(got["estimate"], want["estimate"], rtol=0, atol=1e-8)
