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
#'   response and the grouping variables (a grouping column would duplicate the
#'   random intercept). Random effects as in lme4: any number of terms, crossed
#'   (\code{(1 | subject) + (1 | item)}), nested (\code{(1 | school/class)} is
#'   \code{(1 | school) + (1 | class:school)}), interactions (\code{(1 | a:b)}),
#'   uncorrelated (\code{(x || g)} is \code{(1 | g) + (0 + x | g)}), several
#'   terms on one factor and factor columns (\code{(0 + f | g)}). One term with
#'   one grouping column is fitted by the dense per-cluster path; anything else
#'   by lme4's sparse penalised least squares. With several terms, debiased
#'   inference clusters on the factor that nests the others (crossed terms have
#'   none: no inference, with a warning), and \code{k}, \code{a} cannot be
#'   \code{"cv"} (folds need whole clusters).
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
#'   the two p x p arrays it needs would pass 1 GiB, about 8,200 columns; a warning
#'   then says so).
#' @param conf.level Confidence level of the stored debiased intervals.
#' @param verbose Print progress.
#' @param penalize_random_slopes By default (\code{FALSE}) a fixed-effect column
#'   that is also a random slope (\code{Days} in \code{(Days | Subject)}) is kept
#'   without selection, like the intercept, as lme4 users keep a random slope's
#'   fixed effect; it is not counted in \code{k}. \code{TRUE} makes such columns
#'   candidates like any other. \code{print} and \code{summary} list the
#'   columns kept without selection and why.
#' @param a_grid The values of \code{a} tried by \code{a = "cv"} (default: the
#'   core's grid 0.1, 0.25, 0.5, 1, 2, 5, 10).
#' @param seed Seed of the cluster-to-fold assignment of \code{k = "cv"} and
#'   \code{a = "cv"}.
#' @param control Tuning constants of the core: a list made by
#'   \code{\link{lmm_scope_control}()}.
#' @return An object of class \code{lmm_scope} (plain R values) with lme4's
#'   methods (see \code{\link{lmm_scope-methods}}) and, through
#'   \code{\link{as_lmerMod}()}, lme4's ecosystem (broom.mixed, emmeans,
#'   performance, lmerTest). \code{coef_selection(fit)} gives the selection-stage
#'   estimates over every candidate column.
#' @references Li, S., Cai, T. T. and Li, H. (2022). Inference for
#'   high-dimensional linear mixed-effects models: a quasi-likelihood approach.
#'   \emph{Journal of the American Statistical Association}, 117, 1835--1846.
#' @seealso \code{\link{lmm}} for a fit without selection.
#' @export
#' @examplesIf lmmscope_available()
#' d <- lmm_scope_example()
#' fit <- lmm_scope(y ~ . + (z1 + z2 | cluster), data = d)
#' fit
#' beta <- coef_selection(fit)
#' beta[beta != 0]
lmm_scope <- function(formula, data, k = NULL, a = NULL, always = NULL,
                      criterion = c("gic", "ebic", "bic", "aic"), k_max = NULL,
                      cv_folds = 5L, REML = TRUE, subset, weights, na.action, offset,
                      contrasts = NULL, inference = NULL, conf.level = 0.95,
                      verbose = FALSE, penalize_random_slopes = FALSE, a_grid = NULL,
                      seed = 0L, control = lmm_scope_control()) {
  mcall <- match.call(expand.dots = FALSE)
  criterion <- match.arg(criterion)
  check_k(k)
  check_a(a)
  check_flag(REML, "REML")
  check_flag(penalize_random_slopes, "penalize_random_slopes")
  check_control(control)
  for (arg in c("k_max", "cv_folds", "seed")) {  # reticulate would send NA as TRUE
    value <- get(arg)
    if (!is.null(value) && length(value) == 1L && is.na(value)) {
      stop(arg, " must be a number, not NA", call. = FALSE)
    }
  }
  if (!is.null(a_grid) && !is.numeric(a_grid)) {
    stop("a_grid must be a numeric vector", call. = FALSE)  # its values: the core's checks
  }
  design <- build_design(formula, mcall, parent.frame(), contrasts)
  unpenalised <- unpenalised_columns(colnames(design$X), always)
  design$always <- setdiff(colnames(design$X)[unpenalised], "(Intercept)")
  tuning <- list(unpenalised = unpenalised - 1L, k = k, a = a, criterion = criterion,
                 k_max = k_max, cv_folds = cv_folds, reml = REML, inference = inference,
                 conf_level = conf.level, verbose = isTRUE(verbose),
                 penalize_random_slopes = penalize_random_slopes,
                 a_grid = if (!is.null(a_grid)) as.list(as.numeric(a_grid)),
                 random_state = seed, control = control_for_core(control))
  out <- if (design$several) {
    do.call(call_core, c(list("fit_terms_arrays", X = as_bytes(design$X),
                              y = as_bytes(design$y - design$offset), terms = terms_for_core(design),
                              names = colnames(design$X)), tuning))
  } else {
    do.call(call_core, c(list("fit_arrays", X = as_bytes(design$X),
                              y = as_bytes(design$y - design$offset), Z = as_bytes(design$Z),
                              groups = as_bytes(as.integer(design$group) - 1L),
                              names = colnames(design$X), random_names = colnames(design$Z),
                              group_name = design$parts$group_name), tuning))
  }
  new_fit(out, design, mcall, "lmm_scope", k_given = !is.null(k) && !identical(k, "cv"))
}

#' Fit a linear mixed model without selection
#'
#' Every fixed effect of the formula is kept; the model is fitted by REML (or
#' ML) in the Python core, as \code{lme4::lmer} does, and the result has the
#' same methods as an \code{\link{lmm_scope}} fit.
#'
#' @inheritParams lmm_scope
#' @param control Tuning constants of the refit (optimiser tolerances,
#'   convergence checks): \code{\link{lmm_scope_control}()}.
#' @return An object of class \code{c("lmm", "lmm_scope")}.
#' @export
#' @examplesIf lmmscope_available()
#' fit <- lmm(y ~ x1 + x5 + (1 | cluster), data = lmm_scope_example())
#' summary(fit)
lmm <- function(formula, data, REML = TRUE, subset, weights, na.action, offset,
                contrasts = NULL, control = lmm_scope_control()) {
  mcall <- match.call(expand.dots = FALSE)
  check_flag(REML, "REML")
  check_control(control)
  design <- build_design(formula, mcall, parent.frame(), contrasts)
  # the core's warning about aliased columns is said below as lme4's message
  out <- withCallingHandlers(if (design$several) {
    call_core("lmm_terms_arrays", X = as_bytes(design$X), y = as_bytes(design$y - design$offset),
              terms = terms_for_core(design), names = colnames(design$X), reml = REML,
              control = control_for_core(control))
  } else {
    call_core("lmm_arrays", X = as_bytes(design$X), y = as_bytes(design$y - design$offset),
              Z = as_bytes(design$Z), groups = as_bytes(as.integer(design$group) - 1L),
              names = colnames(design$X), random_names = colnames(design$Z),
              group_name = design$parts$group_name, reml = REML,
              control = control_for_core(control))
  }, warning = function(w) {
    if (grepl("rank deficient so dropping", conditionMessage(w))) invokeRestart("muffleWarning")
  })
  # the core decided which aliased columns go (lme4's rule, as Python's lmm())
  new_fit(out, drop_columns(design, chr(out$dropped)), mcall, "lmm")
}

# The random-effects terms as plain arrays for the core: each term's model matrix, the
# 0-based level code of each row, the level labels, column names and factor name.
terms_for_core <- function(design) {
  lapply(design$re_terms, function(t) {
    list(Z = as_bytes(t$Z), codes = as_bytes(as.integer(t$factor) - 1L),
         levels = as.list(levels(t$factor)), cnms = as.list(colnames(t$Z)),
         group_name = t$group_name)
  })
}

#' Tuning constants of the Python core
#'
#' The fields of the core's \code{lmmscope.Control} (as \code{lme4::lmerControl}
#' for lmer), passed to \code{lmm_scope(control = )} and \code{lmm(control = )};
#' the core checks the names and values. Fields:
#' \itemize{
#'   \item the search: \code{engine} (\code{"splicing"}, the default,
#'     \code{"skscope"} or \code{"exact"}), \code{search_effort} (extra starts,
#'     default 1), \code{enumeration_limit}, \code{restart_k}, \code{max_exchange};
#'   \item the layout: \code{gram_limit} (above this many columns the p x p Gram is
#'     not formed), \code{single_problem_rows_bytes};
#'   \item the working covariance and a: \code{unit_free_z} (Z's columns at unit
#'     root mean square, default \code{TRUE}), \code{a_relative_tol},
#'     \code{max_a_iter};
#'   \item the refit: \code{optimizer_ftol}, \code{optimizer_gtol},
#'     \code{dense_schur_limit}, \code{max_schur_pairs} (several terms: which
#'     sparse factorisation),
#'     \code{optimizer_maxiter}, \code{theta_start_scales} (a numeric vector),
#'     \code{check_conv_grad_tol}, \code{check_conv_hess_tol}, \code{singular_tol};
#'   \item the column checks (as lmerControl's check.rankX and check.scaleX):
#'     \code{rank_tol}, \code{constant_tol}, \code{duplicate_tol},
#'     \code{response_copy_tol}, \code{scale_ratio_tol};
#'   \item the debiased inference's node-wise lassos: \code{lasso_tol},
#'     \code{lasso_sigma_tol};
#'   \item \code{performance}: a named list of memory and speed settings that never
#'     change the result (\code{chunk_bytes}, \code{column_tile},
#'     \code{inference_auto_gram_bytes}, ...: the core's \code{Performance}).
#' }
#'
#' @param ... Named fields of the core's \code{Control}; unset ones keep the
#'   core's defaults.
#' @return A list of class \code{lmm_scope_control}.
#' @export
#' @examples
#' lmm_scope_control(search_effort = 2, unit_free_z = FALSE)
#' lmm_scope_control(engine = "exact", performance = list(column_tile = 128))
lmm_scope_control <- function(...) {
  values <- list(...)
  if (length(values) && (is.null(names(values)) || any(!nzchar(names(values))))) {
    stop("lmm_scope_control() takes named options, e.g. lmm_scope_control(search_effort = 2)",
         call. = FALSE)
  }
  plain <- function(v) (is.numeric(v) && length(v) >= 1L && !anyNA(v)) ||
    ((is.logical(v) || is.character(v)) && length(v) == 1L && !is.na(v))
  bad <- !vapply(values, function(v) plain(v) || (is.list(v) && length(v) &&
                                                    !is.null(names(v)) && all(vapply(v, plain, TRUE))),
                 TRUE)
  if (any(bad)) {
    stop("control option(s) ", paste(names(values)[bad], collapse = ", "),
         " must be numbers, TRUE/FALSE, one string or (performance) a named list of those",
         call. = FALSE)
  }
  structure(values, class = "lmm_scope_control")
}

check_control <- function(control) {
  if (!inherits(control, "lmm_scope_control")) {
    stop("control must be made by lmm_scope_control(...)", call. = FALSE)
  }
}

control_for_core <- function(control) if (length(control)) unclass(control)

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

# The design without the columns the core dropped as aliased (attribute col.dropped, as
# lme4's chkRank.drop.cols leaves on X).
drop_columns <- function(design, names) {
  if (!length(names)) return(design)
  X <- design$X
  drop <- match(names, colnames(X))
  message("fixed-effect model matrix is rank deficient so dropping ", length(drop),
          if (length(drop) == 1L) " column / coefficient" else " columns / coefficients",
          " (", paste(names, collapse = ", "), ")")
  kept <- X[, -drop, drop = FALSE]
  attr(kept, "assign") <- attr(X, "assign")[-drop]
  attr(kept, "contrasts") <- attr(X, "contrasts")
  attr(kept, "col.dropped") <- stats::setNames(drop, names)
  design$X <- kept
  design
}
