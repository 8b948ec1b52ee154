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
#' (\code{conf.level} of \code{lmm_scope}, 0.95 by default) the stored limits
#' are returned (no Python needed); at another level the core forms them from the
#' stored estimates and standard errors with the same t reference.
#'
#' @param object An \code{lmm_scope} or \code{lmm} fit (for \code{"debiased"}:
#'   an \code{lmm_scope} fit made with \code{inference = TRUE}, the default up to
#'   about 8,200 candidate columns).
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
    to_lme4 <- lme4_fixef_names(object, m)
    if (missing(parm)) {
      ci <- stats::confint(m, level = level, method = method, ...)
    } else {
      if (is.character(parm)) parm <- ifelse(parm %in% names(to_lme4), to_lme4[parm], parm)
      ci <- stats::confint(m, parm = parm, level = level, method = method, ...)
    }
    back <- match(rownames(ci), to_lme4)
    rownames(ci)[!is.na(back)] <- names(to_lme4)[back[!is.na(back)]]
    return(ci)
  }
  tab <- inference_rows(object, if (missing(parm)) NULL else parm)
  a <- (1 - level) / 2
  if (!isTRUE(all.equal(level, attr(object$inference, "level")))) {
    tab <- inference_rows(list(inference = inference_again(object, level = level)),
                          if (missing(parm)) NULL else parm)
  }
  ci <- cbind(tab$ci_lower, tab$ci_upper)
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
#' @param adjust \code{"BH"} (stored: the core's adjustment across every
#'   column), \code{"holm"} or \code{"none"}: the core adjusts across every
#'   column (the family), whichever rows \code{parm} returns (needs Python).
#' @return A data.frame.
#' @export
#' @examplesIf lmmscope_available()
#' fit <- lmm_scope(y ~ . + (z1 + z2 | cluster), data = lmm_scope_example())
#' head(inference(fit))
inference <- function(object, parm = NULL, adjust = "BH") {
  if (identical(adjust, "BH")) return(inference_rows(object, parm))
  inference_rows(list(inference = inference_again(object, adjust = adjust)), parm)
}

# The stored table at another level or adjustment, made by the core (needs Python) from
# the stored estimates and standard errors, adjusted across every column
inference_again <- function(object, level = attr(object$inference, "level"), adjust = "BH") {
  tab <- inference_rows(object, NULL)
  inference_frame(call_core("inference_at", rownames(tab), tab$estimate, tab$std_error,
                            attr(tab, "df"), level, adjust))
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

# lme4's names of the fit's fixed effects, named by the fit's: they differ where a partly
# selected term is written as an expression (siteb is I(as.numeric(site == "b")) there);
# formula(fit) writes the columns in the fit's order
lme4_fixef_names <- function(fit, m) {
  ours <- names(fit$fixef)
  theirs <- colnames(lme4::getME(m, "X"))
  if (length(ours) != length(theirs)) return(stats::setNames(theirs, theirs))
  stats::setNames(theirs, ours)
}
