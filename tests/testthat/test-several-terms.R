# Several random-effects terms (crossed, nested, ||, several terms on one factor, factor
# columns) against lme4::lmer on the same model (lmer converged tightly). Tolerances: the
# worst agreement measured over these data sets (4 runs), times about 10: logLik 6e-13
# relative (the ML criterion at REML estimates 9e-10), fixef 2e-9 relative, vcov 3e-7,
# variances 3e-7 relative, sd/cor 1.1e-6 absolute (6e-6 on the factor-column fit),
# conditional modes 1.6e-6, their conditional variances 2.8e-6 (3.8e-6 factor columns),
# predictions 1.4e-6, simulate 4.4e-6. What remains is lmer's: the core's optimum is
# polished to a gradient of ~1e-13, while lmer_tight's theta moves by ~1e-7 relative from
# one R process to another.

# Every lme4 accessor of a several-term fit against lmer's.
expect_terms_like_lmer <- function(fit, ref, newdata, tol = list(),
                                   alone = lme4::findbars(formula(ref))) {
  tol <- utils::modifyList(list(fixef = 5e-8, vcov = 1e-5, vc = 1e-5, sdcor = 2e-5,
                                ranef = 5e-5, postvar = 3e-5, pred = 5e-5), tol)
  expect_equal(names(fixef(fit)), names(lme4::fixef(ref)))
  expect_rel(logLik(fit), logLik(ref), 1e-10)
  expect_rel(logLik(fit, REML = FALSE), logLik(ref, REML = FALSE), 1e-8)
  expect_equal(attr(logLik(fit), "df"), attr(logLik(ref), "df"))
  expect_rel(fixef(fit), lme4::fixef(ref), tol$fixef)
  expect_rel(vcov(fit), as.matrix(vcov(ref)), tol$vcov)
  expect_rel(sigma(fit), sigma(ref), tol$vc)
  ours <- as.data.frame(VarCorr(fit))
  theirs <- as.data.frame(lme4::VarCorr(ref))
  expect_equal(ours[c("grp", "var1", "var2")], theirs[c("grp", "var1", "var2")])
  expect_rel(ours$vcov, theirs$vcov, tol$vc)
  expect_abs(ours$sdcor, theirs$sdcor, tol$sdcor)
  expect_equal(names(getME(fit, "theta")), names(lme4::getME(ref, "theta")))
  expect_equal(getME(fit, "lower"), lme4::getME(ref, "lower"))
  expect_equal(ngrps(fit), lme4::ngrps(ref))
  re_ours <- ranef(fit, condVar = TRUE)
  re_theirs <- lme4::ranef(ref, condVar = TRUE)
  expect_equal(names(re_ours), names(re_theirs))
  for (g in names(re_theirs)) {
    expect_equal(dimnames(re_ours[[g]]), dimnames(re_theirs[[g]]))
    expect_abs(re_ours[[g]], re_theirs[[g]], tol$ranef)
    pv_ours <- attr(re_ours[[g]], "postVar")
    pv_theirs <- attr(re_theirs[[g]], "postVar")
    expect_equal(names(pv_ours), names(pv_theirs))
    expect_abs(unlist(pv_ours), unlist(pv_theirs), tol$postvar)
  }
  co_ours <- coef(fit)
  co_theirs <- coef(ref)
  for (g in names(co_theirs)) expect_abs(co_ours[[g]], co_theirs[[g]][names(co_ours[[g]])], tol$ranef)
  expect_abs(fitted(fit), fitted(ref), tol$pred)
  expect_abs(residuals(fit), residuals(ref), tol$pred)
  expect_abs(predict(fit, newdata), predict(ref, newdata), tol$pred)
  expect_abs(predict(fit, newdata, re.form = NA), predict(ref, newdata, re.form = NA), tol$pred)
  for (bar in alone) {  # each term alone, as lme4's re.form
    form <- stats::as.formula(paste0("~(", deparse1(bar), ")"))
    expect_abs(predict(fit, newdata, re.form = form), predict(ref, newdata, re.form = form),
               tol$pred)
  }
  m <- as_lmerMod(fit)  # lme4 at the fit's theta (theta in lme4's order): same likelihood
  expect_rel(logLik(m), logLik(fit), 1e-10)
  expect_output(print(fit), "Number of obs: .*groups: ")
  expect_output(print(summary(fit)), "Scaled residuals")
}

test_that("crossed terms (Penicillin: (1 | plate) + (1 | sample)) agree with lmer", {
  skip_if_no_lmmscope()
  skip_if_no_lme4()
  d <- lme4::Penicillin
  fit <- lmm(diameter ~ 1 + (1 | plate) + (1 | sample), d)
  ref <- lmer_tight(diameter ~ 1 + (1 | plate) + (1 | sample), d)
  expect_terms_like_lmer(fit, ref, d[c(1, 50, 144), ])
  expect_output(print(fit), "plate, 24; sample, 6")
  # a new plate predicts at population level for that term only, as lme4
  new <- d[1:2, ]
  new$plate <- factor(c("zz", "a"))
  expect_error(predict(fit, new), "new levels detected in newdata for grouping factor plate: zz")
  expect_abs(predict(fit, new, allow.new.levels = TRUE),
             predict(ref, new, allow.new.levels = TRUE), 1e-6)
  # the design syntax puts the same terms after its one '|'
  design <- lmm(diameter ~ 1 | (1 | plate) + (1 | sample), d)
  expect_rel(logLik(design), logLik(fit), 1e-12)
  expect_equal(as.data.frame(VarCorr(design))$grp, as.data.frame(VarCorr(fit))$grp)
})

test_that("nested terms (Pastes: (1 | batch/cask)) agree with lmer, ML too", {
  skip_if_no_lmmscope()
  skip_if_no_lme4()
  d <- lme4::Pastes
  fit <- lmm(strength ~ 1 + (1 | batch/cask), d)
  ref <- lmer_tight(strength ~ 1 + (1 | batch/cask), d)
  expect_terms_like_lmer(fit, ref, d[c(1, 30, 60), ])
  expect_equal(names(ranef(fit)), c("cask:batch", "batch"))
  fit_ml <- lmm(strength ~ 1 + (1 | batch/cask), d, REML = FALSE)
  ref_ml <- lmer_tight(strength ~ 1 + (1 | batch/cask), d, REML = FALSE)
  expect_terms_like_lmer(fit_ml, ref_ml, d[c(1, 30, 60), ])
  # (1 | a:b) alone is one term whose factor is the interaction
  one <- lmm(strength ~ 1 + (1 | cask:batch), d)
  expect_rel(logLik(one), logLik(lmer_tight(strength ~ 1 + (1 | cask:batch), d)), 1e-10)
})

test_that("uncorrelated terms (sleepstudy: (Days || Subject)) agree with lmer", {
  skip_if_no_lmmscope()
  skip_if_no_lme4()
  d <- lme4::sleepstudy
  fit <- lmm(Reaction ~ Days + (Days || Subject), d)
  ref <- lmer_tight(Reaction ~ Days + (Days || Subject), d)
  expect_terms_like_lmer(fit, ref, d[c(1, 95, 180), ])
  expect_equal(names(VarCorr(fit)), c("Subject", "Subject.1"))
  expect_true(attr(check_against_lmer(fit), "passed"))  # "Subject.1" named alike on both sides
  # the same model written as two terms on one factor
  two <- lmm(Reaction ~ Days + (1 | Subject) + (0 + Days | Subject), d)
  expect_rel(logLik(two), logLik(fit), 1e-10)
})

test_that("a factor's columns as random effects ((0 + f | g)) next to another term", {
  skip_if_no_lmmscope()
  skip_if_no_lme4()
  d <- lme4::sleepstudy
  d$period <- factor(ifelse(d$Days < 5, "early", "late"))
  d$block <- factor(d$Days %% 5)
  fit <- lmm(Reaction ~ Days + (0 + period | Subject) + (1 | block), d)
  ref <- suppressMessages(lmer_tight(Reaction ~ Days + (0 + period | Subject) + (1 | block), d))
  # lme4's predict(re.form = ~(1 | block)) fails on this model ("contrasts can be applied
  # only to factors with 2 or more levels"): that term alone is compared by hand
  expect_terms_like_lmer(fit, ref, d[c(1, 10, 95, 180), ], alone = list(quote(0 + period | Subject)),
                         tol = list(sdcor = 3e-5))
  new <- d[c(1, 10, 95, 180), ]
  expect_abs(predict(fit, new, re.form = ~(1 | block)),
             predict(ref, new, re.form = NA) + lme4::ranef(ref)$block[as.character(new$block), 1],
             1e-5)
})

test_that("anova of two several-term fits and simulate are lme4's", {
  skip_if_no_lmmscope()
  skip_if_no_lme4()
  d <- lme4::sleepstudy
  small <- lmm(Reaction ~ 1 + (1 | Subject) + (0 + Days | Subject), d)
  big <- lmm(Reaction ~ Days + (1 | Subject) + (0 + Days | Subject), d)
  ours <- suppressMessages(anova(small, big))
  theirs <- suppressMessages(anova(lmer_tight(Reaction ~ 1 + (1 | Subject) + (0 + Days | Subject), d),
                                   lmer_tight(Reaction ~ Days + (1 | Subject) + (0 + Days | Subject), d)))
  expect_rel(ours$logLik, theirs$logLik, 1e-10)
  expect_rel(ours$Chisq[2], theirs$Chisq[2], 1e-8)
  expect_equal(ours$npar, theirs$npar)
  ref <- lmer_tight(Reaction ~ Days + (1 | Subject) + (0 + Days | Subject), d)
  # the same draws in lme4's order (u in Z's column order, then the noise)
  expect_abs(simulate(big, nsim = 2, seed = 7), simulate(ref, nsim = 2, seed = 7), 5e-5)
  expect_abs(simulate(big, nsim = 1, seed = 7, use.u = TRUE),
             simulate(ref, nsim = 1, seed = 7, use.u = TRUE), 5e-5)
})

test_that("a several-term fit saved with saveRDS prints and predicts without Python", {
  skip_if_no_lmmscope()
  skip_if_no_lme4()
  d <- lme4::Pastes
  fit <- lmm(strength ~ 1 + (1 | batch/cask), d)
  path <- tempfile(fileext = ".rds")
  saveRDS(fit, path)
  script <- sprintf(paste0(
    "library(lmmscope); f <- readRDS('%s'); print(f); ",
    "p <- predict(f, lme4::Pastes[c(1, 60), ], re.form = ~(1 | batch)); ",
    "cat('PRED', format(p, digits = 15), '\\n'); cat('PY', reticulate::py_available(), '\\n')"),
    path)
  out <- system2(file.path(R.home("bin"), "Rscript"), c("-e", shQuote(script)), stdout = TRUE,
                 stderr = TRUE, env = c("RETICULATE_PYTHON=/nonexistent/python"))
  expect_true(any(grepl("cask:batch, 30; batch, 10", out)))
  pred <- as.numeric(strsplit(sub("^PRED +", "", grep("^PRED", out, value = TRUE)), " +")[[1]])
  expect_abs(pred, predict(fit, d[c(1, 60), ], re.form = ~(1 | batch)), 1e-12)
  expect_true(any(grepl("^PY FALSE", out)))
})

# 30 subjects x 20 items crossed, 40 candidate columns of which x01-x03 matter.
crossed_design <- function(seed = 1, n_subject = 30, n_item = 20, p = 40) {
  set.seed(seed)
  d <- expand.grid(subject = factor(sprintf("s%02d", seq_len(n_subject))),
                   item = factor(sprintf("i%02d", seq_len(n_item))))
  X <- matrix(stats::rnorm(nrow(d) * p), nrow(d), p, dimnames = list(NULL, sprintf("x%02d", seq_len(p))))
  d <- cbind(d, X)
  d$y <- 1 + d$x01 - 0.8 * d$x02 + 0.6 * d$x03 + stats::rnorm(n_subject)[d$subject] +
    0.7 * stats::rnorm(n_item)[d$item] + stats::rnorm(nrow(d))
  d
}

test_that("lmm_scope selects on a crossed design and refits as lmer on the selection", {
  skip_if_no_lmmscope()
  skip_if_no_lme4()
  d <- crossed_design()
  # debiased intervals need one clustering; crossed terms have none: said, not computed
  expect_warning(fit <- lmm_scope(y ~ . + (1 | subject) + (1 | item), d),
                 "no debiased inference computed: .* crossed")
  expect_equal(fit$support, c("x01", "x02", "x03"))
  expect_equal(length(coef_selection(fit)), 41L)
  ref <- lmer_tight(y ~ x01 + x02 + x03 + (1 | subject) + (1 | item), d)
  expect_terms_like_lmer(fit, ref, d[c(1, 300, 600), ])
  expect_equal(deparse1(formula(fit)), "y ~ x01 + x02 + x03 + (1 | subject) + (1 | item)")
  expect_output(print(fit), "Selected 3 of 40 candidate predictors")
  expect_error(lmm_scope(y ~ . + (1 | subject) + (1 | item), d, inference = TRUE),
               "crossed")
})

test_that("lmm_scope with nested terms computes debiased inference over the outer factor", {
  skip_if_no_lmmscope()
  set.seed(2)
  d <- expand.grid(pupil = 1:8, class = factor(1:4), school = factor(sprintf("s%02d", 1:15)))
  X <- matrix(stats::rnorm(nrow(d) * 15), nrow(d), 15, dimnames = list(NULL, sprintf("x%02d", 1:15)))
  d <- cbind(d, X)
  d$y <- 2 * d$x01 - d$x02 + stats::rnorm(15)[d$school] +
    0.5 * stats::rnorm(60)[interaction(d$class, d$school)] + stats::rnorm(nrow(d))
  d$pupil <- NULL
  fit <- lmm_scope(y ~ . + (1 | school/class), d)
  expect_equal(fit$support, c("x01", "x02"))
  expect_equal(names(ranef(fit)), c("class:school", "school"))
  expect_equal(attr(fit$inference, "df"), 14)  # 15 schools, the outermost factor
  expect_equal(rownames(fit$inference), names(coef_selection(fit)))
  ci <- confint(fit, method = "debiased")
  expect_true(all(ci["x01", 1] < 2 & 2 < ci["x01", 2]))
})

test_that("what is still refused says so, in lme4's terms", {
  skip_if_no_lmmscope()
  skip_if_no_lme4()
  d <- lme4::sleepstudy
  expect_error(lmm(Reaction ~ Days + (1 | factor(Subject)) + (1 | Days), d),
               "grouping factor factor\\(Subject\\) is an expression.*lme4 would evaluate")
  # a continuous grouping variable: a factor with one level per row, which lme4 refuses too
  d$noise <- seq_len(nrow(d)) / 7
  expect_error(lme4::lmer(Reaction ~ Days + (1 | Subject) + (1 | noise), d),
               "number of levels of each grouping factor must be < number of observations")
  expect_error(lmm(Reaction ~ Days + (1 | Subject) + (1 | noise), d),
               "180 random effects for 180 observations.*check.nobs.vs.nRE")
  d$one <- "a"
  expect_error(lmm(Reaction ~ Days + (1 | Subject) + (1 | one), d),
               "grouping factor 'one' has 1 level; lme4 needs at least 2")
  dc <- crossed_design(p = 5)
  expect_error(suppressWarnings(lmm_scope(y ~ . + (1 | subject) + (1 | item), dc, k = "cv")),
               "k = \"cv\" and a = \"cv\" hold out whole clusters, which crossed .*\\(k = NULL\\)")
})

test_that("lme4's ecosystem takes a several-term fit (through as_lmerMod)", {
  skip_if_no_lmmscope()
  skip_if_no_lme4()
  d <- lme4::sleepstudy
  d$period <- factor(ifelse(d$Days < 5, "early", "late"))
  fit <- lmm(Reaction ~ period + (1 | Subject) + (0 + Days | Subject), d)
  # the control inlined: lmerTest (under emmeans) re-evaluates lmer's call
  ref <- lme4::lmer(Reaction ~ period + (1 | Subject) + (0 + Days | Subject), d,
                    control = lme4::lmerControl(optimizer = "bobyqa",
                                                optCtrl = list(rhoend = 1e-12, maxfun = 1e5)))
  ours <- broom.mixed::tidy(fit)
  theirs <- broom.mixed::tidy(ref)
  expect_equal(ours$term, theirs$term)
  # measured: 1.3e-6 (the sd of a random effect), standard errors 2.6e-7
  expect_abs(ours$estimate, theirs$estimate, 2e-5)
  expect_abs(ours$std.error, theirs$std.error, 5e-6)
  em_ours <- suppressMessages(as.data.frame(emmeans::emmeans(fit, "period")))
  em_theirs <- suppressMessages(as.data.frame(emmeans::emmeans(ref, "period")))
  # measured: emmeans 2.3e-7 and 2.6e-7, icc 2.9e-8
  expect_abs(em_ours$emmean, em_theirs$emmean, 5e-6)
  expect_abs(em_ours$SE, em_theirs$SE, 5e-6)
  expect_abs(unlist(performance::icc(fit)), unlist(performance::icc(ref)), 1e-6)
  expect_equal(dim(getME(fit, "Z")), dim(lme4::getME(ref, "Z")))
  expect_equal(names(getME(fit, "flist")), names(lme4::getME(ref, "flist")))
})
