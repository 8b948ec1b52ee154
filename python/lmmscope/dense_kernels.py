"""In-place BLAS kernels and allocation for large dense arrays (p x p Grams, Z'X).

A p x p Gram or a Z'X the size of X / mean cluster size is the largest array a fit
holds, so its updates run in place by one BLAS call (no temporary of its size), and
it is allocated in memory that faults in quickly.
"""

from __future__ import annotations

import mmap

import numpy as np
from scipy.linalg.blas import dgemm

from .control import DEFAULT_PERFORMANCE, Performance


def plain_pages_empty(shape, performance: Performance = DEFAULT_PERFORMANCE) -> np.ndarray:
    """np.empty(shape) (float) for a large result filled once, in anonymous memory
    mapped without numpy's MADV_HUGEPAGE advice.

    Where transparent huge pages are on request only (THP "madvise", common in VMs),
    numpy's advice makes the kernel compact memory for 2 MB pages as the array is
    first written: the per-cluster Z'X (10,000 clusters, q = 4, p = 1,000: 320 MB)
    took 0.3-0.8 s to fault in against 0.1 s with ordinary 4 KB pages, ten times its
    batched product.  Small arrays (under ``performance.plain_pages_bytes``) come from np.empty.
    The mapping is released with the last array that views it.
    """
    shape = tuple(int(d) for d in np.atleast_1d(shape))
    nbytes = 8 * int(np.prod(shape, dtype=np.int64))
    if nbytes < performance.plain_pages_bytes:
        return np.empty(shape)
    try:
        buffer = mmap.mmap(-1, nbytes)
    except (OSError, ValueError, OverflowError):
        return np.empty(shape)
    return np.frombuffer(buffer, dtype=np.float64).reshape(shape)


def symmetrise(S: np.ndarray, block: int = 512) -> np.ndarray:
    """(S + S') / 2 in place, a block of columns at a time (no p x p temporary)."""
    p = S.shape[0]
    for first in range(0, p, block):
        stop = min(first + block, p)
        mean = (S[first:stop, first:] + S[first:, first:stop].T) / 2
        S[first:stop, first:] = mean
        S[first:, first:stop] = mean.T
    return S


def subtract_product(C: np.ndarray, A: np.ndarray, B: np.ndarray, alpha: float = 1.0
                     ) -> np.ndarray:
    """C <- C - alpha A @ B in place by one BLAS call (C C-contiguous): numpy's
    element-wise loops run a row at a time on a broadcast or strided operand, and
    A @ B would be a temporary as large as C.  A and B are read where they lie when
    C- or Fortran-ordered (no copy of a large factor).  Returns C."""
    if C.size == 0:
        return C
    if not C.flags.c_contiguous or A.shape[1] == 0:
        C -= alpha * (A @ B)
        return C
    # C' = C' - alpha B'A' on the Fortran-ordered view: dgemm writes into C's memory
    first, trans_first = _fortran_operand(B.T)
    second, trans_second = _fortran_operand(A.T)
    out = dgemm(-alpha, first, second, beta=1.0, c=C.T, trans_a=trans_first,
                trans_b=trans_second, overwrite_c=1)
    if not np.shares_memory(out, C):
        C[...] = out.T
    return C


def _fortran_operand(M):
    """(array, transpose flag) giving M to BLAS without a copy where M or M' is
    Fortran-ordered."""
    if M.flags.f_contiguous:
        return M, 0
    if M.T.flags.f_contiguous:
        return M.T, 1
    return np.asfortranarray(M), 0


def fill_upper_from_lower(S: np.ndarray, block: int = 512) -> None:
    """Symmetrise in place, a block of columns at a time (no p x p temporary)."""
    p = S.shape[0]
    for first in range(0, p, block):
        stop = min(first + block, p)
        S[first:stop, stop:] = S[stop:, first:stop].T
        tile = S[first:stop, first:stop]
        lower = np.tril(tile)
        tile[...] = lower + np.tril(tile, -1).T
