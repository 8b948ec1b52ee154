"""The seed example's pipeline (dense N x N eigendecomposition + ScopeSolver with a JAX
loss) against lmm_scope at the same fixed a and k = 3, N = 2,000, p = 1,000, q = 4.
Prints both times and their ratio, measured in this run."""

import time
import warnings

import jax
import jax.numpy as jnp
import numpy as np
from skscope import ScopeSolver

import lmmscope
from lmmscope.simulate import make_data

jax.config.update("jax_enable_x64", True)
warnings.filterwarnings("ignore")


def seed_pipeline(X, Z, y, m, a, k):
    """As in seed-example.md (N x N Sigma_a, eigendecomposition, JAX objective)."""
    N = X.shape[0]
    n = N // m
    Sigma_a = np.zeros((N, N))
    for i in range(n):
        Zi = Z[i * m:(i + 1) * m, :]
        Sigma_a[i * m:(i + 1) * m, i * m:(i + 1) * m] = a * Zi @ Zi.T + np.eye(m)
    w, v = np.linalg.eig(Sigma_a)
    w, v = np.real(w), np.real(v)
    L = v @ np.diag(w ** -0.5) @ v.T
    X_a, y_a = L @ X, L @ y
    trace = np.trace(v @ np.diag(w ** -1) @ v.T)

    def objective(params):
        return jnp.sum((y_a - X_a @ params) ** 2) / trace

    return ScopeSolver(X.shape[1], k).solve(objective, jit=True)


def main():
    m, n, p, q, a = 10, 200, 1000, 4, 1.0
    X, Z, Zs, y, beta, _ = make_data(m=m, n=n, p=p, q=q, seed=0)
    groups = np.repeat(np.arange(n), m)
    t0 = time.perf_counter()
    b_seed = seed_pipeline(X, Z, y, m, a, 3)
    t_seed = time.perf_counter() - t0
    t0 = time.perf_counter()
    est = lmmscope.LmmScope(k=3, a=a, fit_intercept=False).fit(X, y, Z=Zs, groups=groups)
    t_ours = time.perf_counter() - t0
    print(f"N={m * n}, p={p}, q={q}, a={a}, k=3")
    print(f"seed pipeline: {t_seed:8.2f} s  support {np.flatnonzero(b_seed).tolist()}")
    print(f"lmmscope:      {t_ours:8.2f} s  support {est.support_.tolist()}")
    print(f"max |coef difference|: {np.max(np.abs(b_seed - est.coef_)):.2e}")
    print(f"speed-up (seed / lmmscope, full fit incl. REML refit): {t_seed / t_ours:.1f}x")
    t0 = time.perf_counter()
    lmmscope.LmmScope(k=3, a=a, fit_intercept=False, method="ML").fit(X, y, Z=Zs, groups=groups)
    print(f"(second run, warm caches: {time.perf_counter() - t0:.2f} s)")


if __name__ == "__main__":
    main()
