"""Information criteria of the profiled Gaussian quasi-likelihood (the choice of k)."""

from __future__ import annotations

import math

CRITERIA = ("gic", "ebic", "bic", "aic")


def information_criteria(rss, k, n_unpenalised, n_obs, p_candidates, ebic_gamma=1.0):
    """Information criteria of the profiled Gaussian quasi-likelihood.

    -2 log QL = N log(RSS_a / N) + const; the penalties follow Fan & Tang (GIC:
    2 log(log N) log(p) per parameter, as skscope's LinearGIC), Chen & Chen (EBIC:
    log N per parameter + 2 gamma log C(p, k)), Schwarz (BIC) and Akaike (AIC).
    """
    N = n_obs
    deviance = N * math.log(max(rss, 1e-300) / N)
    df = k + n_unpenalised
    p = max(p_candidates, 2)
    log_choose = math.lgamma(p + 1) - math.lgamma(k + 1) - math.lgamma(p - k + 1)
    return {
        "gic": deviance + 2 * df * math.log(max(math.log(N), 1.0 + 1e-12)) * math.log(p),
        "ebic": deviance + df * math.log(N) + 2 * ebic_gamma * log_choose,
        "bic": deviance + df * math.log(N),
        "aic": deviance + 2 * df,
    }
