#' Predictions from an lmm_scope or lmm fit
#'
#' Runs in R from the fit's plain values (no Python). New data need only the
#' variables of the selected model.
#'
#' @param object An \code{lmm_scope} (or \code{lmm}) fit.
#' @param newdata A data.frame; \code{NULL} predicts the fitting rows (padded
#'   with \code{NA} under \code{na.exclude}).
#' @param re.form \code{NULL} (default): conditional on every random-effects
#'   term; \code{NA} or \code{~0}: population level; a formula of some of the
#'   model's terms (\code{~(1 | plate)}): conditional on those only, as in lme4.
#' @param allow.new.levels As in lme4: levels of a grouping factor in
#'   \code{newdata} not seen in fitting are an error (\code{FALSE}, default) or
#'   contribute nothing from that term (\code{TRUE}), factor by factor. Levels
#'   are matched by value, so an integer grouping column matches a factor fitted
#'   from the same values.
#' @param ... Unused.
#' @return A named numeric vector.
#' @export
#' @examplesIf lmmscope_available()
#' d <- lmm_scope_example()
#' fit <- lmm_scope(y ~ . + (z1 + z2 | cluster), data = d)
#' head(predict(fit, newdata = d, re.form = NA))
predict.lmm_scope <- function(object, newdata = NULL, re.form = NULL, allow.new.levels = FALSE,
                              ...) {
  included <- re_form_terms(re.form, object)
  if (is.null(newdata)) {
    arrays <- refit_arrays(object)
    pred <- drop(arrays$X %*% object$fixef) + arrays$offset +
      Reduce(`+`, lapply(arrays$random[included], `[[`, "value"), 0)
    names(pred) <- names(arrays$fitted)
    return(stats::napredict(object$na.action, pred))
  }
  if (!is.data.frame(newdata)) {
    stop("newdata must be a data.frame, got ", class(newdata)[1L], call. = FALSE)
  }
  X <- fixed_matrix(object$terms_predict, newdata, object$contrasts, object$xlevels)
  pred <- drop(X[, names(object$fixef), drop = FALSE] %*% object$fixef) + attr(X, "offset") +
    offset_argument(object, newdata)
  for (term in re_terms(object)[included]) {
    pred <- pred + random_part(object, term, newdata, allow.new.levels)
  }
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

# One term's random effects on new rows; levels not seen in fitting are an error, or
# contribute 0 with allow.new.levels (lme4's rule, factor by factor).
random_part <- function(object, term, newdata, allow.new.levels) {
  env <- environment(object$formula)
  g <- if (is.null(object$re_terms)) eval(term$group, newdata, env) else
    grouping_factor(term$group, newdata, env)
  idx <- match(as.character(g), term$levels)
  unseen <- is.na(idx)
  if (any(unseen) && !isTRUE(allow.new.levels)) {
    stop("new levels detected in newdata",
         if (!is.null(object$re_terms)) paste0(" for grouping factor ", term$group_name), ": ",
         paste(utils::head(unique(as.character(g[unseen])), 10L), collapse = ", "),
         " (use allow.new.levels = TRUE to predict them at population level)", call. = FALSE)
  }
  Z <- random_matrix(term, newdata)
  b <- term$ranef[ifelse(unseen, 1L, idx), , drop = FALSE]
  b[unseen, ] <- 0
  rowSums(Z * b)
}

# simulate()'s re.form: 1 conditions on the fitted random effects, 0 draws new ones.
re_form_level <- function(re.form) {
  if (is.null(re.form)) return(1L)
  if (length(re.form) == 1L && !inherits(re.form, "formula") && is.na(re.form)) return(0L)
  if (inherits(re.form, "formula") && (identical(re.form[[length(re.form)]], 0) ||
                                       identical(re.form[[length(re.form)]], 0L))) return(0L)
  stop("re.form must be NULL (conditional on the random effects), NA or ~0 (new random ",
       "effects)", call. = FALSE)
}

# Which of the model's terms (lme4's order) re.form keeps: NULL all, NA or ~0 none, a
# formula those of its bar terms (expanded as in the model, each one of the model's).
re_form_terms <- function(re.form, object) {
  terms <- re_terms(object)
  if (is.null(re.form)) return(rep(TRUE, length(terms)))
  if (length(re.form) == 1L && !inherits(re.form, "formula") && is.na(re.form)) {
    return(rep(FALSE, length(terms)))
  }
  if (inherits(re.form, "formula")) {
    rhs <- re.form[[length(re.form)]]
    if (identical(rhs, 0) || identical(rhs, 0L)) return(rep(FALSE, length(terms)))
    bars <- find_bars(rhs)
    wanted <- unlist(lapply(bars, expand_bar), recursive = FALSE)
    groups <- vapply(terms, `[[`, "", "group_name")
    keep <- rep(FALSE, length(terms))
    found <- vapply(wanted, function(w) {
      hit <- which(groups == w$group_name &
                     vapply(terms, function(t) identical(t$random, w$random), TRUE))
      # a factor with one term: (1 | g) names it whatever its left side
      if (!length(hit) && sum(groups == w$group_name) == 1L) hit <- which(groups == w$group_name)
      keep[hit] <<- TRUE
      length(hit) > 0L
    }, TRUE)
    if (length(bars) && all(found) && is.null(no_bars(rhs))) return(keep)
  }
  stop("re.form must be NULL (every random-effects term), NA or ~0 (population level), or a ",
       "formula of the model's own random-effects terms: ",
       paste(vapply(terms, function(t) paste0("(", deparse1(call("|", t$random, t$group)), ")"),
                    ""), collapse = " + "), call. = FALSE)
}
