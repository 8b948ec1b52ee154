# The Python core and lme4 are needed to fit. Outside CI a test without them skips,
# saying why; in CI (env CI set) their absence fails the whole run instead.
in_ci <- function() nzchar(Sys.getenv("CI"))

missing_requirement <- function(what) {
  msg <- paste0(what, " is not available: ", if (what == "the lmmscope Python core")
    "set RETICULATE_PYTHON or run lmmscope::install_lmmscope()" else "install it")
  if (in_ci()) stop("CI: ", msg, call. = FALSE)
  testthat::skip(msg)
}

if (in_ci() && !lmmscope::lmmscope_available()) {
  stop("CI: the lmmscope Python core cannot be loaded by reticulate (Python: ",
       Sys.getenv("RETICULATE_PYTHON", "<reticulate's choice>"), ")", call. = FALSE)
}

skip_if_no_lmmscope <- function() {
  if (!lmmscope_available()) missing_requirement("the lmmscope Python core")
}

skip_if_no_lme4 <- function() {
  if (!requireNamespace("lme4", quietly = TRUE)) missing_requirement("lme4")
}

# lmer with its optimiser converged tightly, so differences are ours, not its tolerance.
tight <- function() {
  lme4::lmerControl(optimizer = "bobyqa", optCtrl = list(rhoend = 1e-12, maxfun = 1e5))
}
lmer_tight <- function(...) lme4::lmer(..., control = tight())

# Largest difference relative to the reference's largest magnitude (matrices with
# zeros in them compare on their scale).
expect_rel <- function(ours, theirs, tol) {
  ours <- as.numeric(as.matrix(ours))
  theirs <- as.numeric(as.matrix(theirs))
  expect_equal(length(ours), length(theirs))
  diff <- max(abs(ours - theirs)) / max(abs(theirs), 1e-300)
  expect_lte(diff, tol)
}

expect_abs <- function(ours, theirs, tol) {
  ours <- as.numeric(as.matrix(ours))
  theirs <- as.numeric(as.matrix(theirs))
  expect_equal(length(ours), length(theirs))
  expect_equal(is.na(ours), is.na(theirs))
  expect_lte(max(abs(ours - theirs), na.rm = TRUE), tol)
}

# Agreement with an lmer fit of the same model, at the tolerances measured on R's
# datasets (fixef, logLik ~1e-8 relative; variance components ~1e-6; conditional
# modes and predictions ~1e-5 absolute).
expect_same_as_lmer <- function(fit, ref, newdata) {
  expect_equal(names(fixef(fit)), names(lme4::fixef(ref)))
  expect_rel(fixef(fit), lme4::fixef(ref), 1e-6)
  expect_rel(vcov(fit), as.matrix(vcov(ref)), 1e-5)
  expect_rel(sigma(fit), sigma(ref), 1e-6)
  expect_rel(logLik(fit), logLik(ref), 1e-8)
  expect_rel(logLik(fit, REML = FALSE), logLik(ref, REML = FALSE), 1e-8)
  expect_equal(attr(logLik(fit), "df"), attr(logLik(ref), "df"))
  expect_rel(AIC(fit), AIC(ref), 1e-8)
  expect_rel(BIC(fit), BIC(ref), 1e-8)
  ours <- as.data.frame(VarCorr(fit))
  theirs <- as.data.frame(lme4::VarCorr(ref))
  expect_equal(ours[c("grp", "var1", "var2")], theirs[c("grp", "var1", "var2")])
  expect_rel(ours$vcov, theirs$vcov, 1e-5)
  expect_rel(ours$sdcor, theirs$sdcor, 1e-5)
  expect_abs(ranef(fit)[[1]], lme4::ranef(ref)[[1]], 1e-4)
  expect_equal(rownames(ranef(fit)[[1]]), rownames(lme4::ranef(ref)[[1]]))
  expect_abs(fitted(fit), fitted(ref), 1e-4)
  expect_abs(residuals(fit), residuals(ref), 1e-4)
  expect_abs(predict(fit, newdata), predict(ref, newdata), 1e-4)
  expect_abs(predict(fit, newdata, re.form = NA), predict(ref, newdata, re.form = NA), 1e-6)
}
