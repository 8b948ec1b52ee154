# lme4's ecosystem (broom.mixed, emmeans, performance, lmerTest, drop1, confint) on
# lmmscope fits, through one conversion: the fit's selected model as a genuine lme4
# merMod evaluated at the fitted theta. Every package then runs its own merMod code on
# it, so its numbers are its numbers on lmer's fit of the same model (lmer reaches
# the same optimum); no method of those packages is re-implemented here.

#' The selected model as an lme4 fit
#'
#' Builds the \code{lme4::lmerMod} of the model an \code{\link{lmm_scope}} (or
#' \code{\link{lmm}}) fit ended with, evaluated at the fit's variance parameters
#' without re-optimising them: \code{lme4::lmer(formula(fit), data, REML, start =
#' list(theta = getME(fit, "theta")), control = lmerControl(optimizer = NULL))} on
#' the variables the fit stored (the selected model's columns, on the rows used).
#' The fixed effects, their covariance, the conditional modes and the likelihood
#' are lme4's at that theta; the result is checked to reproduce the fit's
#' log-likelihood. No Python is needed.
#'
#' This is how lmmscope fits reach lme4's ecosystem. \code{broom.mixed}'s
#' \code{tidy}/\code{glance}/\code{augment}, \code{emmeans}, \code{performance}'s
#' \code{r2}, \code{icc}, \code{model_performance}, \code{check_model},
#' \code{drop1}, \code{anova(fit)} of one model and \code{confint(fit, method =
#' "Wald" | "profile" | "boot")} take the fit itself and use this conversion;
#' lmerTest's Satterthwaite degrees of freedom and p-values come from
#' \code{lmerTest::as_lmerModLmerTest(as_lmerMod(fit))}. The stored call is an
#' ordinary \code{lme4::lmer} call on the stored data, so \code{update()},
#' \code{drop1()} and profiling refit with lme4's optimiser as they would for
#' lmer's own fit.
#'
#' These methods treat the selected model as if it had been chosen before seeing
#' the data: their standard errors, tests and intervals ignore the selection.
#' Intervals that account for it are the debiased ones of \code{\link{inference}}
#' and \code{confint(fit, method = "debiased")}.
#'
#' @param fit An \code{lmm_scope} or \code{lmm} fit.
#' @param tol Largest accepted absolute difference between lme4's log-likelihood
#'   at the fit's theta and the fit's own.
#' @return An object of class \code{lmerMod}.
#' @export
#' @examplesIf lmmscope_available() && requireNamespace("lme4", quietly = TRUE)
#' fit <- lmm_scope(y ~ . + (z1 + z2 | cluster), data = lmm_scope_example())
#' m <- as_lmerMod(fit)
#' all.equal(as.numeric(logLik(m)), as.numeric(logLik(fit)))
#' lme4::fixef(m)
as_lmerMod <- function(fit, tol = 1e-6) {
  if (!inherits(fit, "lmm_scope")) {
    stop("as_lmerMod() takes an lmm_scope or lmm fit, not a ", class(fit)[1L], call. = FALSE)
  }
  if (!requireNamespace("lme4", quietly = TRUE)) {
    stop("as_lmerMod() needs the R package lme4: install.packages('lme4') ",
         "(Debian/Ubuntu: apt install r-cran-lme4)", call. = FALSE)
  }
  if (is.null(fit$data)) {
    stop("this fit was made by an older lmmscope and holds no data for lme4: refit it",
         call. = FALSE)
  }
  f <- stats::formula(fit)
  data_name <- if (is.name(fit$call$data)) deparse1(fit$call$data) else "data"
  env <- new.env(parent = environment(f) %||% globalenv())
  assign(data_name, fit$data, envir = env)
  environment(f) <- env
  used <- all.vars(f)
  contrasts <- fit$contrasts[names(fit$contrasts) %in% vapply(
    as.list(attr(stats::terms(f), "variables"))[-1L], deparse1, "")]
  args <- list(formula = f, data = as.name(data_name), REML = fit$REML)
  if (length(contrasts) && !is.null(fit$call$contrasts)) args$contrasts <- contrasts
  if (!is.null(fit$data[[OFFSET_COLUMN]])) args$offset <- as.name(OFFSET_COLUMN)
  call <- as.call(c(list(quote(lme4::lmer)), args))
  at_theta <- call
  at_theta$start <- list(theta = unname(fit$theta))
  at_theta$control <- lme4::lmerControl(optimizer = NULL)
  m <- eval(at_theta, env)
  m@call <- call  # an ordinary lmer call: update(), drop1() and profile() refit as lme4 does
  # lmer's default optimiser for whatever refits this model (profile, drop1, refit), and
  # the convergence of the optimum it stands at: lmmscope's, checked by the core
  m@optinfo$optimizer <- "nloptwrap"
  m@optinfo$control <- list(print_level = 0)
  m@optinfo$conv <- list(opt = if (isTRUE(fit$converged)) 0 else 1, lme4 = list())
  m@optinfo$message <- "lmmscope's optimum; lme4 evaluated the model there without optimising"
  gap <- abs(as.numeric(stats::logLik(m)) - fit$loglik)
  if (!(gap <= tol)) {
    stop(sprintf(paste("internal error: lme4's log-likelihood at the fit's theta (%.10g)",
                       "differs from the fit's (%.10g) by %.3g"),
                 as.numeric(stats::logLik(m)), fit$loglik, gap), call. = FALSE)
  }
  m
}

# as_lmerMod() of the last fit converted: packages such as emmeans ask twice per call.
.lmer_cache <- new.env(parent = emptyenv())

lmer_of <- function(fit) {
  if (!identical(.lmer_cache$fit, fit)) {
    .lmer_cache$model <- as_lmerMod(fit)
    .lmer_cache$fit <- fit
  }
  .lmer_cache$model
}

need <- function(pkg, what) {
  if (!requireNamespace(pkg, quietly = TRUE)) {
    stop(what, " needs the R package ", pkg, ", which is not installed", call. = FALSE)
  }
}

#' lme4's ecosystem on lmmscope fits
#'
#' Methods that hand the fit's selected model, as \code{\link{as_lmerMod}(x)},
#' to the package that owns the generic: the result is that package's result on
#' lme4's fit of the same model. \code{tidy} of an \code{lmm_scope} fit adds the
#' selection's own columns to broom.mixed's table: \code{selection}
#' (\code{"selected"} or \code{"kept"}: unpenalised, see
#' \code{\link{lmm_scope}}'s \code{always} and \code{penalize_random_slopes}) and
#' \code{estimate_selection} (\code{\link{coef_selection}}) on the fixed-effect
#' rows.
#'
#' @param x,object,model An \code{lmm_scope} or \code{lmm} fit.
#' @param ... Passed to the package's merMod method.
#' @param trms,xlev,grid Passed to emmeans' merMod method.
#' @name lmm_scope-ecosystem
#' @return As the package's method for an lme4 fit.
#' @examplesIf lmmscope_available() && requireNamespace("broom.mixed", quietly = TRUE)
#' fit <- lmm_scope(y ~ . + (z1 + z2 | cluster), data = lmm_scope_example())
#' broom.mixed::tidy(fit)
#' drop1(fit)
NULL

#' @rdname lmm_scope-ecosystem
#' @exportS3Method generics::tidy
tidy.lmm_scope <- function(x, ...) {
  need("broom.mixed", "tidy() of an lmmscope fit")
  out <- generics::tidy(lmer_of(x), ...)
  if (inherits(x, "lmm") || !("effect" %in% names(out))) return(out)
  fixed <- which(out$effect == "fixed")
  if (length(fixed) != length(x$fixef)) return(out)
  names_fit <- names(x$fixef)
  out$selection <- NA_character_
  out$selection[fixed] <- ifelse(names_fit %in% x$unpenalised, "kept", "selected")
  out$estimate_selection <- NA_real_
  out$estimate_selection[fixed] <- unname(x$coefficients[names_fit])
  out
}

#' @rdname lmm_scope-ecosystem
#' @exportS3Method generics::glance
glance.lmm_scope <- function(x, ...) {
  need("broom.mixed", "glance() of an lmmscope fit")
  generics::glance(lmer_of(x), ...)
}

#' @rdname lmm_scope-ecosystem
#' @exportS3Method generics::augment
augment.lmm_scope <- function(x, ...) {
  need("broom.mixed", "augment() of an lmmscope fit")
  generics::augment(lmer_of(x), ...)
}

#' @rdname lmm_scope-ecosystem
#' @exportS3Method emmeans::recover_data
recover_data.lmm_scope <- function(object, ...) emmeans::recover_data(lmer_of(object), ...)

#' @rdname lmm_scope-ecosystem
#' @exportS3Method emmeans::emm_basis
emm_basis.lmm_scope <- function(object, trms, xlev, grid, ...) {
  emmeans::emm_basis(lmer_of(object), trms, xlev, grid, ...)
}

#' @rdname lmm_scope-ecosystem
#' @exportS3Method performance::r2
r2.lmm_scope <- function(model, ...) performance::r2(lmer_of(model), ...)

#' @rdname lmm_scope-ecosystem
#' @exportS3Method performance::model_performance
model_performance.lmm_scope <- function(model, ...) {
  performance::model_performance(lmer_of(model), ...)
}

#' @rdname lmm_scope-ecosystem
#' @exportS3Method performance::check_model
check_model.lmm_scope <- function(x, ...) performance::check_model(lmer_of(x), ...)

# insight's view of the fit (performance::icc asks insight whether the model is mixed
# and for its variance components): lme4's answers on the converted model.
#' @exportS3Method insight::is_mixed_model
is_mixed_model.lmm_scope <- function(x) TRUE

#' @exportS3Method insight::get_variance
get_variance.lmm_scope <- function(x, ...) insight::get_variance(lmer_of(x), ...)

#' @rdname lmm_scope-ecosystem
#' @export
drop1.lmm_scope <- function(object, ...) stats::drop1(lmer_of(object), ...)
