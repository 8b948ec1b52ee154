"""One BLAS thread for work made of many small calls.

numpy and scipy each bundle an OpenBLAS with its own pool of threads.  For small
calls (an evaluation of the profiled deviance, a gradient step of the subset search)
waking and synchronising those pools costs more than the work they share, so those
loops run with one thread; large products (X'X, the whitened Gram) keep every thread.
"""

from __future__ import annotations

from contextlib import nullcontext

_controller = None


def one_blas_thread(enabled: bool = True):
    """Context manager limiting every loaded BLAS to one thread (no-op if not enabled)."""
    global _controller
    if not enabled:
        return nullcontext()
    if _controller is None:
        from threadpoolctl import ThreadpoolController

        _controller = ThreadpoolController()
    return _controller.limit(limits=1, user_api="blas")
