# lme4's ecosystem on lmmscope fits: each package's answer on our fit must be its
# answer on lmer's fit of the same model (formula(fit) on the same data). Tolerances
# are the agreement measured here: lme4 at our theta versus lme4 at its own optimum
# (rhoend 1e-12), ~1e-7 relative on fixed effects and their SEs, ~1e-6 on variance
# components; derivative-based quantities (Satterthwaite df) ~1e-4.

orthodont_with_noise <- function() {
  d <- as.data.frame(nlme::Orthodont)
  d$Subject <- factor(as.character(d$Subject))
  set.seed(7)
  for (j in 1:3) d[[paste0("noise", j)]] <- stats::rnorm(nrow(d))
  d
}

# a 3-level factor whose level "b" alone has an effect: k = 2 selects x1 and siteb
site_b_example <- function() {
  d <- lmm_scope_example(p = 10)
  d$site <- factor(rep(c("a", "b", "c"), length.out = nrow(d)))
  d$y2 <- d$y + 3 * (d$site == "b")
  d
}

numeric_columns <- function(tab) as.matrix(as.data.frame(tab)[vapply(tab, is.numeric, TRUE)])

test_that("as_lmerMod() is lme4 at the fitted theta, and broom.mixed, emmeans, performance, lmerTest, drop1 and confint agree with lmer", {
  skip_if_no_lmmscope()
  skip_if_no_lme4()
  d <- orthodont_with_noise()
  fit <- lmm_scope(distance ~ age + Sex + noise1 + noise2 + noise3 + (age | Subject), d, k = 1)
  expect_equal(fit$support, "SexFemale")
  f <- formula(fit)
  # the control inlined: lmerTest and emmeans re-evaluate lmer's call
  ref <- eval(bquote(lme4::lmer(f, d, control = .(tight()))))
  m <- as_lmerMod(fit)
  expect_s4_class(m, "lmerMod")
  expect_lte(abs(as.numeric(logLik(m)) - as.numeric(logLik(fit))), 1e-8)
  expect_equal(unname(lme4::getME(m, "theta")), fit$theta)
  expect_rel(lme4::fixef(m), fixef(fit), 1e-8)
  expect_rel(lme4::fixef(m), lme4::fixef(ref), 1e-6)
  # lme4's per-cluster coefficients, and getME with several names and "ALL"
  expect_equal(dimnames(coef(fit)$Subject), dimnames(coef(ref)$Subject))
  expect_abs(coef(fit)$Subject, coef(ref)$Subject, 1e-4)
  both <- getME(fit, c("theta", "beta", "u", "RX"))
  expect_equal(names(both), c("theta", "beta", "u", "RX"))
  expect_abs(both$theta, lme4::getME(ref, "theta"), 1e-5)
  expect_abs(both$u, lme4::getME(ref, "u"), 1e-3)
  expect_rel(both$RX, lme4::getME(ref, "RX"), 1e-5)
  all_ours <- getME(fit, "ALL")
  expect_equal(names(all_ours), names(lme4::getME(ref, "ALL")))
  expect_abs(getME(fit, "Lambda"), lme4::getME(ref, "Lambda"), 1e-5)

  tidy_ours <- broom.mixed::tidy(fit)
  tidy_ref <- broom.mixed::tidy(ref)
  expect_equal(tidy_ours[names(tidy_ref)][c("effect", "group", "term")],
               tidy_ref[c("effect", "group", "term")])
  fixed <- tidy_ours$effect == "fixed"
  expect_rel(tidy_ours$estimate, tidy_ref$estimate, 1e-5)
  expect_rel(tidy_ours$std.error[fixed], tidy_ref$std.error[fixed], 1e-5)
  expect_equal(tidy_ours$selection[fixed], c("kept", "kept", "selected"))
  expect_equal(tidy_ours$estimate_selection[fixed],
               unname(coef_selection(fit)[names(fixef(fit))]))
  expect_rel(numeric_columns(broom.mixed::glance(fit)), numeric_columns(broom.mixed::glance(ref)),
             1e-8)
  expect_abs(broom.mixed::augment(fit)$.fitted, broom.mixed::augment(ref)$.fitted, 1e-4)

  # without pbkrtest emmeans says it uses Satterthwaite's df instead of Kenward-Roger's
  emm_ours <- suppressMessages(summary(emmeans::emmeans(fit, ~ Sex)))
  emm_ref <- suppressMessages(summary(emmeans::emmeans(ref, ~ Sex)))
  expect_equal(as.character(emm_ours$Sex), as.character(emm_ref$Sex))
  expect_rel(emm_ours$emmean, emm_ref$emmean, 1e-6)
  expect_rel(emm_ours$SE, emm_ref$SE, 1e-5)
  expect_rel(emm_ours$df, emm_ref$df, 1e-3)

  expect_rel(unlist(performance::r2(fit)), unlist(performance::r2(ref)), 1e-5)
  expect_rel(unlist(performance::icc(fit)), unlist(performance::icc(ref)), 1e-5)
  expect_rel(numeric_columns(performance::model_performance(fit)),
             numeric_columns(performance::model_performance(ref)), 1e-5)
  # (without the 'see' package both say so; the checks themselves are computed)
  checks_ref <- suppressMessages(performance::check_model(ref))
  expect_s3_class(suppressMessages(performance::check_model(fit)), class(checks_ref)[1])

  satt_ours <- coef(summary(lmerTest::as_lmerModLmerTest(as_lmerMod(fit))))
  satt_ref <- coef(summary(lmerTest::as_lmerModLmerTest(ref)))
  expect_equal(dimnames(satt_ours), dimnames(satt_ref))
  expect_rel(satt_ours[, "df"], satt_ref[, "df"], 1e-3)
  expect_rel(satt_ours[, "Pr(>|t|)"], satt_ref[, "Pr(>|t|)"], 1e-3)

  drop_ours <- drop1(fit, test = "Chisq")
  drop_ref <- drop1(ref, test = "Chisq")
  expect_equal(dimnames(drop_ours), dimnames(drop_ref))
  expect_rel(as.matrix(drop_ours)[-1, ], as.matrix(drop_ref)[-1, ], 1e-5)
  expect_rel(anova(fit)[["F value"]], anova(ref)[["F value"]], 1e-5)

  wald <- confint(fit, method = "Wald")
  expect_equal(dimnames(wald), dimnames(confint(ref, method = "Wald")))
  expect_rel(wald[-(1:4), ], confint(ref, method = "Wald")[-(1:4), ], 1e-6)
  expect_rel(confint(fit, "SexFemale", method = "Wald"),
             confint(ref, "SexFemale", method = "Wald"), 1e-6)
  # the debiased interval keeps its own name, one row per asked column
  expect_equal(rownames(confint(fit, "SexFemale", method = "debiased")), "SexFemale")
})

test_that("confint(method = 'profile' | 'boot') on an lmm fit is lme4's", {
  skip_if_no_lmmscope()
  skip_if_no_lme4()
  d <- lme4::sleepstudy
  fit <- lmm(Reaction ~ Days + (1 | Subject), d)
  # the control inlined: lme4's bootstrap re-evaluates lmer's call
  ref <- eval(bquote(lme4::lmer(Reaction ~ Days + (1 | Subject), d, control = .(tight()))))
  prof <- suppressMessages(confint(fit))  # lme4's default method, profile
  expect_equal(dimnames(prof), dimnames(suppressMessages(confint(ref))))
  expect_rel(prof, suppressMessages(confint(ref)), 1e-5)
  # 20 draws put the percentile limits at extreme order statistics (lme4 warns)
  boot_ours <- suppressWarnings(confint(fit, method = "boot", nsim = 20, seed = 4))
  boot_ref <- suppressWarnings(confint(ref, method = "boot", nsim = 20, seed = 4))
  expect_rel(boot_ours, boot_ref, 1e-4)
})

test_that("formula(fit) with one level of a factor selected has the fit's parameters", {
  skip_if_no_lmmscope()
  skip_if_no_lme4()
  d <- site_b_example()
  fit <- lmm_scope(y2 ~ x1 + site + (1 | cluster), data = d, k = 2)
  expect_setequal(fit$support, c("x1", "siteb"))
  expect_false(fit$formula_exact)
  ref <- lmer_tight(formula(fit), d)
  expect_equal(length(lme4::fixef(ref)), length(fixef(fit)))
  expect_rel(as.numeric(logLik(ref)), as.numeric(logLik(fit)), 1e-8)
  tab <- suppressMessages(anova(fit, ref))
  expect_equal(tab$npar[1], tab$npar[2])
  # an interaction's single column, too
  d$y3 <- d$y + 2 * d$x1 * (d$site == "c")
  fit3 <- lmm_scope(y3 ~ x1 * site + (1 | cluster), data = d, k = 1)
  expect_equal(fit3$support, "x1:sitec")
  ref3 <- lmer_tight(formula(fit3), d)
  expect_equal(length(lme4::fixef(ref3)), 2L)
  expect_rel(as.numeric(logLik(ref3)), as.numeric(logLik(fit3)), 1e-8)
})

test_that("lmm_scope() takes penalize_random_slopes and the core's control; print says what was kept and why", {
  skip_if_no_lmmscope()
  d <- lme4::sleepstudy
  set.seed(2)
  d$noise <- stats::rnorm(nrow(d))
  expect_error(lmm_scope(Reaction ~ Days + noise + (Days | Subject), d, k = 2),
               "penalize_random_slopes")
  fit <- lmm_scope(Reaction ~ Days + noise + (Days | Subject), d, k = 1,
                   penalize_random_slopes = TRUE,
                   control = lmm_scope_control(search_effort = 2, max_a_iter = 3))
  expect_equal(fit$support, "Days")
  expect_equal(fit$unpenalised, "(Intercept)")
  cv <- lmm_scope(Reaction ~ Days + noise + (Days | Subject), d, k = 0, a = "cv",
                  a_grid = c(0.3, 3), seed = 1)
  expect_true(cv$a %in% c(0.3, 3))
  expect_error(lmm_scope(Reaction ~ Days + (Days | Subject), d, a_grid = -1), "a_grid")
  kept <- lmm_scope(Reaction ~ Days + noise + (Days | Subject), d, k = 0)
  out <- capture.output(print(kept))
  expect_true(any(grepl("Kept without selection", out)))
  expect_true(any(grepl("random slope .*: Days$", out)))
  expect_true(any(grepl("intercept: \\(Intercept\\)", out)))
  expect_true(any(grepl("random slope .*: Days$", capture.output(print(summary(kept))))))
  expect_error(lmm_scope(Reaction ~ Days + (Days | Subject), d,
                         control = lmm_scope_control(no_such_option = 1)),
               "unknown control option\\(s\\) no_such_option")
  expect_error(lmm_scope(Reaction ~ Days + (Days | Subject), d, control = list(a = 1)),
               "lmm_scope_control")
  expect_error(lmm(Reaction ~ Days + (Days | Subject), d,
                   control = lmm_scope_control(optimizer_maxiter = -1)),
               "Control(optimizer_maxiter=-1): must be an integer >= 1", fixed = TRUE)
  # every kind of field reaches the core: a string, a vector, the performance list
  exact <- lmm_scope(Reaction ~ Days + noise + (Days | Subject), d, k = 1, a = 1,
                     penalize_random_slopes = TRUE,
                     control = lmm_scope_control(engine = "exact", theta_start_scales = c(0.1, 1),
                                                 performance = list(column_tile = 8)))
  expect_equal(exact$support, "Days")
  expect_error(lmm(Reaction ~ Days + (Days | Subject), d,
                   control = lmm_scope_control(engine = "nope")), "engine")
  expect_error(lmm(Reaction ~ Days + (Days | Subject), d,
                   control = lmm_scope_control(performance = list(column_tile = 0))),
               "column_tile")
  expect_error(lmm_scope_control(engine = c("a", "b")), "one string")
})

test_that("print wraps a long formula; the coefficient plot is labelled, also as a ggplot", {
  skip_if_no_lmmscope()
  d <- lmm_scope_example(p = 60)
  f <- stats::as.formula(paste("y ~", paste0("x", 1:60, collapse = " + "), "+ (1 | cluster)"))
  fit <- lmm_scope(f, d)
  out <- capture.output(print(fit))
  expect_lte(max(nchar(out)), getOption("width"))
  expect_true(any(grepl("^Formula: y ~ x1 \\+", out)))
  pdf(NULL)
  on.exit(dev.off())
  expect_invisible(plot(fit, type = "coefficients"))
  g <- ggplot2::autoplot(fit, type = "coefficients")
  expect_s3_class(g, "ggplot")
  expect_equal(g$labels$colour, "column")
  expect_true(all(c("x1", "x5", "x10") %in% levels(g$data$term)))
  expect_s3_class(ggplot2::autoplot(fit), "ggplot")
})

test_that("a fit on Chem97 with 40 noise columns is at most 1.5 times lmer's size", {
  # 5 s: the size of a realistic fit (31,022 rows) is the point of the check
  skip_if_no_lmmscope()
  skip_if_no_lme4()
  data("Chem97", package = "mlmRev", envir = environment())
  set.seed(1)
  d <- Chem97[, c("score", "gcsescore", "gender", "age", "school")]
  noise <- matrix(stats::rnorm(nrow(d) * 40), nrow(d), 40,
                  dimnames = list(NULL, paste0("noise", 1:40)))
  d <- cbind(d, noise)
  fit <- lmm_scope(score ~ . + (1 | school), d, inference = FALSE)
  ref <- lme4::lmer(formula(fit), d)
  expect_lte(as.numeric(object.size(fit)) / as.numeric(object.size(ref)), 1.5)
  expect_lte(abs(as.numeric(logLik(as_lmerMod(fit))) - as.numeric(logLik(fit))), 1e-6)
})

test_that("a matrix column of data is stored whole and lme4 at the fit's theta reproduces it", {
  skip_if_no_lmmscope()
  skip_if_no_lme4()
  d <- lme4::sleepstudy
  set.seed(5)
  d$M <- cbind(a = stats::rnorm(nrow(d)), b = stats::rnorm(nrow(d)))
  fit <- lmm(Reaction ~ Days + M + (1 | Subject), d, subset = Days > 1)
  expect_equal(dim(fit$data$M), c(144L, 2L))
  ref <- lme4::lmer(Reaction ~ Days + M + (1 | Subject), d, subset = Days > 1, control = tight())
  expect_rel(lme4::fixef(as_lmerMod(fit)), lme4::fixef(ref), 1e-6)
  expect_equal(dimnames(model.matrix(fit)), dimnames(model.matrix(ref)))
  expect_equal(model.frame(fit), model.frame(ref), ignore_attr = TRUE)
})

test_that("as_lmerMod() keeps the fit's contrasts, also when set by options(contrasts =)", {
  skip_if_no_lmmscope()
  skip_if_no_lme4()
  d <- orthodont_with_noise()
  d$grp <- factor(rep(c("a", "b", "c"), length.out = nrow(d)))
  op <- options(contrasts = c("contr.sum", "contr.poly"))
  fit <- lmm(distance ~ age + grp + (1 | Subject), d, REML = FALSE)
  ref <- lme4::lmer(distance ~ age + grp + (1 | Subject), d, REML = FALSE)
  options(op)
  m <- as_lmerMod(fit)
  expect_equal(names(lme4::fixef(m)), c("(Intercept)", "age", "grp1", "grp2"))
  expect_rel(lme4::fixef(m), lme4::fixef(ref), 1e-6)
  tab <- broom.mixed::tidy(fit, effects = "fixed")
  expect_equal(tab$term, names(lme4::fixef(ref)))
  expect_rel(tab$estimate, unname(lme4::fixef(ref)), 1e-6)
})

test_that("as_lmerMod() refuses a fit whose selected columns lme4 cannot write, saying why", {
  skip_if_no_lmmscope()
  skip_if_no_lme4()
  d <- orthodont_with_noise()
  d$lev <- factor(rep(1:3, length.out = nrow(d)), ordered = TRUE)
  d$distance <- d$distance + 3 * (as.integer(d$lev) - 2)
  fit <- suppressWarnings(lmm_scope(distance ~ age + lev + noise1 + (1 | Subject), d, k = 1))
  expect_equal(fit$support, "lev.L")  # the linear contrast alone (a linear trend in lev)
  expect_null(fit$fixed_labels)
  expect_error(as_lmerMod(fit), "cannot be written as a function of the data's variables")
})

test_that("with one level of a factor selected, confint and tidy use the fit's names; emmeans refuses briefly", {
  skip_if_no_lmmscope()
  skip_if_no_lme4()
  d <- site_b_example()
  fit <- lmm_scope(y2 ~ x1 + site + (1 | cluster), data = d, k = 2)
  expect_equal(names(fixef(fit)), c("(Intercept)", "x1", "siteb"))
  ci <- confint(fit, "siteb", method = "Wald")
  expect_equal(rownames(ci), "siteb")
  se <- sqrt(diag(vcov(fit)))[["siteb"]]
  expect_rel(unname(ci[1, ]), fixef(fit)[["siteb"]] + c(-1, 1) * stats::qnorm(0.975) * se, 1e-6)
  expect_equal(rownames(confint(fit, method = "Wald"))[-(1:2)], names(fixef(fit)))
  tab <- broom.mixed::tidy(fit, effects = "fixed")
  expect_equal(tab$term, names(fixef(fit)))
  # emmeans runs our refusal under try(), printing it, then stops with its own short error
  printed <- capture.output(err <- tryCatch(emmeans::emmeans(fit, ~ site), error = conditionMessage),
                            type = "message")
  expect_match(paste(printed, collapse = "\n"), "emmeans needs whole terms")
  expect_lt(nchar(err), 400)
})

test_that("whole numbers from R are used, fractions and NA refused by name (never truncated)", {
  skip_if_no_lmmscope()
  df <- lmm_scope_example()
  expect_error(lmm_scope(y ~ . + (1 | cluster), df, k_max = 3.7), "k_max must be a non-negative integer")
  expect_error(lmm_scope(y ~ . + (1 | cluster), df, k = "cv", cv_folds = 2.7),
               "cv_folds must be an integer >= 2, got 2.7")
  expect_error(lmm_scope(y ~ . + (1 | cluster), df, k_max = NA), "k_max must be a number, not NA")
  expect_error(lmm_scope(y ~ . + (1 | cluster), df, k = "cv", seed = 1.9),
               "seed must be a non-negative integer or None, got 1.9", fixed = TRUE)
  fit <- lmm_scope(y ~ . + (1 | cluster), df, k = "cv", cv_folds = 3, seed = 2, k_max = 4)
  expect_lte(fit$k, 4)
})
