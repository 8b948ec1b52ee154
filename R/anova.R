#' Likelihood-ratio tests between nested fits, or lme4's table of one model
#'
#' With one model, lme4's \code{anova} of \code{\link{as_lmerMod}(object)}
#' (sums of squares and F values of the fixed-effect terms).
#' As lme4's \code{anova} for \code{merMod} objects: fits made by REML are
#' compared at their ML refit (computed when the model was fitted, so no Python
#' is needed), models are ordered by their number of parameters, and each is
#' tested against the previous one by a chi-squared likelihood-ratio test.
#' Other models may be \code{lmm_scope}/\code{lmm} fits, \code{lme4::lmer} fits
#' or \code{lm} fits of the same data (put an lmmscope fit first).
#'
#' @param object An \code{lmm_scope} or \code{lmm} fit.
#' @param ... Further fitted models.
#' @param refit Compare REML fits at their ML refit (default, as lme4).
#' @param model.names Names of the models (default: as written in the call).
#' @return An \code{anova} data.frame with lme4's columns \code{npar},
#'   \code{AIC}, \code{BIC}, \code{logLik}, \code{deviance}, \code{Chisq},
#'   \code{Df}, \code{Pr(>Chisq)}.
#' @export
#' @examplesIf lmmscope_available()
#' d <- lmm_scope_example()
#' small <- lmm(y ~ x1 + (1 | cluster), data = d)
#' big <- lmm(y ~ x1 + x5 + (1 | cluster), data = d)
#' anova(small, big)
anova.lmm_scope <- function(object, ..., refit = TRUE, model.names = NULL) {
  mcall <- match.call(expand.dots = TRUE)
  dots <- list(...)
  is_model <- vapply(dots, function(m) inherits(m, c("lmm_scope", "merMod", "lm")), TRUE)
  if (!any(is_model)) return(stats::anova(lmer_of(object), ...))
  mods <- c(list(object), dots[is_model])
  names(mods) <- model.names %||%
    vapply(as.list(mcall)[c(FALSE, TRUE, is_model)], deparse1, "")
  n <- vapply(mods, stats::nobs, 1)
  if (stats::var(n) > 0) stop("models were not all fitted to the same size of dataset", call. = FALSE)
  reml <- vapply(mods, model_is_reml, NA)
  if (refit && any(reml)) message("refitting model(s) with ML (instead of REML)")
  llks <- lapply(mods, ml_loglik, refit = refit)
  npar <- vapply(llks, attr, 1, "df")
  ii <- order(npar)
  mods <- mods[ii]
  llks <- llks[ii]
  npar <- npar[ii]
  llk <- unlist(llks)
  chisq <- 2 * pmax(0, c(NA, diff(llk)))
  df_chisq <- c(NA, diff(npar))
  val <- data.frame(npar = npar, AIC = vapply(llks, stats::AIC, 1),
                    BIC = vapply(llks, stats::BIC, 1), logLik = llk, deviance = -2 * llk,
                    Chisq = chisq, Df = df_chisq,
                    `Pr(>Chisq)` = ifelse(df_chisq == 0, NA,
                                          stats::pchisq(chisq, df_chisq, lower.tail = FALSE)),
                    row.names = names(mods), check.names = FALSE)
  class(val) <- c("anova", class(val))
  forms <- vapply(mods, function(m) deparse1(suppressWarnings(stats::formula(m))), "")
  data <- deparse1(stats::getCall(mods[[1]])$data)
  structure(val, heading = c(paste("Data:", data), "Models:",
                             paste(names(mods), forms, sep = ": ")))
}

model_is_reml <- function(m) {
  if (inherits(m, "lmm_scope")) return(m$REML)
  if (inherits(m, "merMod")) return(lme4::isREML(m))
  FALSE
}

# The ML log-likelihood (refit by ML when the model was fitted by REML).
ml_loglik <- function(m, refit) {
  if (!refit || !model_is_reml(m)) return(stats::logLik(m))
  if (inherits(m, "lmm_scope")) {
    return(structure(m$ml_refit$loglik, nobs = m$nobs, nall = m$nobs,
                     df = m$ml_refit$n_params, class = "logLik"))
  }
  stats::logLik(lme4::refitML(m))
}

#' @export
getCall.lmm_scope <- function(x, ...) x$call
