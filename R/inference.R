#' Confidence intervals: lme4's, or the debiased ones
#'
#' \code{method = "profile"} (default), \code{"Wald"} and \code{"boot"} are
#' lme4's \code{confint} on the selected model (\code{\link{as_lmerMod}(object)}),
#' with lme4's rows (\code{.sig01}, ..., \code{.sigma}, then the fixed effects)
#' and arguments (\code{nsim}, \code{boot.type}, \code{oldNames}, ...): they
#' treat the selected model as fixed in advance.
#'
#' \code{method = "debiased"} gives intervals from the debiased quasi-likelihood
#' estimator (Li, Cai and Li 2022), computed by the Python core, for every
#' candidate column, selected or not: node-wise scaled lasso on the whitened
#' design, one debiasing step, and a cluster-sandwich standard error that needs
#' no estimate of the random-effect covariance. They are centred on the debiased
#' estimate, not on \code{fixef}. The reference distribution is Student's t with
#' (clusters - 1) degrees of freedom. At the level stored in the fit
#' (\code{conf.level} of \code{lmm_scope}, 0.95 by default) the core's limits
#' are returned; at another level they are formed from the core's estimate and
#' standard error with the same t reference.
#'
#' @param object An \code{lmm_scope} or \code{lmm} fit (for \code{"debiased"}:
#'   an \code{lmm_scope} fit made with \code{inference = TRUE}, the default up to
#'   about 11,500 candidate columns).
#' @param parm Names or indices of the parameters; default all.
#' @param level Confidence level.
#' @param method \code{"profile"}, \code{"Wald"}, \code{"boot"} (lme4's) or
#'   \code{"debiased"}.
#' @param ... Passed to lme4's \code{confint} method.
#' @return A matrix with one row per parameter and the lower and upper limits.
#' @export
#' @examplesIf lmmscope_available()
#' fit <- lmm_scope(y ~ . + (z1 + z2 | cluster), data = lmm_scope_example())
#' confint(fit, c("x1", "x2", "x5"), method = "debiased")
#' if (requireNamespace("lme4", quietly = TRUE)) confint(fit, method = "Wald")
confint.lmm_scope <- function(object, parm, level = 0.95,
                              method = c("profile", "Wald", "boot", "debiased"), ...) {
  method <- match.arg(method)
  if (method != "debiased") {
    m <- lmer_of(object)
    if (missing(parm)) return(stats::confint(m, level = level, method = method, ...))
    return(stats::confint(m, parm = parm, level = level, method = method, ...))
  }
  tab <- inference_rows(object, if (missing(parm)) NULL else parm)
  a <- (1 - level) / 2
  if (isTRUE(all.equal(level, attr(object$inference, "level")))) {
    ci <- cbind(tab$ci_lower, tab$ci_upper)
  } else {
    half <- stats::qt(1 - a, attr(object$inference, "df")) * tab$std_error
    ci <- cbind(tab$estimate - half, tab$estimate + half)
  }
  dimnames(ci) <- list(rownames(tab), paste(format(100 * c(a, 1 - a), trim = TRUE,
                                                   scientific = FALSE, digits = 3), "%"))
  ci
}

#' Debiased estimates, standard errors and p-values
#'
#' The Python core's inference table: one row per fixed-effect column with the
#' debiased \code{estimate}, \code{std_error}, \code{t} statistic,
#' \code{p_value}, interval limits at the stored level and \code{p_adjusted}
#' (Benjamini-Hochberg across every candidate column).
#'
#' @param object An \code{lmm_scope} fit made with \code{inference = TRUE}.
#' @param parm Names or indices of the columns; default all.
#' @param adjust \code{"BH"} (the core's adjustment across every column) or
#'   another method of \code{\link[stats]{p.adjust}}, applied to the core's
#'   p-values of the rows returned.
#' @return A data.frame.
#' @export
#' @examplesIf lmmscope_available()
#' fit <- lmm_scope(y ~ . + (z1 + z2 | cluster), data = lmm_scope_example())
#' head(inference(fit))
inference <- function(object, parm = NULL, adjust = "BH") {
  tab <- inference_rows(object, parm)
  if (!identical(adjust, "BH")) tab$p_adjusted <- stats::p.adjust(tab$p_value, method = adjust)
  tab
}

inference_rows <- function(object, parm) {
  tab <- object$inference
  if (is.null(tab)) {
    stop("this fit has no debiased inference: refit with lmm_scope(..., inference = TRUE)",
         call. = FALSE)
  }
  if (is.null(parm)) return(tab)
  if (is.numeric(parm)) return(tab[parm, , drop = FALSE])
  unknown <- setdiff(parm, rownames(tab))
  if (length(unknown)) {
    stop("unknown coefficient name(s): ", paste(unknown, collapse = ", "), call. = FALSE)
  }
  tab[parm, , drop = FALSE]
}
