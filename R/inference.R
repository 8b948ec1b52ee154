#' Debiased confidence intervals for fixed effects
#'
#' Intervals from the debiased quasi-likelihood estimator (Li, Cai and Li
#' 2022): node-wise scaled lasso on the whitened design, one debiasing step,
#' and a cluster-sandwich standard error that needs no estimate of the
#' random-effect covariance. Available for every candidate column, selected or
#' not. The reference distribution is Student's t with (clusters - 1) degrees
#' of freedom.
#'
#' @param object An \code{lmm_scope} fit made with \code{inference = TRUE} (the
#'   default when there are at most 500 candidate columns).
#' @param parm Names or indices of the columns; default all.
#' @param level Confidence level.
#' @param ... Unused.
#' @return A matrix with one row per column and the lower and upper limits.
#' @export
#' @examplesIf lmmscope_available()
#' fit <- lmm_scope(y ~ . + (z1 + z2 | cluster), data = lmm_scope_example())
#' confint(fit, c("x1", "x2", "x5"))
confint.lmm_scope <- function(object, parm, level = 0.95, ...) {
  tab <- inference_rows(object, parm)
  a <- (1 - level) / 2
  q <- stats::qt(1 - a, attr(object$inference, "df"))
  ci <- cbind(tab$estimate - q * tab$std_error, tab$estimate + q * tab$std_error)
  dimnames(ci) <- list(rownames(tab), paste(format(100 * c(a, 1 - a), trim = TRUE,
                                                   scientific = FALSE, digits = 3), "%"))
  ci
}

#' Debiased estimates, standard errors and p-values
#'
#' The table behind \code{confint} and \code{summary}: one row per fixed-effect
#' column with the debiased \code{estimate}, \code{std_error}, \code{t} statistic,
#' \code{p_value} and \code{p_adjusted} (Benjamini-Hochberg across the rows
#' returned unless \code{adjust} says otherwise).
#'
#' @inheritParams confint.lmm_scope
#' @param adjust A method of \code{\link[stats]{p.adjust}}; \code{"BH"} by default.
#' @return A data.frame.
#' @export
#' @examplesIf lmmscope_available()
#' fit <- lmm_scope(y ~ . + (z1 + z2 | cluster), data = lmm_scope_example())
#' head(inference(fit))
inference <- function(object, parm, level = 0.95, adjust = "BH") {
  tab <- inference_rows(object, parm)
  df <- attr(object$inference, "df")
  t <- tab$estimate / tab$std_error
  p <- 2 * stats::pt(abs(t), df, lower.tail = FALSE)
  ci <- confint(object, rownames(tab), level = level)
  data.frame(estimate = tab$estimate, std_error = tab$std_error, t = t, p_value = p,
             ci_lower = ci[, 1], ci_upper = ci[, 2],
             p_adjusted = stats::p.adjust(p, method = adjust), row.names = rownames(tab))
}

inference_rows <- function(object, parm) {
  tab <- object$inference
  if (is.null(tab)) {
    stop("this fit has no debiased inference: refit with lmm_scope(..., inference = TRUE)",
         call. = FALSE)
  }
  if (missing(parm) || is.null(parm)) return(tab)
  if (is.numeric(parm)) return(tab[parm, , drop = FALSE])
  unknown <- setdiff(parm, rownames(tab))
  if (length(unknown)) {
    stop("unknown coefficient name(s): ", paste(unknown, collapse = ", "), call. = FALSE)
  }
  tab[parm, , drop = FALSE]
}
