"""One conformance check run on every data backend (as scikit-learn's check_estimator
runs on every estimator): the same small data through each backend of
:class:`lmmscope.backend.DataBackend` give the same whitened problems, fold problems,
subset statistics, refits and inference statistics as the in-memory Gram backend.

The backends: in memory on the whitened Gram (formed, or read by columns on demand)
and on the whitened rows; parquet files streamed in chunks; a Dask DataFrame (blocks
kept on the workers); the several-terms backends, in memory and on parquet files, given
the one term (1 + z1 | g).
"""

import warnings

import numpy as np
import pandas as pd
import pytest

from lmmscope.backend import DataBackend, FoldProblem
from lmmscope.control import Control
from lmmscope.cluster_blocks import encode_groups
from lmmscope.exceptions import InputError
from lmmscope.formula import build_design
from lmmscope.formula.bars import parse_bar_terms
from lmmscope.inference import table_from_cache
from lmmscope.layouts import GramLayout, RowLayout
from lmmscope.multiterm_scope import SeveralTermsData, SeveralTermsRefitter
from lmmscope.refit import Refitter
from lmmscope.reterms import build_reterms
from lmmscope.selection import selection_path
from lmmscope.sources import DaskSource, ParquetSource
from lmmscope.sources.fit import prepare
from lmmscope.sources.several_terms import StreamedSeveralTermsData, read_model
from lmmscope.tuning import Data, make_folds

FORMULA = "y ~ x0 + x1 + x2 + x3 + x4 + x5 + (1 + z1 | g)"
N_FOLDS = 4
A_VALUES = (0.0, 0.7)
UNPENALISED = [0]  # the intercept
KS = [0, 1, 2, 3]
# Measured agreement with the in-memory Gram backend (largest difference relative to
# the largest entry, over every quantity below): 4e-14 (fold problems, parquet), so
# 1e-12.  Refits: 3e-14 on one factor; with several terms (another optimiser, lme4's
# sparse PLS, stopping at its own tolerance) 2e-9 in the deviance, 2.5e-8 in theta,
# so 5e-7 there.
RTOL = 1e-12
SEVERAL_TERMS_REFIT_RTOL = 5e-7


def _frame(seed=3, n_clusters=36, p=6):
    """Unbalanced clusters, a random slope, rows shuffled so clusters straddle chunks."""
    rng = np.random.default_rng(seed)
    sizes = rng.integers(4, 10, n_clusters)
    g = np.repeat(np.arange(n_clusters), sizes)
    N = g.size
    df = pd.DataFrame(rng.standard_normal((N, p)) + 2.0, columns=[f"x{j}" for j in range(p)])
    df["z1"] = rng.standard_normal(N)
    u = rng.standard_normal((n_clusters, 2))
    df["y"] = (1 + 2 * df.x0 - 1.5 * df.x3 + u[g, 0] + 0.7 * u[g, 1] * df.z1
               + rng.standard_normal(N) * 0.5)
    df["g"] = np.array([f"c{i:02d}" for i in range(n_clusters)])[g]
    return df.sample(frac=1, random_state=seed).reset_index(drop=True)


def _quiet(progress=None):
    return lambda message: None


@pytest.fixture(scope="module")
def frame():
    return _frame()


@pytest.fixture(scope="module")
def arrays(frame):
    design = build_design(FORMULA, frame)
    X = np.asarray(design.X, dtype=float)
    codes, labels = encode_groups(design.groups)
    return design, X, np.asarray(design.y, float), np.asarray(design.Z, float), codes, labels


@pytest.fixture(scope="module")
def folds(arrays):
    return make_folds(arrays[5].size, N_FOLDS, 0)


def _streamed(source, folds, arrays, control):
    spec, backend, _ = prepare(source, FORMULA, "omit", _quiet(), lambda spec: folds, control)
    design, *_rest, labels = arrays
    # the two fronts must read the same model: same columns, same cluster codes
    assert spec.names == list(design.fixed_names)
    assert list(spec.group_labels) == list(labels)
    return backend


def _all_backends(frame, arrays, folds, directory, control=None):
    design, X, y, Z, codes, labels = arrays
    import dask.dataframe as dd

    bars = parse_bar_terms(FORMULA)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fixed, reterms, _rows = build_reterms(bars, frame)
    assert list(fixed.fixed_names) == list(design.fixed_names)
    n = labels.size
    several_source = ParquetSource(str(directory), chunk_rows=25)
    return {
        "memory, Gram": Data(X, y, Z, codes, n, layout=GramLayout(), control=control),
        "memory, Gram by columns": Data(X, y, Z, codes, n, control=control,
                                        layout=GramLayout(columns_on_demand=True)),
        "memory, rows": Data(X, y, Z, codes, n, layout=RowLayout(), control=control),
        "parquet": _streamed(ParquetSource(str(directory), chunk_rows=25), folds, arrays,
                             control),
        "dask": _streamed(DaskSource(dd.from_pandas(frame, npartitions=3)), folds, arrays,
                          control),
        "several terms": SeveralTermsData(np.asarray(fixed.X, float), np.asarray(fixed.y, float),
                                          reterms, intercept=0, control=control),
        "several terms, parquet": StreamedSeveralTermsData.from_model(
            read_model(several_source, FORMULA, "omit", _quiet()), several_source, control),
    }


@pytest.fixture(scope="module")
def parquet_directory(frame, tmp_path_factory):
    directory = tmp_path_factory.mktemp("contract")
    bounds = np.linspace(0, len(frame), 4).astype(int)
    for i in range(3):
        frame.iloc[bounds[i]:bounds[i + 1]].to_parquet(directory / f"part{i}.parquet",
                                                       row_group_size=40)
    return directory


@pytest.fixture(scope="module")
def backends(frame, arrays, folds, parquet_directory):
    return _all_backends(frame, arrays, folds, parquet_directory)


BACKENDS = ["memory, Gram by columns", "memory, rows", "parquet", "dask", "several terms",
            "several terms, parquet"]
ONE_FACTOR = [b for b in BACKENDS if not b.startswith("several terms")]
REFERENCE = "memory, Gram"


def assert_close(got, want, rtol=RTOL, what=""):
    got, want = np.asarray(got, float), np.asarray(want, float)
    assert got.shape == want.shape, what
    np.testing.assert_allclose(got, want, rtol=rtol, atol=rtol * max(np.abs(want).max(), 1.0),
                               err_msg=what)


def assert_same_problem(got, want):
    """Two reduced problems: the same candidates, scales and quadratic (on unit-norm
    columns), and so the same best subsets on a path."""
    assert np.array_equal(got.penalised, want.penalised)
    assert_close(got.scale, want.scale, what="scale")
    everything = np.arange(want.penalised.size)
    assert_close(got.loss.gram_block(everything), want.loss.gram_block(everything), what="Gram")
    assert_close(got.loss.xty, want.loss.xty, what="X'y")
    assert_close(got.loss.yty, want.loss.yty, what="y'y")
    for g, w in zip(selection_path(got, KS), selection_path(want, KS)):
        assert np.array_equal(g.support, w.support)
        # the unpenalised intercept's coefficient is that of the backend's centring
        # (several terms centre y only); the results convert it to the data's
        assert_close(g.coef[want.penalised], w.coef[want.penalised], what=f"coef at k={w.k}")
        assert_close(g.rss, w.rss, what=f"rss at k={w.k}")


@pytest.mark.parametrize("name", [REFERENCE] + BACKENDS)
def test_backend_declares_the_contract(backends, name):
    backend, reference = backends[name], backends[REFERENCE]
    assert isinstance(backend, DataBackend)
    assert (backend.N, backend.p, backend.n_groups) == (reference.N, reference.p,
                                                        reference.n_groups)
    # the unit of Z's columns (several terms: of every column of the whole Z, level by level)
    q = reference.z_scale.size
    several = name.startswith("several terms")
    scale = backend.z_scale.reshape(-1, q) if several else backend.z_scale[None]
    assert_close(scale, np.broadcast_to(reference.z_scale, scale.shape))


@pytest.mark.parametrize("a", A_VALUES)
@pytest.mark.parametrize("name", BACKENDS)
def test_whitened_problem(backends, name, a):
    got, trace = backends[name].reduced(a, UNPENALISED)
    want, want_trace = backends[REFERENCE].reduced(a, UNPENALISED)
    assert_same_problem(got, want)
    if trace is not None:  # the rows layout and several terms do not compute it
        assert_close(trace, want_trace)


@pytest.mark.parametrize("name", BACKENDS)
def test_fold_problems(backends, folds, name):
    backend = backends[name]
    if name.startswith("several terms"):  # crossed terms have no whole-cluster folds: refused
        with pytest.raises(InputError, match="hold out whole clusters"):
            backend.fold_problems(0.7, UNPENALISED, folds)
        return
    got = backend.fold_problems(0.7, UNPENALISED, folds)
    want = backends[REFERENCE].fold_problems(0.7, UNPENALISED, folds)
    assert len(got) == len(want) == N_FOLDS
    for g, w in zip(got, want):
        assert isinstance(g, FoldProblem)
        assert g.n_train == w.n_train
        assert_same_problem(g.train, w.train)
        for part in ("held_whitened", "held_raw"):
            for gp, wp in zip(getattr(g, part), getattr(w, part)):
                assert_close(gp, wp, what=part)


@pytest.mark.parametrize("columns", [[0, 1, 4], [2, 3]])
@pytest.mark.parametrize("name", ONE_FACTOR)
def test_subset_statistics(backends, name, columns):
    got = backends[name].subset_stats(columns)
    want = backends[REFERENCE].subset_stats(columns)
    for field in ("ZtZ", "ZtX", "Zty", "XtX", "Xty", "yty", "sizes", "x_shift", "y_shift"):
        assert_close(getattr(got, field), getattr(want, field), what=field)
    assert got.intercept == want.intercept


def _refitter(backends, name):
    backend = backends[name]
    if name.startswith("several terms"):
        return SeveralTermsRefitter(backend, [f"c{j}" for j in range(backend.p)], intercept=0)
    return Refitter(backend)


@pytest.mark.parametrize("name", BACKENDS)
def test_refit(backends, name):
    got, want = _refitter(backends, name), _refitter(backends, REFERENCE)
    rtol = SEVERAL_TERMS_REFIT_RTOL if name.startswith("several terms") else RTOL
    for columns in ([0], [0, 1, 4]):
        assert_close(got.ml_deviance(columns), want.ml_deviance(columns), rtol=rtol)
        assert_close(got.variance_ratio(columns), want.variance_ratio(columns), rtol=rtol)
        # lme4's theta (Z in the data's units) of the REML fit
        assert_close(got.fit(columns, reml=True).theta, want.fit(columns, reml=True).theta,
                     rtol=rtol)


@pytest.mark.parametrize("name", BACKENDS)
def test_inference_statistics(backends, name, arrays):
    beta = np.array([1.0, 2.0, 0.0, 0.0, -1.5, 0.0, 0.0])
    G, scores = backends[name].inference_statistics(0.7, beta, _quiet())
    G0, scores0 = backends[REFERENCE].inference_statistics(0.7, beta, _quiet())
    assert_close(G.whole(), G0.whole(), what="whitened Gram")
    assert_close(G.diagonal, G0.diagonal, what="its diagonal")
    assert_close(G.columns([1, 4]), G0.columns([1, 4]), what="its columns")
    assert G.intercept == G0.intercept
    assert_close(G.x_shift, G0.x_shift, what="x_shift")
    assert_close(scores, scores0, what="cluster scores")
    names = list(arrays[0].fixed_names)
    tables = [table_from_cache(g, s, {}, names, [0, 1, 2], beta, backends[name].N,
                               backends[name].n_groups - 1, 0.95, "bh", _quiet(), 1e-8,
                               1e-6)
              for g, s in ((G, scores), (G0, scores0))]
    assert_close(tables[0].to_numpy(), tables[1].to_numpy(), what="table")


@pytest.mark.parametrize("k, a, gram", [(2, 1.0, False), (2, None, True)])
def test_scale_check_runs_on_every_layout(k, a, gram):
    """lme4's checkScaleX warns on the rows layout (one selection at fixed k and a) as on
    the Gram: the same standard deviations, from X's row moments there."""
    import lmmscope
    from lmmscope.checks import ScaleWarning

    rng = np.random.default_rng(0)
    g = np.repeat(np.arange(40), 5)
    X = rng.standard_normal((g.size, 6)) + 50.0
    X[:, 2] *= 1e5
    X[:, 3] = rng.integers(0, 2, g.size)  # binary: not judged, as in lme4
    X[:, 4] *= 1e-3
    y = X[:, 0] + rng.standard_normal(40)[g] + rng.standard_normal(g.size)
    with pytest.warns(ScaleWarning) as caught:
        fit = lmmscope.LmmScope(k=k, a=a).fit(X, y, groups=g)
    assert fit.result_._data.use_gram is gram
    sd = X.std(axis=0, ddof=1)
    message = str(next(w.message for w in caught if w.category is ScaleWarning))
    assert f"from {sd[4]:.3g} (x4) to {sd[2]:.3g} (x2)" in message


def test_raw_z_units_on_every_backend(frame, arrays, folds, parquet_directory):
    """Control(unit_free_z=False): every backend builds the proxy on the raw Z (unit 1)
    and they still agree."""
    raw = _all_backends(frame, arrays, folds, parquet_directory, Control(unit_free_z=False))
    want, _ = raw[REFERENCE].reduced(0.7, UNPENALISED)
    unit_free, _ = _all_backends(frame, arrays, folds, parquet_directory)[REFERENCE].reduced(
        0.7, UNPENALISED)
    assert not np.allclose(want.loss.xty, unit_free.loss.xty)  # Z's units matter here
    for name in BACKENDS:
        assert np.all(raw[name].z_scale == 1.0), name
        assert_same_problem(raw[name].reduced(0.7, UNPENALISED)[0], want)
