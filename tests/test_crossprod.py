"""The whitened statistics from per-cluster cross-products equal a dense computation."""

import numpy as np
import pytest

from lmmscope.cluster_stats import compute_cluster_stats
from lmmscope.row_whitening import whiten_rows
from lmmscope.whitening import whiten_stats


def dense_whitening(X, y, Z, codes, a):
    N = X.shape[0]
    S = np.zeros((N, N))
    for g in np.unique(codes):
        r = np.flatnonzero(codes == g)
        S[np.ix_(r, r)] = a * Z[r] @ Z[r].T + np.eye(r.size)
    w, V = np.linalg.eigh(S)
    root_inv = V @ np.diag(w ** -0.5) @ V.T
    return root_inv @ X, root_inv @ y, S


def test_whitened_gram_matches_dense_reference():
    rng = np.random.default_rng(11)
    sizes = rng.integers(1, 9, size=25)
    codes = np.repeat(np.arange(25), sizes)
    rng.shuffle(codes)  # clusters not contiguous
    N, p, q = sizes.sum(), 7, 3
    X, Z, y = rng.standard_normal((N, p)), rng.standard_normal((N, q)), rng.standard_normal(N)
    for a in (0.3, 2.5):
        w = whiten_stats(compute_cluster_stats(X, y, Z, codes, 25), a)
        Xa, ya, S = dense_whitening(X, y, Z, codes, a)
        np.testing.assert_allclose(w.gram, Xa.T @ Xa, atol=1e-10, rtol=0)
        np.testing.assert_allclose(w.xty, Xa.T @ ya, atol=1e-10, rtol=0)
        assert abs(w.yty - ya @ ya) < 1e-10
        assert abs(w.trace_inv - np.trace(np.linalg.inv(S))) < 1e-10
        Xr, yr = whiten_rows(X, y, Z, codes, 25, a)
        np.testing.assert_allclose(Xr, Xa, atol=1e-10, rtol=0)
        np.testing.assert_allclose(yr, ya, atol=1e-10, rtol=0)


def test_sorted_runs_and_chunks_match_dense_products():
    """Batched products over runs of equal-size clusters (sorted rows) and the chunked
    sparse product (rows in any order) both equal per-cluster Z_i'X_i; so does the
    adjoint, cluster_expand."""
    from lmmscope.cluster_blocks import cluster_expand, cluster_products, equal_size_runs
    rng = np.random.default_rng(3)
    sizes = np.repeat([3, 5, 2], 10)  # three runs of ten equal-size clusters
    n = sizes.size
    codes = np.repeat(np.arange(n), sizes)
    N, p, q = codes.size, 6, 2
    X, Z = rng.standard_normal((N, p)), rng.standard_normal((N, q))
    V = rng.standard_normal((n, q, p))
    reference = np.stack([Z[codes == i].T @ X[codes == i] for i in range(n)])
    expanded = np.vstack([Z[codes == i] @ V[i] for i in range(n)])
    assert [r[3] for r in equal_size_runs(codes, n)] == [3, 5, 2]
    np.testing.assert_allclose(cluster_products(Z, X, codes, n), reference, atol=1e-12)
    np.testing.assert_allclose(cluster_expand(Z, V, codes, n), expanded, atol=1e-12)
    order = rng.permutation(N)
    assert equal_size_runs(codes[order], n) is None
    for chunk_bytes in (1, 200, 2**20):  # one cluster per chunk, a few, all at once
        out = cluster_products(Z[order], X[order], codes[order], n, chunk_bytes=chunk_bytes)
        np.testing.assert_allclose(out, reference, atol=1e-12)
    np.testing.assert_allclose(cluster_expand(Z[order], V, codes[order], n), expanded[order],
                               atol=1e-12)
    # whitening on sorted rows (batched path) equals the dense reference too
    Xa, ya, _S = dense_whitening(X, X[:, 0], Z, codes, 1.7)
    Xr, yr = whiten_rows(X, X[:, 0], Z, codes, n, 1.7)
    np.testing.assert_allclose(Xr, Xa, atol=1e-10, rtol=0)
    np.testing.assert_allclose(yr, ya, atol=1e-10, rtol=0)
    # chunked whitened Gram: one cluster per chunk gives the same as one chunk
    stats = compute_cluster_stats(X, X[:, 0], Z, codes, n)
    np.testing.assert_allclose(whiten_stats(stats, 1.7, chunk_bytes=1).gram,
                               whiten_stats(stats, 1.7).gram, atol=1e-10)


def test_batched_cholesky_with_inverse():
    from lmmscope.batched import cholesky_with_inverse
    rng = np.random.default_rng(4)
    for q in (1, 3, 6):
        B = rng.standard_normal((50, q, q))
        A = B @ np.swapaxes(B, 1, 2) + 0.1 * np.eye(q)
        L, Linv = cholesky_with_inverse(A)
        np.testing.assert_allclose(L, np.linalg.cholesky(A), atol=1e-10)
        np.testing.assert_allclose(Linv @ L, np.broadcast_to(np.eye(q), A.shape), atol=1e-10)
    A[7] = -np.eye(q)
    with pytest.raises(np.linalg.LinAlgError):
        cholesky_with_inverse(A)


def test_intercept_prepended_behaves_like_the_stacked_matrix():
    from lmmscope.intercept import InterceptPrepended, left_multiply
    rng = np.random.default_rng(5)
    base = rng.standard_normal((12, 4))
    full = np.column_stack([np.ones(12), base])
    X = InterceptPrepended(base)
    assert X.shape == full.shape
    b = rng.standard_normal(5)
    np.testing.assert_allclose(X @ b, full @ b)
    np.testing.assert_array_equal(np.asarray(X), full)
    for key in ([0, 3, 5], slice(2, 7), (slice(None), [4, 0, 2]), (np.arange(12) % 2 == 0, 0),
                (slice(None), 3), 4, (4, 0), (4, [1, 2]), (-1, slice(1, 3))):
        np.testing.assert_array_equal(X[key], full[key])
    A = rng.standard_normal((3, 12))
    np.testing.assert_allclose(left_multiply(A, X), A @ full)
    codes = np.repeat(np.arange(4), 3)
    Z = rng.standard_normal((12, 2))
    y = rng.standard_normal(12)
    implicit = compute_cluster_stats(X, y, Z, codes, 4)
    explicit = compute_cluster_stats(full, y, Z, codes, 4)
    for name in ("ZtX", "XtX", "Xty", "ZtZ", "Zty"):
        np.testing.assert_allclose(getattr(implicit, name), getattr(explicit, name), atol=1e-12)
    for rows_codes in (codes, rng.permutation(codes)):  # batched and sparse expansions
        Xa_implicit, ya_implicit = whiten_rows(X, y, Z, rows_codes, 4, 0.8)
        Xa_explicit, ya_explicit = whiten_rows(full, y, Z, rows_codes, 4, 0.8)
        np.testing.assert_allclose(Xa_implicit, Xa_explicit, atol=1e-12)
        np.testing.assert_allclose(ya_implicit, ya_explicit, atol=1e-12)


def _centring_case(seed=7, sorted_rows=True, shifts=(1.7e9, -3e6, 0.0, 5.0, 1e3), y_shift=1e7):
    rng = np.random.default_rng(seed)
    sizes = np.repeat([4, 6, 3], 8) if sorted_rows else rng.integers(1, 8, size=24)
    n = sizes.size
    codes = np.repeat(np.arange(n), sizes)
    if not sorted_rows:
        rng.shuffle(codes)
    N, p, q = codes.size, 5, 2
    X = rng.standard_normal((N, p)) + np.array(shifts)
    X[:, 2] = 1.0  # the intercept, not in first place
    Z = np.column_stack([np.ones(N), rng.standard_normal(N)])
    y = rng.standard_normal(N) + y_shift
    return X, y, Z, codes, n


@pytest.mark.parametrize("sorted_rows", [True, False])
@pytest.mark.parametrize("chunk_bytes", [1, 2**25])
@pytest.mark.parametrize("shifts", [(1.7e9, -3e6, 0.0, 5.0, 1e3), (3.0, -2.0, 0.0, 5.0, 1.0)],
                         ids=["centred-by-chunks", "corrected"])
def test_centred_statistics_equal_dense_centred_products(sorted_rows, chunk_bytes, shifts):
    """Automatic centring (an all-ones column anywhere) gives the products of the centred
    data, also when the rows are centred a few at a time (batched and sparse paths), and
    when means are small enough for the uncentred products to be corrected instead."""
    from lmmscope import centring
    from lmmscope.control import Performance
    chunks = Performance(chunk_bytes=chunk_bytes, min_chunk_rows=3)
    X, y, Z, codes, n = _centring_case(sorted_rows=sorted_rows, shifts=shifts)
    base = np.delete(X, 2, axis=1)
    mild = centring._cancellation_is_mild(base, base.mean(axis=0), chunks)
    assert mild == (shifts[0] < 10)
    stats = compute_cluster_stats(X, y, Z, codes, n, performance=chunks)
    assert stats.intercept == 2
    shift = X.mean(axis=0)
    shift[2] = 0
    np.testing.assert_allclose(stats.x_shift, shift, rtol=1e-15)
    Xc, yc = X - stats.x_shift, y - stats.y_shift  # exact (Sterbenz) for these magnitudes
    np.testing.assert_allclose(stats.XtX, Xc.T @ Xc, rtol=1e-12, atol=1e-9)
    np.testing.assert_allclose(stats.Xty, Xc.T @ yc, rtol=1e-12, atol=1e-9)
    assert stats.yty == pytest.approx(yc @ yc, rel=1e-13)
    ZtX = np.stack([Z[codes == i].T @ Xc[codes == i] for i in range(n)])
    np.testing.assert_allclose(stats.ZtX, ZtX, rtol=1e-12, atol=1e-9)
    Xa, ya, _S = dense_whitening(Xc, yc, Z, codes, 0.7)
    Xr, yr = whiten_rows(X, y, Z, codes, n, 0.7, stats=stats)
    np.testing.assert_allclose(Xr, Xa, atol=1e-9, rtol=0)
    np.testing.assert_allclose(yr, ya, atol=1e-9, rtol=0)


def test_original_coefficients_and_covariance_of_centred_statistics():
    """Least squares on the centred statistics, converted, equals least squares on the
    raw data; so does the covariance T V T'."""
    # moderate shifts: the raw least squares must be accurate enough to compare with
    X, y, Z, codes, n = _centring_case(sorted_rows=False, shifts=(3, -2, 0, 5, 1), y_shift=4)
    stats = compute_cluster_stats(X, y, Z, codes, n)
    c = np.linalg.solve(stats.XtX, stats.Xty)
    b = np.linalg.lstsq(X, y, rcond=None)[0]
    np.testing.assert_allclose(stats.original_coef(c), b, rtol=1e-9)
    np.testing.assert_allclose(stats.centred_coef(stats.original_coef(c)), c, atol=1e-12)
    np.testing.assert_allclose(stats.original_vcov(np.linalg.inv(stats.XtX)),
                               np.linalg.inv(X.T @ X), rtol=1e-7)
    sub = stats.subset([4, 2, 0])  # re-maps the intercept
    assert sub.intercept == 1
    c_sub = np.linalg.solve(sub.XtX, sub.Xty)
    b_sub = np.linalg.lstsq(X[:, [4, 2, 0]], y, rcond=None)[0]
    np.testing.assert_allclose(sub.original_coef(c_sub), b_sub, rtol=1e-9)
    np.testing.assert_allclose(stats.original_coef(c_sub, columns=[4, 2, 0]), b_sub, rtol=1e-9)
    with pytest.raises(ValueError, match="leave out the intercept"):
        stats.original_coef(c[:2], columns=[0, 1])
    assert compute_cluster_stats(X, y, Z, codes, n, center=False).y_shift == 0.0


def test_statistics_add_up_over_disjoint_rows_with_a_shared_shift():
    from lmmscope.intercept import InterceptPrepended
    X, y, Z, codes, n = _centring_case(sorted_rows=False)
    Xp = InterceptPrepended(np.delete(X, 2, axis=1))
    whole = compute_cluster_stats(Xp, y, Z, codes, n)
    assert whole.intercept == 0
    half = np.arange(codes.size) % 2 == 0
    shift = (whole.x_shift, whole.y_shift)
    parts = [compute_cluster_stats(InterceptPrepended(Xp.base[rows]), y[rows], Z[rows],
                                   codes[rows], n, center=shift) for rows in (half, ~half)]
    total = parts[0] + parts[1]
    for name in ("ZtZ", "ZtX", "Zty", "XtX", "Xty", "sizes"):
        np.testing.assert_allclose(getattr(total, name), getattr(whole, name), rtol=1e-10,
                                   atol=1e-8)
    assert total.yty == pytest.approx(whole.yty, rel=1e-12)
    with pytest.raises(ValueError, match="same clusters, columns and shifts"):
        parts[0] + compute_cluster_stats(Xp, y, Z, codes, n, center=False)


def test_mixed_type_group_labels_compare_as_strings():
    from lmmscope.cluster_blocks import encode_groups
    codes, labels = encode_groups(np.array([3, "a", "3", 10, "a"], dtype=object))
    assert list(labels) == ["10", "3", "a"]
    np.testing.assert_array_equal(codes, [1, 2, 1, 0, 2])


def test_plain_pages_buffer_gives_the_same_statistics():
    """Z'X in anonymous memory mapped without huge-page advice (every size here)
    equals the np.empty one, and survives pickling."""
    import pickle

    from lmmscope import dense_kernels
    from lmmscope.control import Performance
    from lmmscope.intercept import InterceptPrepended

    every_size = Performance(plain_pages_bytes=0)

    rng = np.random.default_rng(5)
    sizes = rng.integers(1, 9, size=30)
    codes = np.repeat(np.arange(30), sizes)
    N, p, q = sizes.sum(), 6, 2
    X, Z, y = rng.standard_normal((N, p)) + 3, rng.standard_normal((N, q)), rng.standard_normal(N)
    for order in (codes, rng.permutation(codes)):
        for X_in in (X, InterceptPrepended(np.asfortranarray(X))):
            reference = compute_cluster_stats(X_in, y, Z, order, 30)
            mapped = compute_cluster_stats(X_in, y, Z, order, 30, performance=every_size)
            assert mapped.ZtX.flags.c_contiguous and mapped.ZtX.flags.writeable
            np.testing.assert_array_equal(mapped.ZtX, reference.ZtX)
            np.testing.assert_array_equal(pickle.loads(pickle.dumps(mapped)).ZtX, reference.ZtX)
    assert dense_kernels.plain_pages_empty((0, 2, 3), every_size).shape == (0, 2, 3)
