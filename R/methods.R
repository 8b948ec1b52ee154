# lme4-style methods for lmm_scope fits.

#' @importFrom nlme fixef ranef VarCorr
#' @export
nlme::fixef
#' @export
nlme::ranef
#' @export
nlme::VarCorr

#' Methods for lmm_scope fits
#'
#' Accessors follow lme4's conventions. \code{coef} gives the selection
#' estimates over every candidate column (zeros for unselected ones);
#' \code{fixef}, \code{vcov}, \code{ranef}, \code{VarCorr}, \code{sigma} and
#' \code{logLik} come from the REML (or ML) refit on the selected model.
#'
#' @param object,x An \code{lmm_scope} fit.
#' @param ... Unused.
#' @name lmm_scope-methods
#' @return \code{coef}, \code{fixef}: named numeric vectors. \code{ranef}: a list
#'   holding one data.frame of conditional modes (one row per cluster).
#'   \code{VarCorr}: lme4-like list of covariance matrices (see
#'   \code{as.data.frame}). \code{sigma}, \code{nobs}: numbers. \code{logLik}: a
#'   \code{logLik} object. \code{fitted}, \code{residuals}: conditional on the
#'   clusters' random effects, as lme4.
#' @examplesIf lmmscope_available()
#' fit <- lmm_scope(y ~ . + (z1 + z2 | cluster), data = lmm_scope_example())
#' fixef(fit); VarCorr(fit); sigma(fit); logLik(fit); AIC(fit)
#' head(ranef(fit)$cluster)
NULL

#' @rdname lmm_scope-methods
#' @export
coef.lmm_scope <- function(object, ...) object$coefficients

#' @rdname lmm_scope-methods
#' @method fixef lmm_scope
#' @export
fixef.lmm_scope <- function(object, ...) object$fixef

#' @rdname lmm_scope-methods
#' @export
vcov.lmm_scope <- function(object, ...) object$vcov

#' @rdname lmm_scope-methods
#' @method ranef lmm_scope
#' @export
ranef.lmm_scope <- function(object, ...) {
  stats::setNames(list(as.data.frame(object$ranef, optional = TRUE)), object$group_name)
}

#' @rdname lmm_scope-methods
#' @method VarCorr lmm_scope
#' @export
VarCorr.lmm_scope <- function(x, ...) {
  psi <- x$psi
  sd <- sqrt(pmax(diag(psi), 0))
  corr <- suppressWarnings(psi / outer(sd, sd))
  attr(psi, "stddev") <- sd
  attr(psi, "correlation") <- corr
  structure(stats::setNames(list(psi), x$group_name), sc = x$sigma,
            class = "VarCorr.lmm_scope")
}

#' @rdname lmm_scope-methods
#' @param row.names,optional Unused (for the generic).
#' @export
as.data.frame.VarCorr.lmm_scope <- function(x, row.names = NULL, optional = FALSE, ...) {
  rows <- list()
  for (grp in names(x)) {
    m <- x[[grp]]
    nm <- rownames(m)
    sd <- attr(m, "stddev")
    for (i in seq_along(nm)) {
      rows[[length(rows) + 1L]] <- data.frame(grp = grp, var1 = nm[i], var2 = NA_character_,
                                              vcov = m[i, i], sdcor = sd[i])
    }
    for (j in seq_along(nm)) for (i in seq_along(nm)) if (i > j) {
      rows[[length(rows) + 1L]] <- data.frame(grp = grp, var1 = nm[j], var2 = nm[i],
                                              vcov = m[i, j],
                                              sdcor = attr(m, "correlation")[i, j])
    }
  }
  sc <- attr(x, "sc")
  rows[[length(rows) + 1L]] <- data.frame(grp = "Residual", var1 = NA_character_,
                                          var2 = NA_character_, vcov = sc^2, sdcor = sc)
  out <- do.call(rbind, rows)
  rownames(out) <- NULL
  out
}

#' @rdname lmm_scope-methods
#' @param digits Significant digits shown.
#' @export
print.VarCorr.lmm_scope <- function(x, digits = max(3, getOption("digits") - 2), ...) {
  cat(format_varcorr(x, digits), sep = "\n")
  invisible(x)
}

format_varcorr <- function(x, digits) {
  m <- x[[1]]
  nm <- rownames(m)
  q <- length(nm)
  sd <- attr(m, "stddev")
  corr <- attr(m, "correlation")
  tab <- data.frame(Groups = c(names(x), rep("", q - 1L), "Residual"),
                    Name = c(nm, ""),
                    Std.Dev. = formatC(c(sd, attr(x, "sc")), digits = digits, format = "g"),
                    stringsAsFactors = FALSE, check.names = FALSE)
  if (q > 1L) {
    for (j in seq_len(q - 1L)) {
      col <- rep("", q + 1L)
      col[(j + 1L):q] <- formatC(corr[(j + 1L):q, j], digits = 2, format = "f")
      tab[[if (j == 1L) "Corr" else paste(rep(" ", j), collapse = "")]] <- col
    }
  }
  utils::capture.output(print(tab, row.names = FALSE, right = FALSE))
}

#' @rdname lmm_scope-methods
#' @export
sigma.lmm_scope <- function(object, ...) object$sigma

#' @rdname lmm_scope-methods
#' @export
logLik.lmm_scope <- function(object, ...) {
  structure(object$loglik, nobs = object$nobs, df = object$df, class = "logLik")
}

#' @rdname lmm_scope-methods
#' @export
nobs.lmm_scope <- function(object, ...) object$nobs

#' @rdname lmm_scope-methods
#' @export
fitted.lmm_scope <- function(object, ...) object$fitted

#' @rdname lmm_scope-methods
#' @export
residuals.lmm_scope <- function(object, ...) object$residuals

#' @rdname lmm_scope-methods
#' @export
formula.lmm_scope <- function(x, ...) stats::as.formula(x$formula)

#' Predictions from an lmm_scope fit
#'
#' @param object An \code{lmm_scope} fit.
#' @param newdata A data.frame with the model's columns; \code{NULL} predicts the
#'   fitting rows.
#' @param re.form \code{NULL} (default): conditional on the clusters' random
#'   effects, with clusters not seen in fitting at population level (lme4's
#'   \code{allow.new.levels = TRUE}); \code{NA} or \code{~0}: population level.
#' @param ... Unused.
#' @return A numeric vector.
#' @export
#' @examplesIf lmmscope_available()
#' d <- lmm_scope_example()
#' fit <- lmm_scope(y ~ . + (z1 + z2 | cluster), data = d)
#' head(predict(fit, newdata = d, re.form = NA))
predict.lmm_scope <- function(object, newdata = NULL, re.form = NULL, ...) {
  level <- re_form_level(re.form)
  if (is.null(newdata)) {
    return(if (level == 1L) object$fitted else object$fitted_population)
  }
  newdata <- check_data(newdata)
  py_data <- r_columns(newdata[vapply(newdata, function(x) {
    is.numeric(x) || is.factor(x) || is.character(x) || is.logical(x)
  }, logical(1))])
  pred <- call_core(core()$predict, object$predictor, py_data$columns, py_data$levels,
                    level = level)
  stats::setNames(as.numeric(pred), rownames(newdata))
}

re_form_level <- function(re.form) {
  if (is.null(re.form)) return(1L)
  if (length(re.form) == 1L && is.na(re.form)) return(0L)
  if (inherits(re.form, "formula") && identical(deparse(re.form), "~0")) return(0L)
  stop("re.form must be NULL (with random effects) or NA / ~0 (population level)", call. = FALSE)
}

#' @rdname lmm_scope-methods
#' @export
print.lmm_scope <- function(x, digits = max(3, getOption("digits") - 3), ...) {
  cat(header_lines(x), sep = "\n")
  cat("Random effects:\n")
  cat(paste0(" ", format_varcorr(VarCorr(x), digits)), sep = "\n")
  cat(sprintf("Number of obs: %d, groups:  %s, %d\n", x$nobs, x$group_name, x$ngroups))
  cat("Fixed effects (refit on the selected model):\n")
  print(x$fixef, digits = digits)
  if (x$singular) cat("boundary (singular) fit: see help('isSingular', package = 'lme4')\n")
  invisible(x)
}

header_lines <- function(x) {
  n_cand <- length(x$coefficients) - length(x$unpenalised)
  how <- if (identical(x$criterion, "cv")) "cross-validation" else toupper(x$criterion)
  c("Sparse linear mixed model: quasi-likelihood best subset (lmmscope)",
    paste0("Formula: ", x$formula),
    sprintf("Selected %d of %d candidate predictors (k chosen by %s), a = %s",
            x$k, n_cand, how, format(signif(x$a, 4))),
    paste0("Selected: ", if (length(x$support)) paste(x$support, collapse = ", ") else "(none)"),
    if (x$n_dropped > 0) sprintf("(%d observations deleted due to missingness)", x$n_dropped),
    sprintf("Refit by %s: %s criterion %.4f, logLik %.4f, AIC %.4f, BIC %.4f",
            x$method, x$method, x$deviance, x$loglik,
            stats::AIC(x), stats::BIC(x)))
}

#' Criterion path of an lmm_scope fit
#'
#' Draws the information criterion (or cross-validation error) against the
#' support size with the chosen \code{k} marked, or the coefficient path.
#'
#' @param x An \code{lmm_scope} fit.
#' @param type \code{"criterion"} or \code{"coefficients"}.
#' @param ... Passed to \code{plot}.
#' @return \code{x}, invisibly.
#' @export
#' @examplesIf lmmscope_available()
#' fit <- lmm_scope(y ~ . + (z1 + z2 | cluster), data = lmm_scope_example())
#' plot(fit)
plot.lmm_scope <- function(x, type = c("criterion", "coefficients"), ...) {
  type <- match.arg(type)
  ks <- x$path$k
  if (type == "criterion") {
    col <- if (identical(x$criterion, "cv")) "cv_error" else x$criterion
    graphics::plot(ks, x$path[[col]], type = "b", pch = 19, xlab = "support size k",
                   ylab = toupper(col), ...)
    graphics::abline(v = x$k, lty = 2, col = "red")
    graphics::mtext(sprintf("chosen k = %d", x$k), side = 3, adj = 1, col = "red")
  } else {
    cp <- x$coef_path[, setdiff(colnames(x$coef_path), x$unpenalised), drop = FALSE]
    active <- colSums(cp != 0) > 0
    graphics::matplot(as.numeric(rownames(cp)), cp[, active, drop = FALSE], type = "s",
                      lty = 1, xlab = "support size k", ylab = "coefficient", ...)
    graphics::abline(v = x$k, lty = 2, col = "red")
  }
  invisible(x)
}
