"""Classic longitudinal data that ship with R, plus pure-noise columns, in lme4 syntax
with the time variable as a random slope: lmm_scope keeps every effect lmer finds
strong (|t| > 4) and almost no noise (issue 10, the random-slope trap)."""

import numpy as np
import pytest

import lmmscope
from lme4_helper import needs_lme4, r_frame

# name: (R data, response, fixed effects of lmer's model, time (random slope), cluster)
DATASETS = {
    "sleepstudy": ("lme4::sleepstudy", "Reaction", ["Days"], "Days", "Subject"),
    "Orthodont": ("nlme::Orthodont", "distance", ["age", "Sex"], "age", "Subject"),
    "ChickWeight": ("datasets::ChickWeight", "weight", ["Time", "Diet"], "Time", "Chick"),
    "BodyWeight": ("nlme::BodyWeight", "weight", ["Time", "Diet"], "Time", "Rat"),
    "Oxboys": ("nlme::Oxboys", "height", ["age"], "age", "Subject"),
}
N_NOISE = 40
SEEDS = range(3)


def lmer_t_values(frame, response, fixed, time, cluster) -> dict:
    """lmer's t value of each fixed effect (R's coefficient names)."""
    from lme4_helper import localconverter, pandas2ri, ro
    with localconverter(ro.default_converter + pandas2ri.converter):
        ro.globalenv["d"] = frame
    ro.r(f"m <- lme4::lmer({response} ~ {' + '.join(fixed)} + ({time} | {cluster}), data = d)")
    return dict(zip(ro.r("names(fixef(m))"), np.array(ro.r("coef(summary(m))[, 't value']"))))


def r_style(name: str) -> str:
    """formulaic's dummy names as R's: 'Sex[T.Male]' -> 'SexMale'."""
    return name.replace("[T.", "").replace("]", "")


def with_noise(frame, columns, seed):
    rng = np.random.default_rng(seed)
    out = frame[columns].copy()
    for j in range(N_NOISE):
        out[f"noise{j}"] = rng.standard_normal(len(out))
    return out


@needs_lme4
@pytest.mark.parametrize("penalize_random_slopes", [False, True])
@pytest.mark.parametrize("dataset", sorted(DATASETS))
def test_strong_effects_kept_noise_dropped(dataset, penalize_random_slopes):
    expr, response, fixed, time, cluster = DATASETS[dataset]
    frame = r_frame(expr)
    t_values = lmer_t_values(frame, response, fixed, time, cluster)
    strong = {n for n, t in t_values.items() if abs(t) > 4 and n != "(Intercept)"}
    assert time in strong  # the time effect is what the trap used to drop
    noise_selected = 0
    for seed in SEEDS:
        data = with_noise(frame, [response, cluster] + fixed, seed)
        fit = lmmscope.lmm_scope(f"{response} ~ . + ({time} | {cluster})", data,
                                 penalize_random_slopes=penalize_random_slopes)
        selected = {r_style(n) for n in fit.selected}
        assert strong <= selected, (dataset, seed, sorted(selected), t_values)
        noise_selected += sum(n.startswith("noise") for n in selected)
        assert (time in fit.unpenalised) is (not penalize_random_slopes)
    assert noise_selected / len(SEEDS) <= 1.0


@needs_lme4
def test_sleepstudy_trap_with_50_noise_columns():
    """The case of issue 10: with 50 noise columns a = 1 used to whiten Days away
    (k = 0, a = 0.218).  Penalised like any column, Days is still found because the
    a = 0 start selects it and its ML refit beats the empty model."""
    frame = r_frame("lme4::sleepstudy")
    data = with_noise(frame, ["Reaction", "Subject", "Days"], seed=1)
    for j in range(N_NOISE, 50):
        data[f"noise{j}"] = np.random.default_rng(100 + j).standard_normal(len(data))
    fit = lmmscope.lmm_scope("Reaction ~ . + (Days | Subject)", data, penalize_random_slopes=True)
    assert fit.support == ["Days"]
    # On the raw Z (Days in days) a start at the unpenalised model's REML ratio settles on
    # the empty support, the trap; the a = 0 start finds Days, and at its own REML ratio
    # again (stable), so the trap start does not run; forced to run, the
    # refitted-likelihood comparison overrules it.
    raw = lmmscope.lmm_scope("Reaction ~ . + (Days | Subject)", data, penalize_random_slopes=True,
                             control=lmmscope.Control(unit_free_z=False))
    assert raw.support == ["Days"]
    history = raw.a_history
    assert list(dict.fromkeys(history["start"])) == ["a = 0", "refitted likelihood"]
    assert set(map(len, history["support"])) == {1}  # Days, at every step
    from lmmscope import tuning
    stable = tuning._stable
    try:
        tuning._stable = lambda history, label: False
        forced = lmmscope.lmm_scope("Reaction ~ . + (Days | Subject)", data,
                                    penalize_random_slopes=True,
                                    control=lmmscope.Control(unit_free_z=False))
    finally:
        tuning._stable = stable
    assert forced.support == ["Days"]
    history = forced.a_history
    first = history[history["start"] == "unpenalised REML"]
    assert first["support"].map(len).iloc[-1] == 0
    assert (first["refit_criterion"] > history["refit_criterion"].min() + 5).all()
    # a is the REML variance ratio of the final model, on Z's columns scaled to unit
    # root mean square: tr(D Psi D S) / (sigma^2 tr S), S = sum_i Z~_i'Z~_i, Z~ = Z D^-1
    Z = np.column_stack([np.ones(len(data)), data["Days"]])
    d = np.sqrt((Z ** 2).mean(axis=0))
    S = (Z / d).T @ (Z / d)  # sum over clusters of the per-cluster products
    psi_scaled = fit.psi * np.outer(d, d)
    assert fit.a == pytest.approx(np.trace(psi_scaled @ S) / fit.sigma ** 2 / np.trace(S), rel=1e-6)
