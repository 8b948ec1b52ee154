"""Performance settings (Control(performance=Performance(...))): rules, results
unchanged by them; and the row scan's duplicate test agreeing with the Gram's."""

from dataclasses import fields

import numpy as np
import pytest

import lmmscope
from lmmscope.cluster_stats import compute_cluster_stats
from lmmscope.column_products import GramProducts, RowProducts
from lmmscope.control import PERFORMANCE_RULES, Control, Performance
from lmmscope.exceptions import InputError


def test_every_performance_field_has_a_rule_and_refuses_nonsense():
    assert [f.name for f in fields(Performance)] == list(PERFORMANCE_RULES)
    for name in PERFORMANCE_RULES:
        with pytest.raises(InputError, match=f"performance.{name}"):
            Performance(**{name: -1})
    with pytest.raises(InputError, match="performance.column_tile"):
        Control(performance={"column_tile": 0})
    with pytest.raises(InputError, match="has no field"):
        Control(performance={"tile": 8})


def test_theta_start_scales_rule():
    assert Control(theta_start_scales=[1, 10.0]).theta_start_scales == (1.0, 10.0)
    for bad in ([], [0.0, 1.0], [np.nan], "one"):
        with pytest.raises(InputError, match="theta_start_scales"):
            Control(theta_start_scales=bad)


def test_small_blocks_everywhere_give_the_default_fit():
    """Every block size at its smallest (a column-major frame, so the column tiles and
    moment tiles are read): the same selection and refit as the defaults."""
    from lmmscope.simulate import seed_frame, seed_formula

    df, _beta = seed_frame()
    df[[f"x{j}" for j in range(50)]] += 1e7  # large means: centred in chunks, not corrected
    formula = seed_formula(intercept=True)
    small = Control(performance=Performance(
        chunk_bytes=1, min_chunk_rows=1, moment_tile_bytes=1, copy_block_bytes=1,
        column_tile=1, plain_pages_bytes=0, theta_batch_doubles=1, suspect_chunk=1,
        arrow_run=1, on_demand_gram_bytes=0))
    for tuning in ({"a": 1.0}, {"a": 1.0, "k": 3}):  # a path (Gram); one problem (rows)
        base = lmmscope.lmm_scope(formula, df, **tuning)
        tiled = lmmscope.lmm_scope(formula, df, control=small, **tuning)
        assert tiled.support == base.support and tiled.k == base.k
        # the same sums in other blocks: rounding only (measured 1.6e-15 relative on the
        # fixed effects, 4e-13 on theta ~2-3)
        np.testing.assert_allclose(tiled.fixef.to_numpy(), base.fixef.to_numpy(),
                                   rtol=1e-13, atol=0)
        np.testing.assert_allclose(tiled.mixed.theta, base.mixed.theta, rtol=1e-11, atol=0)


def _near_duplicates(rng, N, pairs, gaps, mean):
    """Columns in pairs whose centred correlation is 1 - gap (gap per pair), plus one
    independent column; intercept first."""
    columns = [np.ones(N)]
    for gap in gaps[:pairs]:
        x = rng.standard_normal(N)
        xc = x - x.mean()
        e = rng.standard_normal(N)
        e -= e.mean()
        e -= (e @ xc) / (xc @ xc) * xc
        e /= np.linalg.norm(e)
        # cos = 1 / sqrt(1 + s^2) = 1 - gap to first order
        columns += [x + mean, xc + np.sqrt(2 * gap) * np.linalg.norm(xc) * e + x.mean() + mean]
    columns.append(rng.standard_normal(N))
    return np.column_stack(columns)


@pytest.mark.parametrize("tol", [1e-12, 1e-8])
def test_row_scan_finds_the_duplicates_the_gram_finds(tol):
    """Near-duplicates at half the tolerance are refused on both layouts, and at four
    times it on neither (the key gap was 1e-6 whatever the tolerance: the row scan
    missed about 60% of the pairs the Gram found at 1e-12)."""
    rng = np.random.default_rng(4)
    N, pairs = 2000, 12
    gaps = [tol / 2] * (pairs // 2) + [4 * tol] * (pairs // 2)
    X = _near_duplicates(rng, N, pairs, gaps, mean=3.0)
    codes = np.repeat(np.arange(100), N // 100)
    y = rng.standard_normal(N)
    Z = np.ones((N, 1))
    with_gram = compute_cluster_stats(X, y, Z, codes, 100, gram=True)
    rows = compute_cluster_stats(X, y, Z, codes, 100, gram=False)
    expected = [(1 + 2 * i, 2 + 2 * i) for i in range(pairs // 2)]
    assert GramProducts(with_gram).duplicate_pairs(tol=tol) == expected
    assert RowProducts(rows, X).duplicate_pairs(tol=tol) == expected


def test_search_limits_reach_the_engines(monkeypatch):
    """Control's search limits and Performance.exact_limit are read by the engines: the
    exact engine refuses above its limit; the splicing engine enumerates up to
    enumeration_limit subsets (a spy counts the enumerations) and searches above it."""
    from lmmscope.engines import splicing

    rng = np.random.default_rng(6)
    N, p = 120, 8
    X = rng.standard_normal((N, p))
    groups = np.repeat(np.arange(12), 10)
    y = X[:, 1] - X[:, 4] + rng.standard_normal(N)
    tight = Control(engine="exact", performance=Performance(exact_limit=10))
    with pytest.raises(InputError, match="above its limit of 10"):
        lmmscope.LmmScope(a=1.0, k_max=3, control=tight).fit(X, y, groups=groups)
    lmmscope.LmmScope(a=1.0, k_max=3, control=Control(engine="exact")).fit(X, y, groups=groups)

    calls = []
    original = splicing.least_rss_subset
    monkeypatch.setattr(splicing, "least_rss_subset",
                        lambda *a, **k: calls.append(a[1]) or original(*a, **k))
    enumerated = lmmscope.LmmScope(a=1.0, k_max=3).fit(X, y, groups=groups)
    assert sorted(set(calls)) == [1, 2, 3]  # C(8, k) <= 2,000: every size enumerated
    calls.clear()
    searched = lmmscope.LmmScope(a=1.0, k_max=3, control=Control(enumeration_limit=0)).fit(
        X, y, groups=groups)
    assert calls == []
    assert list(searched.support_) == list(enumerated.support_)  # two true columns: found
