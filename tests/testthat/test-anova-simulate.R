test_that("anova of nested fits matches lme4's anova, also against an lmer fit", {
  skip_if_no_lmmscope()
  skip_if_no_lme4()
  d <- lme4::sleepstudy
  small <- lmm(Reaction ~ 1 + (Days | Subject), d)
  big <- lmm(Reaction ~ Days + (Days | Subject), d)
  small_ref <- lmer_tight(Reaction ~ 1 + (Days | Subject), d)
  big_ref <- lmer_tight(Reaction ~ Days + (Days | Subject), d)
  ours <- suppressMessages(anova(small, big))
  theirs <- suppressMessages(anova(small_ref, big_ref))
  expect_message(anova(small, big), "refitting model\\(s\\) with ML")
  expect_equal(colnames(ours), colnames(theirs))
  expect_equal(ours$npar, theirs$npar)
  expect_equal(ours$Df, theirs$Df)
  for (col in c("AIC", "BIC", "logLik", "deviance", "Chisq", "Pr(>Chisq)")) {
    expect_rel(ours[[col]][!is.na(ours[[col]])], theirs[[col]][!is.na(theirs[[col]])], 1e-6)
  }
  mixed <- suppressMessages(anova(small, big_ref))
  expect_rel(mixed$Chisq[2], theirs$Chisq[2], 1e-6)
  # an lmm_scope selection fit compared with a fit that keeps one more candidate
  d$noise <- rnorm(nrow(d))
  sel <- lmm_scope(Reaction ~ Days + noise + (Days | Subject), d, k = 0)
  expect_length(sel$support, 0)  # Days, a random slope, is unpenalised: kept without k
  expect_true("Days" %in% names(fixef(sel)))
  more <- lmer_tight(Reaction ~ Days + noise + (Days | Subject), d)
  expect_rel(suppressMessages(anova(sel, more))$Chisq[2],
             suppressMessages(anova(big_ref, more))$Chisq[2], 1e-6)
  # one model: lme4's table of the fixed-effect terms
  one <- anova(big)
  expect_equal(dimnames(one), dimnames(anova(big_ref)))
  expect_rel(as.matrix(one), as.matrix(anova(big_ref)), 1e-6)
})

test_that("simulate draws as lme4's simulate does, with the same random numbers", {
  skip_if_no_lmmscope()
  skip_if_no_lme4()
  d <- lme4::sleepstudy
  fit <- lmm(Reaction ~ Days + (Days | Subject), d)
  ref <- lmer_tight(Reaction ~ Days + (Days | Subject), d)
  expect_abs(simulate(fit, nsim = 3, seed = 11), simulate(ref, nsim = 3, seed = 11), 1e-3)
  expect_abs(simulate(fit, seed = 2, use.u = TRUE), simulate(ref, seed = 2, use.u = TRUE), 1e-3)
  expect_equal(dim(simulate(fit, nsim = 2)), c(180L, 2L))
})
