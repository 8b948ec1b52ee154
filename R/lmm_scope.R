#' Select the fixed effects of a linear mixed model
#'
#' Fits the quasi-likelihood best-subset estimator of Li, Cai and Li (2022):
#' each cluster is whitened by \eqn{\Sigma_a = a Z_i Z_i' + I}, the support of
#' the fixed effects is chosen by best-subset selection, and the selected model
#' is refitted by REML (or ML) exactly as \code{lme4::lmer} would. R builds the
#' design with its own machinery (\code{model.frame}, \code{model.matrix}, your
#' contrasts, \code{na.action}, \code{subset}, \code{offset}); the selection and
#' refit run in the Python core; the result holds plain R values only, so a
#' saved fit predicts without Python.
#'
#' @param formula A formula (or a string) in lme4's syntax,
#'   \code{y ~ x1 + x2 + (z1 + z2 | cluster)}, or in the design syntax,
#'   \code{y ~ x1 + x2 | (z1 + z2 | cluster)}. Anything \code{lm} accepts works
#'   on the fixed side (\code{factor()}, \code{poly()}, \code{scale()},
#'   \code{cut()}, \code{C(f, contr.sum)}, \code{offset()}, interactions,
#'   backticked names). \code{.} means every column of \code{data} except the
#'   response and the grouping variable (the grouping column would duplicate the
#'   random intercept). One random-effects term with one grouping factor;
#'   \code{||} is not supported.
#' @param data A data.frame.
#' @param k Support size, not counting unpenalised terms: a whole number,
#'   \code{NULL} (search \code{0..k_max}, choose by \code{criterion}) or
#'   \code{"cv"} (cross-validation over whole clusters).
#' @param a The scale of the working covariance \eqn{a Z Z' + I}: a number,
#'   \code{NULL} (iterate the REML variance ratio on the selected model) or
#'   \code{"cv"}.
#' @param always Fixed-effect columns always kept (unpenalised, not counted in
#'   \code{k}), named as \code{coef()} names them (\code{"sexFemale"},
#'   \code{"(Intercept)"}, \code{"`odd name`"} or \code{"odd name"}). The
#'   intercept is always unpenalised.
#' @param criterion Information criterion used when \code{k = NULL}:
#'   \code{"gic"} (default), \code{"ebic"}, \code{"bic"} or \code{"aic"}.
#' @param k_max Largest support size searched; default \code{min(p, N / log N, 50)}.
#' @param cv_folds Number of folds (made of whole clusters) for \code{"cv"}.
#' @param REML Refit the selected model by REML (default) or by ML (\code{FALSE}).
#' @param subset,na.action,offset,contrasts As in \code{lm} and \code{lme4::lmer}.
#'   With \code{na.exclude}, \code{fitted}, \code{residuals} and \code{predict}
#'   are padded with \code{NA} for the excluded rows.
#' @param weights Not supported (a clear error).
#' @param inference Compute debiased estimates and cluster-sandwich standard
#'   errors for every candidate column (for \code{confint}, \code{inference} and
#'   \code{summary}): \code{TRUE}, \code{FALSE} or \code{NULL} (the default:
#'   computed at fit time, in about the fit's own time, and kept in the fit, unless
#'   the p x p matrix it needs would pass 1 GiB, about 11,500 columns; a warning
#'   then says so).
#' @param conf.level Confidence level of the stored debiased intervals.
#' @param verbose Print progress.
#' @return An object of class \code{lmm_scope} (plain R values) with lme4's
#'   methods: see \code{\link{lmm_scope-methods}}.
#' @references Li, S., Cai, T. T. and Li, H. (2022). Inference for
#'   high-dimensional linear mixed-effects models: a quasi-likelihood approach.
#'   \emph{Journal of the American Statistical Association}, 117, 1835--1846.
#' @seealso \code{\link{lmm}} for a fit without selection.
#' @export
#' @examplesIf lmmscope_available()
#' d <- lmm_scope_example()
#' fit <- lmm_scope(y ~ . + (z1 + z2 | cluster), data = d)
#' fit
#' coef(fit)[coef(fit) != 0]
lmm_scope <- function(formula, data, k = NULL, a = NULL, always = NULL,
                      criterion = c("gic", "ebic", "bic", "aic"), k_max = NULL,
                      cv_folds = 5L, REML = TRUE, subset, weights, na.action, offset,
                      contrasts = NULL, inference = NULL, conf.level = 0.95,
                      verbose = FALSE) {
  mcall <- match.call(expand.dots = FALSE)
  criterion <- match.arg(criterion)
  check_k(k)
  check_a(a)
  check_flag(REML, "REML")
  design <- build_design(formula, mcall, parent.frame(), contrasts)
  unpenalised <- unpenalised_columns(colnames(design$X), always)
  out <- call_core("fit_arrays", X = as_bytes(design$X), y = as_bytes(design$y - design$offset),
                   Z = as_bytes(design$Z), groups = as_bytes(as.integer(design$group) - 1L),
                   names = colnames(design$X), random_names = colnames(design$Z),
                   group_name = design$parts$group_name, unpenalised = unpenalised - 1L,
                   k = k, a = a, criterion = criterion,
                   k_max = if (is.null(k_max)) NULL else as.integer(k_max),
                   cv_folds = as.integer(cv_folds), reml = REML, inference = inference,
                   conf_level = conf.level, verbose = isTRUE(verbose))
  new_fit(out, design, mcall, "lmm_scope", k_given = !is.null(k) && !identical(k, "cv"))
}

#' Fit a linear mixed model without selection
#'
#' Every fixed effect of the formula is kept; the model is fitted by REML (or
#' ML) in the Python core, as \code{lme4::lmer} does, and the result has the
#' same methods as an \code{\link{lmm_scope}} fit.
#'
#' @inheritParams lmm_scope
#' @return An object of class \code{c("lmm", "lmm_scope")}.
#' @export
#' @examplesIf lmmscope_available()
#' fit <- lmm(y ~ x1 + x5 + (1 | cluster), data = lmm_scope_example())
#' summary(fit)
lmm <- function(formula, data, REML = TRUE, subset, weights, na.action, offset,
                contrasts = NULL) {
  mcall <- match.call(expand.dots = FALSE)
  check_flag(REML, "REML")
  design <- drop_aliased_columns(build_design(formula, mcall, parent.frame(), contrasts))
  out <- call_core("lmm_arrays", X = as_bytes(design$X), y = as_bytes(design$y - design$offset),
                   Z = as_bytes(design$Z), groups = as_bytes(as.integer(design$group) - 1L),
                   names = colnames(design$X), random_names = colnames(design$Z),
                   group_name = design$parts$group_name, reml = REML)
  new_fit(out, design, mcall, "lmm")
}

# Numbers for the core as raw little-endian doubles (column-major): one copy, and no
# numpy conversion by reticulate (1.28 cannot convert matrices for numpy 2).
as_bytes <- function(x) writeBin(as.numeric(x), raw(), size = 8L, endian = "little")

check_flag <- function(x, what) {
  if (!is.logical(x) || length(x) != 1L || is.na(x)) {
    stop(what, " must be TRUE or FALSE", call. = FALSE)
  }
}

check_k <- function(k) {
  ok <- is.null(k) || identical(k, "cv") ||
    (is.numeric(k) && length(k) == 1L && !is.na(k) && k >= 0 && k == round(k))
  if (!ok) stop("k must be NULL, a non-negative whole number or \"cv\"", call. = FALSE)
}

check_a <- function(a) {
  ok <- is.null(a) || identical(a, "cv") ||
    (is.numeric(a) && length(a) == 1L && is.finite(a) && a >= 0)
  if (!ok) stop("a must be NULL, a non-negative number or \"cv\"", call. = FALSE)
}

# 1-based indices of the unpenalised columns: the intercept and always=, matched to the
# names coef() shows, with or without backticks.
unpenalised_columns <- function(names, always) {
  out <- which(names == "(Intercept)")
  if (is.null(always)) return(out)
  if (!is.character(always)) {
    stop("always must be a character vector of column names as coef() shows them", call. = FALSE)
  }
  bare <- gsub("`", "", names, fixed = TRUE)
  for (name in always) {
    j <- match(name, names)
    if (is.na(j)) j <- match(gsub("`", "", name, fixed = TRUE), bare)
    if (is.na(j)) {
      stop("always = \"", name, "\" is not a fixed-effect column; columns are named ",
           paste(utils::head(names, 8L), collapse = ", "), if (length(names) > 8L) ", ...",
           call. = FALSE)
    }
    out <- c(out, j)
  }
  sort(unique(out))
}

# As lme4 (chkRank.drop.cols): columns of a rank-deficient fixed design that a pivoted
# QR finds aliased are dropped, with lme4's message.
drop_aliased_columns <- function(design, tol = 1e-7) {
  X <- design$X
  qx <- qr(X, tol = tol, LAPACK = FALSE)
  if (qx$rank == ncol(X)) return(design)
  drop <- sort(qx$pivot[(qx$rank + 1L):ncol(X)])
  message("fixed-effect model matrix is rank deficient so dropping ", length(drop),
          if (length(drop) == 1L) " column / coefficient" else " columns / coefficients",
          " (", paste(colnames(X)[drop], collapse = ", "), ")")
  kept <- X[, -drop, drop = FALSE]
  attr(kept, "assign") <- attr(X, "assign")[-drop]
  attr(kept, "contrasts") <- attr(X, "contrasts")
  attr(kept, "col.dropped") <- stats::setNames(drop, colnames(X)[drop])
  design$X <- kept
  design
}
