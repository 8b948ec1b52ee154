#' lmmscope: sparse fixed-effect selection in high-dimensional linear mixed models
#'
#' \code{\link{lmm_scope}} selects fixed effects by the quasi-likelihood
#' best-subset estimator and refits the selected model as lme4 does. The
#' numerical core is the Python package \code{lmmscope}, reached through
#' reticulate; see \code{\link{install_lmmscope}}.
#'
#' @keywords internal
#' @importFrom stats coef confint fitted formula logLik nobs predict residuals sigma vcov
#' @importFrom stats simulate deviance df.residual model.frame model.matrix terms anova getCall
#' @importFrom stats drop1
#' @importFrom graphics plot
#' @rawNamespace S3method(lme4::getME, lmm_scope)
#' @rawNamespace S3method(lme4::isREML, lmm_scope)
#' @rawNamespace S3method(lme4::ngrps, lmm_scope)
"_PACKAGE"
