"""Random-effects terms of a model with several bar terms: the analogue of lme4's ``reTrms``.

For terms i = 1..m with grouping factor f_i (n_i levels) and model matrix Z_i (p_i
columns), lme4 orders the terms by decreasing n_i and lays out

    Z = [Z_1 | ... | Z_m],   Z_i's column (l, j) = Z_i[:, j] * 1{f_i = level l}
    (levels outer, columns inner: q_i = n_i p_i columns, q = sum q_i),
    Lambda = blockdiag_i(I_{n_i} kron T_i),   T_i lower triangular p_i x p_i,
    theta = the lower triangles of T_1..T_m, column by column (lme4's ``Lind``),
    lower = 0 for diagonal entries, -inf elsewhere.

Z is kept sparse (scipy); the fit uses only Z'Z (q x q sparse), Z'X and Z'y, never an
N x N matrix.  :func:`build_reterms` makes the terms from a table and a parsed formula.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import pandas as pd
import scipy.sparse as sp

from .cluster_blocks import encode_groups
from .exceptions import ColumnError, InputError
from .formula import build_design
from .formula.bars import BarFormula, BarTerm
from .prediction import _to_str


@dataclass
class ReTerm:
    """One bar term: its grouping factor (levels, code of each row) and model matrix."""

    group_name: str
    group_columns: tuple
    levels: np.ndarray
    codes: np.ndarray
    cnms: list
    Z: np.ndarray  # N x p_i, the term's model matrix
    design: object  # the one-term Design (its encodings rebuild Z_i on new rows)

    @property
    def n_levels(self) -> int:
        return int(self.levels.size)

    @property
    def p(self) -> int:
        return self.Z.shape[1]


class ReTerms:
    """Zt, Lambdat's pattern, Lind, theta, lower, flist and cnms of several terms."""

    def __init__(self, terms: list):
        # lme4 (mkReTrms): terms by decreasing number of levels, ties in formula order
        order = sorted(range(len(terms)), key=lambda i: -terms[i].n_levels)
        self.terms = [terms[i] for i in order]
        sizes = [t.n_levels * t.p for t in self.terms]
        self.Gp = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        self.q = int(self.Gp[-1])
        self.Zt = self._zt()
        self._lambdat_pattern()

    # -- lme4's slots ---------------------------------------------------------
    @property
    def flist(self) -> dict:
        """Grouping factor of each term: name -> levels."""
        return {t.group_name: t.levels for t in self.terms}

    @property
    def cnms(self) -> list:
        return [(t.group_name, list(t.cnms)) for t in self.terms]

    @property
    def nobs(self) -> int:
        return self.terms[0].codes.size

    def _zt(self) -> sp.csc_matrix:
        return stacked_z([(t.codes, t.Z) for t in self.terms], self.Gp).T.tocsc()

    def _lambdat_pattern(self):
        """Lambdat's nonzero pattern in CSC order and the theta index of each entry (Lind)."""
        rows, cols, lind, lower, theta0 = [], [], [], [], []
        start = 0
        for t, offset in zip(self.terms, self.Gp):
            p = t.p
            r, c = np.tril_indices(p)  # T's lower triangle ...
            order = np.lexsort((r, c))  # ... column by column (lme4's theta order)
            r, c = r[order], c[order]
            k = np.arange(r.size) + start
            base = offset + np.arange(t.n_levels)[:, None] * p
            # Lambdat = Lambda': T[r, c] sits at (c, r) of each level's block
            rows.append((base + c).ravel())
            cols.append((base + r).ravel())
            lind.append(np.broadcast_to(k, (t.n_levels, k.size)).ravel())
            lower.append(np.where(r == c, 0.0, -np.inf))
            theta0.append((r == c).astype(float))
            start += r.size
        marker = np.concatenate(lind).astype(float) + 1.0
        pattern = sp.csc_matrix((marker, (np.concatenate(rows), np.concatenate(cols))),
                                shape=(self.q, self.q))
        pattern.sort_indices()
        self.Lind = pattern.data.astype(np.int64) - 1
        self._pattern = pattern
        self.lower = np.concatenate(lower)
        self.theta0 = np.concatenate(theta0)
        self.theta_term = np.repeat(np.arange(len(self.terms)),
                                    [t.p * (t.p + 1) // 2 for t in self.terms])

    @property
    def lambdat_derivatives(self) -> list:
        """dLambdat / dtheta_k: ones where Lind == k (Lambdat is linear in theta)."""
        if not hasattr(self, "_derivatives"):
            self._derivatives = []
            for k in range(self.theta0.size):
                d = self._pattern.copy()
                d.data = (self.Lind == k).astype(float)
                d.eliminate_zeros()
                self._derivatives.append(d)
        return self._derivatives

    def lambdat(self, theta) -> sp.csc_matrix:
        out = self._pattern.copy()
        out.data = np.asarray(theta, dtype=float)[self.Lind]
        return out

    def term_factor(self, theta, i) -> np.ndarray:
        """T_i, the lower-triangular relative covariance factor of term i."""
        t = self.terms[i]
        T = np.zeros((t.p, t.p))
        r, c = np.tril_indices(t.p)
        order = np.lexsort((r, c))
        T[r[order], c[order]] = np.asarray(theta)[self.theta_term == i]
        return T

    def split(self, b) -> list:
        """A q-vector (b or u) as one n_i x p_i array per term."""
        return [np.asarray(b[lo:hi]).reshape(t.n_levels, t.p)
                for t, lo, hi in zip(self.terms, self.Gp[:-1], self.Gp[1:])]


def stacked_z(blocks, Gp) -> sp.csr_matrix:
    """Z = [Z_1 | ... | Z_m] (rows x q, sparse) from each term's (level codes, model matrix)
    in the terms' order, term i's columns from Gp[i]: column (l, j) = Z_i[:, j] 1{code = l}."""
    n_rows = blocks[0][0].size if blocks else 0
    rows, cols, vals = [], [], []
    for (codes, Zi), offset in zip(blocks, Gp):
        p = Zi.shape[1]
        for j in range(p):
            rows.append(np.arange(n_rows))
            cols.append(offset + codes * p + j)
            vals.append(Zi[:, j])
    return sp.csr_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))),
                         shape=(n_rows, int(Gp[-1])))


def _group_values(frame: pd.DataFrame, columns: tuple) -> pd.Series:
    """The grouping factor's labels: the column itself, or lme4's a:b interaction labels
    (missing where any part is missing).  As R pastes each factor's levels, every part
    is coded by its values' text, not its storage: 1 and 1.0 are "1" (a column stored as
    int64 in one file and float64 in another, or in the new data, is one factor)."""
    if len(columns) == 1:
        return frame[columns[0]]
    parts = [frame[c] for c in columns]
    missing = np.logical_or.reduce([p.isna().to_numpy() for p in parts])
    text = pd.Series(_level_text(parts[0]), index=frame.index, dtype=object)
    for p in parts[1:]:
        text = text + ":" + _level_text(p)
    return text.mask(missing)


def _level_text(column: pd.Series) -> np.ndarray:
    """Each value's text as R's as.character of a factor level: an integral number
    without a decimal point, TRUE / FALSE (each distinct value formatted once)."""
    codes, distinct = pd.factorize(column)
    text = [("TRUE" if v else "FALSE") if isinstance(v, (bool, np.bool_)) else _to_str(v)
            for v in distinct]
    return np.asarray(text + [""], dtype=object)[codes]  # code -1 (missing): masked later


def grouping_columns(bars: BarFormula) -> list:
    """The columns of every grouping factor (``a``, ``b`` and ``a:b`` of ``a/b``): what '.'
    in the fixed part leaves out."""
    return sorted({c for t in bars.terms for c in ((t.group_name,) + t.group)})


def _term_formula(response: str, fixed: str, term: BarTerm, column: str) -> str:
    return f"{response} ~ {fixed} + ({term.random} | `{column}`)"


def build_reterms(bars: BarFormula, data, na_action: str = "omit"):
    """(fixed Design, ReTerms, rows kept) for a several-term formula on a table.

    Each term is materialised by the one-term formula machinery (so random-effect
    columns may be factors, calls or interactions exactly as in one term); the rows
    kept are those complete in every term (lme4's na.omit over the whole model frame).
    """
    frame = data if isinstance(data, pd.DataFrame) else _as_pandas(data)
    for term in bars.terms:
        for column in term.group:
            if column not in frame.columns:
                raise ColumnError(f"unknown column(s) in formula: {column} (grouping factor)")
    frame = frame.reset_index(drop=True)
    extra = {}
    for term in bars.terms:
        if len(term.group) > 1 and term.group_name not in frame.columns:
            extra[term.group_name] = _group_values(frame, term.group)
    if extra:
        frame = frame.assign(**extra)
    dot_excluded = grouping_columns(bars)

    def build(rows):
        part = frame if rows is None else frame.iloc[rows]
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            first = bars.terms[0]
            # '.' in the fixed part: every column but the response and the grouping factors
            # (which a formula may still name: (1 | Subject) + (1 | Days) with Days fixed)
            fixed = build_design(_term_formula(bars.response, bars.fixed, first, first.group_name),
                                 part, na_action=na_action, dot_excluded=dot_excluded)
            designs = [build_design(_term_formula(bars.response, "1", t, t.group_name), part,
                                    na_action=na_action) for t in bars.terms]
        return fixed, designs, caught

    fixed, designs, caught = build(None)
    kept = [np.asarray(d.row_index) for d in [fixed] + designs]
    common = kept[0]
    for k in kept[1:]:
        if not np.array_equal(common, k):  # sorted row numbers; equal without missing values
            common = np.intersect1d(common, k)
    if any(k.size != common.size for k in kept):
        fixed, designs, caught = build(common)
    n_dropped = len(frame) - common.size
    for w in caught:
        if "dropped" in str(w.message) and "missing" in str(w.message):
            continue
        warnings.warn(w.message, stacklevel=3)
    if n_dropped:
        if na_action == "fail":
            raise InputError(f"{n_dropped} rows have missing values in the model's columns "
                             "(na_action='fail')")
        warnings.warn(f"lmmscope: dropped {n_dropped} rows with missing values (na.omit)",
                      stacklevel=3)
    terms = []
    for term, design in zip(bars.terms, designs):
        codes, levels = encode_groups(design.groups)
        terms.append(ReTerm(term.group_name, term.group, levels, codes, list(design.random_names),
                            np.asarray(design.Z, dtype=float), design.without_data()))
    fixed.n_dropped = n_dropped
    return fixed, ReTerms(terms), common


def _as_pandas(data) -> pd.DataFrame:
    from .frames import as_source
    source = as_source(data)
    return source.pandas(list(source.columns))
