#' Predictions from an lmm_scope or lmm fit
#'
#' Runs in R from the fit's plain values (no Python). New data need only the
#' variables of the selected model.
#'
#' @param object An \code{lmm_scope} (or \code{lmm}) fit.
#' @param newdata A data.frame; \code{NULL} predicts the fitting rows (padded
#'   with \code{NA} under \code{na.exclude}).
#' @param re.form \code{NULL} (default): conditional on the clusters' random
#'   effects; \code{NA} or \code{~0}: population level, as in lme4.
#' @param allow.new.levels As in lme4: clusters of \code{newdata} not seen in
#'   fitting are an error (\code{FALSE}, default) or predicted at population
#'   level (\code{TRUE}). Clusters are matched by value, so an integer grouping
#'   column matches a factor fitted from the same values.
#' @param ... Unused.
#' @return A named numeric vector.
#' @export
#' @examplesIf lmmscope_available()
#' d <- lmm_scope_example()
#' fit <- lmm_scope(y ~ . + (z1 + z2 | cluster), data = d)
#' head(predict(fit, newdata = d, re.form = NA))
predict.lmm_scope <- function(object, newdata = NULL, re.form = NULL, allow.new.levels = FALSE,
                              ...) {
  level <- re_form_level(re.form, object)
  if (is.null(newdata)) {
    arrays <- refit_arrays(object)
    pred <- if (level == 1L) arrays$fitted else drop(arrays$X %*% object$fixef) + arrays$offset
    names(pred) <- names(arrays$fitted)
    return(stats::napredict(object$na.action, pred))
  }
  if (!is.data.frame(newdata)) {
    stop("newdata must be a data.frame, got ", class(newdata)[1L], call. = FALSE)
  }
  X <- fixed_matrix(object$terms_predict, newdata, object$contrasts, object$xlevels)
  pred <- drop(X[, names(object$fixef), drop = FALSE] %*% object$fixef) + attr(X, "offset") +
    offset_argument(object, newdata)
  if (level == 1L) pred <- pred + random_part(object, newdata, allow.new.levels)
  stats::setNames(pred, rownames(newdata))
}

# The offset= argument of the fit, evaluated in newdata (as predict.lm does).
offset_argument <- function(object, newdata) {
  if (is.null(object$offset_arg)) return(0)
  off <- eval(object$offset_arg, newdata, environment(object$formula))
  if (length(off) != nrow(newdata)) {
    stop("the offset= argument of the fit cannot be evaluated in newdata; ",
         "put the offset in the formula as offset(...)", call. = FALSE)
  }
  as.numeric(off)
}

random_part <- function(object, newdata, allow.new.levels) {
  g <- eval(object$re$group, newdata, environment(object$formula))
  idx <- match(as.character(g), object$re$levels)
  unseen <- is.na(idx)
  if (any(unseen) && !isTRUE(allow.new.levels)) {
    stop("new levels detected in newdata: ",
         paste(utils::head(unique(as.character(g[unseen])), 10L), collapse = ", "),
         " (use allow.new.levels = TRUE to predict them at population level)", call. = FALSE)
  }
  Z <- random_matrix(object, newdata)
  b <- object$ranef[ifelse(unseen, 1L, idx), , drop = FALSE]
  b[unseen, ] <- 0
  rowSums(Z * b)
}

# 1: conditional on the random effects; 0: population level (lme4's re.form).
re_form_level <- function(re.form, object = NULL) {
  if (is.null(re.form)) return(1L)
  if (length(re.form) == 1L && !inherits(re.form, "formula") && is.na(re.form)) return(0L)
  if (inherits(re.form, "formula")) {
    rhs <- re.form[[length(re.form)]]
    if (identical(rhs, 0) || identical(rhs, 0L)) return(0L)
    bars <- find_bars(rhs)
    if (!is.null(object) && length(bars) == 1L &&
        identical(bars[[1L]][[3L]], object$re$group)) return(1L)
  }
  stop("re.form must be NULL (conditional on the random effects), NA or ~0 (population ",
       "level), or the model's own random-effects term", call. = FALSE)
}
