#' Summary of an lmm_scope or lmm fit
#'
#' The selection (support, how \code{k} was chosen, \code{a}), the random
#' effects and lme4's table of the refitted fixed effects;
#' \code{coef(summary(fit))} is that table, as in lme4. With debiased inference,
#' its table (from the Python core) for the selected terms and the terms with
#' BH-adjusted p < 0.05 is printed too.
#'
#' @param object An \code{lmm_scope} fit.
#' @param x A \code{summary.lmm_scope} object.
#' @param digits Significant digits shown.
#' @param ... Unused.
#' @return An object of class \code{summary.lmm_scope}: the fit plus
#'   \code{coefficients}, a matrix with columns \code{Estimate},
#'   \code{Std. Error}, \code{t value}, one row per fixed effect of the refit.
#' @export
summary.lmm_scope <- function(object, ...) {
  se <- sqrt(diag(object$vcov))
  coefs <- cbind(Estimate = object$fixef, `Std. Error` = se, `t value` = object$fixef / se)
  rownames(coefs) <- names(object$fixef)
  debiased <- NULL
  if (!is.null(object$inference)) {
    inf <- object$inference
    keep <- rownames(inf) %in% object$selected | inf$p_adjusted < 0.05
    debiased <- as.matrix(inf[keep, c("estimate", "std_error", "t", "p_value", "p_adjusted")])
    colnames(debiased) <- c("Estimate", "Std. Error", "t value", "Pr(>|t|)", "BH adj.")
  }
  out <- object
  out$coefficients <- coefs
  out$selection_coefficients <- object$coefficients
  out$debiased <- debiased
  class(out) <- c("summary.lmm_scope", class(object))
  out
}

#' @export
coef.summary.lmm_scope <- function(object, ...) object$coefficients

#' @rdname summary.lmm_scope
#' @export
print.summary.lmm_scope <- function(x, digits = max(3, getOption("digits") - 3), ...) {
  cat(header_lines(x), sep = "\n")
  res <- stats::quantile(refit_arrays(x)$residuals / x$sigma, c(0, 0.25, 0.5, 0.75, 1), names = FALSE)
  cat("\nScaled residuals:\n")
  print(stats::setNames(res, c("Min", "1Q", "Median", "3Q", "Max")), digits = digits)
  cat_random_and_fixed(x, x$coefficients, digits, gap = "\n", lmm_label = "Fixed effects:")
  if (!is.null(x$debiased)) {
    cat(sprintf(paste0("\nDebiased inference (cluster sandwich, t with %d df): selected terms",
                       " and terms with BH-adjusted p < 0.05\n"), attr(x$inference, "df")))
    stats::printCoefmat(x$debiased, digits = digits, P.values = TRUE, has.Pvalue = TRUE,
                        cs.ind = 1:2, tst.ind = 3, signif.stars = TRUE)
  } else if (!inherits(x, "lmm")) {
    cat("\n(no debiased inference: refit with inference = TRUE for p-values and confint(method = \"debiased\"))\n")
  }
  if (x$singular) cat("boundary (singular) fit: see help('isSingular')\n")
  invisible(x)
}
