# Check a fit against lme4::lmer, the reference implementation, in one call.
#
# The comparison is the Python core's (lmmscope.lme4_comparison.compare_values), the one used by
# Python's check_against_lme4(), `lmmscope validate` and the tests; lme4's side is the R
# file lme4_reference.R shipped with the core, sourced here as Python runs it.  This file
# only gathers the fit's design and numbers through lme4's accessor generics (getME X/y/
# flist/cnms/mmList/theta, isREML, fixef, VarCorr, ranef, sigma, logLik, fitted), so it
# works for lmm_scope()/lmm() fits and, as its tests use, for lmer fits themselves.

#' Check a fit against lme4::lmer
#'
#' Refits the model that \code{fit} ended with (for \code{\link{lmm_scope}()}: the selected columns
#' plus the unpenalised ones) with \code{lme4::lmer()} and compares every quantity it
#' reports.  The refit uses the fit's own design columns (\code{getME(fit, "X")}), not the
#' formula, so a factor enters both fits as the same 0/1 columns with the same
#' reference level, whatever contrasts are set.  lmer runs BOBYQA to \code{rhoend = 1e-12}
#' (its default may stop short of the optimum).  Every random-effects term is compared.
#'
#' The comparison is the Python core's (\code{lmmscope.lme4_comparison.compare_values}, the same
#' as Python's \code{check_against_lme4()}): \code{rel_diff = abs_diff / max(|lme4|,
#' scale)}, with \code{scale} the unit the quantity is estimated on, so that values near 0
#' are judged against their own precision: a fixed effect's lme4 standard error; lme4's
#' sigma for random-effect SDs, sigma, fitted values and conditional modes; for a
#' correlation, 1 or sigma / the smaller of its two SDs when that is larger (the
#' correlation is only determined to that precision).  Standard errors are compared
#' relative to themselves; logLik, AIC, BIC, the deviance and isSingular by their
#' absolute difference.  Fitted values and conditional modes show their worst element;
#' conditional modes are judged at \code{10 * tol}.  A correlation involving an SD below
#' \code{tol * sigma} in lme4 is not identified (singular fit): status
#' \code{"not_identified"}.  A quantity on one side only fails.
#'
#' When a quantity differs, lme4's own deviance function (\code{lmer(..., devFunOnly =
#' TRUE)}) is evaluated at both optima; if ours is lower, lmer is re-evaluated at our
#' theta (\code{lmerControl(optimizer = NULL)}) and rows that agree with that get status
#' \code{"lme4_optimum_worse"} instead of \code{"FAIL"}.
#'
#' @param fit A fit of \code{\link{lmm_scope}()} or \code{lmm()} (or any fit with lme4's \code{getME()}
#'   accessors, such as an lmer fit).
#' @param tol Largest relative difference accepted.
#' @return A data frame with columns \code{quantity}, \code{lmmscope}, \code{lme4}, \code{abs_diff},
#'   \code{rel_diff}, \code{status} (one row per fixed effect, standard error, random-effect
#'   SD and correlation, sigma, logLik, AIC, BIC, the deviance at our theta, the worst
#'   fitted value, the worst conditional mode of each term's column, isSingular) and
#'   attributes \code{passed} (logical), \code{lmer} (the lmer fit), \code{formula} (the
#'   lmer formula, on the columns of attribute \code{data}), \code{deviance} (lme4's
#'   deviance function at our theta and at lme4's), \code{lme4_optimum_worse},
#'   \code{singular}, \code{verdict} and \code{messages} (lmer's warnings and messages).
#' @examples
#' if (lmmscope_available() && requireNamespace("lme4", quietly = TRUE)) {
#'   fit <- lmm_scope(Reaction ~ Days + (Days | Subject), lme4::sleepstudy, k = 0)
#'   check <- check_against_lmer(fit)
#'   check
#'   attr(check, "passed")
#' }
#' @export
check_against_lmer <- function(fit, tol = 1e-6) {
  .require_lme4()
  if (!is.numeric(tol) || length(tol) != 1L || !(tol > 0)) {
    stop("tol must be one positive number", call. = FALSE)
  }
  compare <- .core_comparison()
  reference <- .lme4_reference()
  X <- as.matrix(lme4::getME(fit, "X"))
  ref <- reference$lmer_check_reference(
    as.numeric(lme4::getME(fit, "y")), X, colnames(X), .random_terms(fit),
    REML = isTRUE(lme4::isREML(fit)), theta = as.numeric(lme4::getME(fit, "theta")))
  # our VarCorr names a second term on one factor "g.1" as lme4 does: the same relabelling
  factors <- names(ngrps(fit))
  ours <- reference$lmer_values(fit, rename = list(group = stats::setNames(factors, factors)),
                                singular = isSingular(fit))
  plain <- c("values", "deviance_at_theta", "deviance_at_lmer", "at_theta", "messages", "formula")
  check <- tryCatch(compare(.as_columns(ours), .as_columns(ref[plain]), tol),
                    error = function(e) stop(python_error_message(e), call. = FALSE))
  value <- function(name) reticulate::py_to_r(reticulate::py_get_attr(check, name))
  # column by column: this reticulate may not know pandas' DataFrame under its newer name
  columns <- reticulate::py_get_attr(check, "table")$to_dict("list")
  table <- as.data.frame(lapply(columns, unlist), stringsAsFactors = FALSE)
  structure(table, class = c("lmer_check", "data.frame"), passed = isTRUE(value("passed")),
            lmer = ref$fit, tol = tol, formula = ref$formula, data = ref$data,
            deviance = c(at_ours = ref$deviance_at_theta, at_lmer = ref$deviance_at_lmer),
            lme4_optimum_worse = isTRUE(value("lme4_optimum_worse")),
            singular = c(lmmscope = ours$singular, lme4 = ref$values$singular),
            verdict = check$verdict(), messages = ref$messages)
}

.require_lme4 <- function(available = requireNamespace("lme4", quietly = TRUE)) {
  if (!available) {
    stop("check_against_lmer() needs the R package lme4, which is not installed: ",
         "install.packages('lme4') (Debian/Ubuntu: apt install r-cran-lme4)", call. = FALSE)
  }
  invisible(TRUE)
}

# The Python core's comparison (one clear error when the core is missing).
.core_comparison <- function() {
  core()
  reticulate::import("lmmscope.lme4_comparison")$compare_values
}

# Data frames as plain lists of columns: reticulate would turn a one-row data frame into
# scalars that pandas refuses as a DataFrame (the core reads either form).
.as_columns <- function(x) {
  if (is.data.frame(x)) return(as.list(x))
  if (is.list(x)) return(lapply(x, .as_columns))
  x
}

.reference_cache <- new.env(parent = emptyenv())

# lme4_reference.R, shipped with the Python core, sourced once into an environment whose
# parent is this namespace (so lme4's generics dispatch to our methods from there).
.lme4_reference <- function() {
  if (is.null(.reference_cache$env)) {
    path <- system.file("python", "python", "lmmscope", "lme4_reference.R", package = "lmmscope")
    if (!nzchar(path)) {
      stop("lme4_reference.R is missing from this installation of lmmscope: reinstall it",
           call. = FALSE)
    }
    env <- new.env(parent = asNamespace("lmmscope"))
    sys.source(path, envir = env)
    .reference_cache$env <- env
  }
  .reference_cache$env
}

# One list(Z, names, group, group_name) per random-effects term, as lmer_design() takes.
.random_terms <- function(fit) {
  flist <- lme4::getME(fit, "flist")
  mm <- lme4::getME(fit, "mmList")
  cnms <- lme4::getME(fit, "cnms")
  assign <- attr(flist, "assign")
  if (is.null(assign)) assign <- match(names(cnms), names(flist))
  lapply(seq_along(mm), function(i) {
    list(Z = as.matrix(mm[[i]]), names = cnms[[i]],
         group = as.character(flist[[assign[i]]]), group_name = names(cnms)[i])
  })
}

#' @export
print.lmer_check <- function(x, ...) {
  if (is.null(attr(x, "passed"))) return(NextMethod())
  old <- options(width = max(getOption("width"), 150))
  on.exit(options(old))
  method <- if (lme4::isREML(attr(x, "lmer"))) "REML" else "ML"
  cat(sprintf("lmmscope vs lme4::lmer (%s): %s\n", method, attr(x, "formula")))
  print(as.data.frame(unclass(x))[, names(x)], digits = 8, row.names = FALSE)
  cat(attr(x, "verdict"), "\n", sep = "")
  invisible(x)
}
