test_that("sleepstudy with every term kept agrees with lmer", {
  skip_if_no_lmmscope()
  skip_if_not_installed("lme4")
  data("sleepstudy", package = "lme4")
  ctrl <- lme4::lmerControl(optimizer = "bobyqa", optCtrl = list(rhoend = 1e-12, maxfun = 1e5))
  for (reml in c(TRUE, FALSE)) {
    ref <- lme4::lmer(Reaction ~ Days + (Days | Subject), sleepstudy, REML = reml, control = ctrl)
    fit <- lmm_scope(Reaction ~ Days + (Days | Subject), sleepstudy, k = 1,
                     method = if (reml) "REML" else "ML")
    expect_equal(fixef(fit), lme4::fixef(ref), tolerance = 1e-4)
    expect_equal(sqrt(diag(vcov(fit))), sqrt(diag(as.matrix(vcov(ref)))), tolerance = 1e-4)
    expect_equal(sigma(fit), sigma(ref), tolerance = 1e-3)
    expect_equal(as.numeric(logLik(fit)), as.numeric(logLik(ref)), tolerance = 1e-4 / 900)
    expect_lt(abs(as.numeric(logLik(fit)) - as.numeric(logLik(ref))), 1e-4)
    expect_equal(attr(logLik(fit), "df"), attr(logLik(ref), "df"))
    ours <- as.data.frame(VarCorr(fit))
    theirs <- as.data.frame(lme4::VarCorr(ref))
    expect_equal(ours$sdcor, theirs$sdcor, tolerance = 1e-3)
    expect_equal(ours$var1, theirs$var1)
    expect_equal(as.matrix(ranef(fit)$Subject), as.matrix(lme4::ranef(ref)$Subject),
                 tolerance = 1e-3, ignore_attr = TRUE)
    expect_equal(AIC(fit), AIC(ref), tolerance = 1e-6)
    expect_equal(unname(predict(fit, newdata = sleepstudy[1:5, ], re.form = NA)),
                 unname(predict(ref, newdata = sleepstudy[1:5, ], re.form = NA)), tolerance = 1e-6)
  }
})
