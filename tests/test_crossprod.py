"""The whitened statistics from per-cluster cross-products equal a dense computation."""

import numpy as np

from lmmscope.crossprod import compute_cluster_stats, whiten_rows, whiten_stats


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
        assert abs(w.logdet - np.linalg.slogdet(S)[1]) < 1e-10
        Xr, yr = whiten_rows(X, y, Z, codes, 25, a)
        np.testing.assert_allclose(Xr, Xa, atol=1e-10, rtol=0)
        np.testing.assert_allclose(yr, ya, atol=1e-10, rtol=0)
