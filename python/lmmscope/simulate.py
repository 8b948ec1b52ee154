"""Data generators: the seed example's ``make_data`` and an unbalanced variant.

``make_data`` is kept exactly as in the seed example for comparability.  Note that the
joint covariance it asks numpy for, [[I_p, S_xz], [S_xz', I_q]], is not positive
semi-definite for these settings; numpy warns and samples anyway (we silence that one
RuntimeWarning), so X and Z are correlated in the way the seed's numbers reflect.
"""

from __future__ import annotations


import numpy as np
import pandas as pd


def _design_covariance(p, q, rho):
    def func(i, j):
        m = np.maximum(i, j)
        return np.where(m <= q - 1, rho ** (abs(i - j)), 0)

    Sigma_xz = np.fromfunction(func, (p, q))
    return np.block([[np.eye(p), Sigma_xz], [Sigma_xz.T, np.eye(q)]])


def normal_rows(rng, cov, n):
    """n rows with covariance ``cov`` (symmetric positive semi-definite, singular allowed),
    drawn as standard normals times its symmetric square root. That root is unique, unlike
    the factors numpy's ``multivariate_normal`` takes from an SVD or eigh (their vectors'
    signs depend on the LAPACK build), so the draws are the same on every machine."""
    return rng.standard_normal((n, cov.shape[0])) @ _symmetric_root(cov)


def _symmetric_root(cov):
    # |w|: the seed's design covariance is indefinite for some q and rho; numpy's SVD-based
    # draw then has covariance V|L|V', and so does this one
    w, V = np.linalg.eigh(cov)
    return (V * np.sqrt(np.abs(w))) @ V.T


def make_data(m=8, n=30, p=300, q=8, sigma=0.25, rho=0.2, seed=0):
    """The seed example's generator: n clusters of m rows, beta_{1,5,10} = (1, 0.5, 0.3).

    Returns X (N x p), Z (N x nq block-diagonal), Z_stack (N x q), y, beta, gamma.
    As in the seed, the noise standard deviation is 0.25 whatever ``sigma`` says.
    """
    N = m * n
    rng = np.random.default_rng(seed)
    X_Z = normal_rows(rng, _design_covariance(p, q, rho), N)
    X, Z_stack = X_Z[:, :p], X_Z[:, p:]
    Z = np.zeros((N, n * q))
    for i in range(n):
        Z[(i * m):((i + 1) * m), (i * q):((i + 1) * q)] = Z_stack[(i * m):((i + 1) * m), :]
    beta = np.zeros(p)
    beta[[1, 5, 10]] = [1, 0.5, 0.3]
    Psi = np.fromfunction(lambda i, j: 0.56 ** (abs(i - j)), (q, q))
    gamma = np.ravel(normal_rows(rng, Psi, n))
    noise = rng.normal(size=N) * 0.25
    y = X @ beta + Z @ gamma + noise
    return X, Z, Z_stack, y, beta, gamma


def make_unbalanced(n=200, p=300, q=4, min_size=2, max_size=20, rho=0.2, noise_sd=0.25,
                    seed=0, shuffle=True):
    """Like :func:`make_data` but with cluster sizes drawn uniformly in [min_size, max_size]
    and, by default, rows shuffled so clusters are not contiguous.

    Returns X (N x p), Z_stack (N x q), y, groups (N,), beta.
    """
    rng = np.random.default_rng(seed)
    sizes = rng.integers(min_size, max_size + 1, size=n)
    N = int(sizes.sum())
    X_Z = normal_rows(rng, _design_covariance(p, q, rho), N)
    X, Zs = X_Z[:, :p], X_Z[:, p:]
    groups = np.repeat(np.arange(n), sizes)
    beta = np.zeros(p)
    beta[[1, 5, 10]] = [1, 0.5, 0.3]
    Psi = np.fromfunction(lambda i, j: 0.56 ** (abs(i - j)), (q, q))
    gamma = normal_rows(rng, Psi, n)
    y = X @ beta + np.einsum("ij,ij->i", Zs, gamma[groups]) + rng.normal(size=N) * noise_sd
    if shuffle:
        perm = rng.permutation(N)
        X, Zs, y, groups = X[perm], Zs[perm], y[perm], groups[perm]
    return X, Zs, y, groups, beta


def as_frame(X, Z_stack, y, groups):
    """A DataFrame with columns y, x0..x{p-1}, z0..z{q-1}, cluster."""
    df = pd.DataFrame(X, columns=[f"x{j}" for j in range(X.shape[1])])
    for j in range(Z_stack.shape[1]):
        df[f"z{j}"] = Z_stack[:, j]
    df.insert(0, "y", y)
    df["cluster"] = groups
    return df


def seed_frame(m=8, n=15, p=50, q=4, seed=0):
    """The seed example's data (defaults as in seed-example.md) as a DataFrame."""
    X, _Z, Zs, y, beta, _gamma = make_data(m=m, n=n, p=p, q=q, seed=seed)
    return as_frame(X, Zs, y, np.repeat(np.arange(n), m)), beta


def seed_formula(p=50, q=4, syntax="design", intercept=False):
    """The formula for :func:`seed_frame`: every x as candidate, z's as random slopes.

    Like the seed's model there is no fixed intercept unless ``intercept=True``.
    """
    fixed = ("" if intercept else "0 + ") + " + ".join(f"x{j}" for j in range(p))
    rand = " + ".join(f"z{j}" for j in range(q))
    if syntax == "design":
        return f"y ~ {fixed} | (0 + {rand} | cluster)"
    return f"y ~ {fixed} + (0 + {rand} | cluster)"


def make_correlated(n=60, m=10, p=2000, n_effects=5, rho=0.8, effect_range=(0.25, 0.5),
                    psi=4.0, noise_sd=1.0, spacing=None, seed=0):
    """A hard selection design: AR(rho)-correlated columns of X (corr(x_j, x_l) =
    rho^|j - l|), ``n_effects`` weak effects of random sign and size in
    ``effect_range`` at random columns (or, with ``spacing``, every spacing-th column
    from a random start: true columns correlated rho^spacing), a random intercept and slope (Psi = psi I) per
    cluster, n clusters of m rows.  Drawn with standard normals only (no LAPACK).

    Returns X (N x p), Z (N x 2: intercept, slope), y, groups (N,), beta.
    """
    rng = np.random.default_rng(seed)
    N = n * m
    X = np.empty((N, p))
    X[:, 0] = rng.standard_normal(N)
    innovation = np.sqrt(1 - rho ** 2)
    for j in range(1, p):
        X[:, j] = rho * X[:, j - 1] + innovation * rng.standard_normal(N)
    beta = np.zeros(p)
    if spacing is None:
        where = rng.choice(p, size=n_effects, replace=False)
    else:
        where = rng.integers(0, p - spacing * n_effects) + spacing * np.arange(n_effects)
    beta[where] = rng.uniform(*effect_range, size=n_effects) * rng.choice([-1.0, 1.0], n_effects)
    groups = np.repeat(np.arange(n), m)
    Z = np.column_stack([np.ones(N), rng.standard_normal(N)])
    gamma = np.sqrt(psi) * rng.standard_normal((n, 2))
    y = X @ beta + np.einsum("ij,ij->i", Z, gamma[groups]) + noise_sd * rng.standard_normal(N)
    return X, Z, y, groups, beta
