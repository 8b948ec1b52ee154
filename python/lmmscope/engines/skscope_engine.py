"""The ``"skscope"`` engine: skscope's ``ScopeSolver`` (splicing, Zhu et al. 2020) on the
whitened penalised problem, each k warm-started from the previous k's support.

The objective, its gradient and the closed-form least-squares fit on a support are
numpy callbacks on the loss (no JAX autodiff), so it runs on every form of the loss
(Gram, Gram columns on demand, rows).  skscope imports JAX: both load when this
engine first runs (a default fit loads neither), with JAX's 64-bit mode enabled (its
default is float32).  skscope's C++ core aborts the process when a callback raises, so
callbacks run under a guard and the exception is raised once skscope returns; a
failure of skscope or JAX is raised as :class:`lmmscope.exceptions.EngineError`.
"""

from __future__ import annotations

import numpy as np

from ..exceptions import EngineError
from ..loss import QuadraticLoss

# skscope's default number of splicing iterations per k
MAX_ITER = 20


def _scope_solver():
    """skscope's ScopeSolver, with JAX in 64-bit mode; EngineError if they cannot load."""
    try:
        import jax

        jax.config.update("jax_enable_x64", True)
        from skscope import ScopeSolver
    except Exception as exc:  # ImportError, or JAX failing to start its backend
        raise EngineError(f"Control(engine='skscope') needs skscope and JAX, which failed to "
                          f"load ({type(exc).__name__}: {exc}); install them (pip install "
                          f"skscope==0.1.8 jax jaxlib) or use the default engine='splicing'"
                          ) from exc
    return ScopeSolver


class SkscopeEngine:
    """skscope's splicing for each k of the path (``search_effort`` and ``limits`` are
    not used: skscope has its own)."""

    def path(self, loss: QuadraticLoss, ks, search_effort: int = 0, limits=None):
        solver_class = _scope_solver()
        coefs, warm = [], None
        for k in (int(k) for k in ks):
            if k == 0:
                b = np.zeros(loss.p)
            elif k == loss.p:
                b = loss.solve_on(np.arange(loss.p))
            else:
                b = _solve(solver_class, loss, k, warm)
            support = np.flatnonzero(b)
            warm = support if support.size else None
            coefs.append(b)
        return coefs


class _CallbackGuard:
    """Runs skscope's callbacks: the first exception is kept, later calls answer
    harmless finite values so that skscope ends its iterations, and :meth:`reraise`
    raises it once skscope returns (an exception inside the C++ core aborts the
    process, Ctrl-C included)."""

    def __init__(self):
        self.error = None

    def run(self, fallback, function, *args):
        if self.error is None:
            try:
                return function(*args)
            except BaseException as exc:  # noqa: B036 - Ctrl-C must not abort the process
                self.error = exc
        return fallback()

    def reraise(self):
        if self.error is not None:
            raise self.error


def _solve(solver_class, loss: QuadraticLoss, k: int, warm) -> np.ndarray:
    """The least-squares coefficients on the support skscope finds at size k."""
    guard = _CallbackGuard()
    empty_value = 0.5 * loss.yty

    def value(b):
        return 0.5 * loss.rss(b)

    def gradient(b):
        s = np.flatnonzero(b)
        return loss.gram_columns(s) @ b[s] - loss.xty

    def least_squares(b_support):
        b = loss.solve_on(np.asarray(b_support, dtype=np.int64))
        v = value(b)
        if not (np.isfinite(v) and np.all(np.isfinite(b))):
            raise FloatingPointError("the selection's loss is not finite on a support "
                                     "(an overflow in the whitened cross-products); "
                                     "rescale y or X")
        return v, b

    def numeric_solver(objective, value_and_grad, init_params, support, data):
        return guard.run(lambda: (empty_value, np.zeros(loss.p)), least_squares, support)

    solver = solver_class(loss.p, sparsity=k, numeric_solver=numeric_solver, max_iter=MAX_ITER)
    try:
        # one-argument callables: skscope then passes no data argument
        params = solver.solve(lambda b: guard.run(lambda: empty_value, value, b),
                              gradient=lambda b: guard.run(lambda: np.zeros(loss.p), gradient, b),
                              init_support_set=warm)
    except Exception as exc:
        guard.reraise()  # the callback's own exception, when there was one
        raise EngineError(f"Control(engine='skscope'): skscope's ScopeSolver failed at "
                          f"k = {k} ({type(exc).__name__}: {exc})") from exc
    guard.reraise()
    # skscope returns the fit on its final support: the exact least-squares one on it
    return loss.solve_on(np.flatnonzero(np.asarray(params)))
