# The R front builds the design with R's machinery: on the same model it must give
# lmer's answer (lm's contrasts, transforms, offsets, NA handling), to lmer's tolerance.

test_that("sleepstudy by REML and ML agrees with lmer, method by method", {
  skip_if_no_lmmscope()
  skip_if_no_lme4()
  d <- lme4::sleepstudy
  for (reml in c(TRUE, FALSE)) {
    fit <- lmm(Reaction ~ Days + (Days | Subject), d, REML = reml)
    ref <- lmer_tight(Reaction ~ Days + (Days | Subject), d, REML = reml)
    expect_same_as_lmer(fit, ref, d[c(1, 17, 90, 180), ])
    expect_rel(REMLcrit(fit), lme4::REMLcrit(ref), 1e-8)
    expect_rel(deviance(fit, REML = FALSE), deviance(ref, REML = FALSE), 1e-8)
    expect_equal(df.residual(fit), df.residual(ref))
    expect_equal(isREML(fit), lme4::isREML(ref))
    expect_equal(ngrps(fit), lme4::ngrps(ref))
    expect_equal(isSingular(fit), lme4::isSingular(ref))
    expect_equal(nobs(fit), nobs(ref))
    expect_abs(getME(fit, "theta"), lme4::getME(ref, "theta"), 1e-5)
    expect_equal(names(getME(fit, "theta")), names(lme4::getME(ref, "theta")))
    expect_equal(getME(fit, "lower"), lme4::getME(ref, "lower"), ignore_attr = TRUE)
    expect_equal(getME(fit, "REML"), lme4::getME(ref, "REML"))
    expect_equal(getME(fit, "X"), lme4::getME(ref, "X"), ignore_attr = TRUE)
    expect_equal(colnames(getME(fit, "X")), names(fixef(fit)))
    expect_equal(getME(fit, "y"), lme4::getME(ref, "y"), ignore_attr = TRUE)
    expect_equal(getME(fit, "flist"), lme4::getME(ref, "flist"), ignore_attr = TRUE)
    expect_equal(getME(fit, "cnms"), lme4::getME(ref, "cnms"))
    expect_equal(names(getME(fit, "mmList")), names(lme4::getME(ref, "mmList")))
    expect_equal(unname(getME(fit, "mmList")[[1]]), unname(lme4::getME(ref, "mmList")[[1]]))
    expect_abs(getME(fit, "Z"), lme4::getME(ref, "Z"), 0)
    expect_abs(attr(ranef(fit, condVar = TRUE)$Subject, "postVar"),
               attr(lme4::ranef(ref, condVar = TRUE)$Subject, "postVar"), 1e-4)
    expect_null(attr(ranef(fit, condVar = FALSE)$Subject, "postVar"))
    expect_rel(coef(summary(fit)), coef(summary(ref)), 1e-5)
    expect_abs(coef(fit)$Subject, coef(ref)$Subject, 1e-4)
    expect_equal(dimnames(coef(fit)$Subject), dimnames(coef(ref)$Subject))
    expect_equal(dimnames(coef(summary(fit))), dimnames(coef(summary(ref))))
    expect_equal(formula(fit), formula(ref), ignore_attr = TRUE)
    expect_equal(model.matrix(fit), model.matrix(ref), ignore_attr = TRUE)
    expect_equal(model.frame(fit), model.frame(ref), ignore_attr = TRUE)
  }
})

test_that("dotted names (iris) need no backticks and agree with lmer", {
  skip_if_no_lmmscope()
  skip_if_no_lme4()
  fit <- lmm_scope(Sepal.Length ~ Petal.Length + (1 | Species), iris)
  ref <- lmer_tight(Sepal.Length ~ Petal.Length + (1 | Species), iris)
  expect_equal(fit$support, "Petal.Length")
  expect_same_as_lmer(fit, ref, iris[c(1, 60, 140), ])
})

test_that("poly(), scale(), factor() and cut() are R's own, also for new data", {
  skip_if_no_lmmscope()
  skip_if_no_lme4()
  d <- lme4::sleepstudy
  orth <- as.data.frame(nlme::Orthodont)
  # new rows alone: poly/scale must reuse the fitting data's coefficients (predvars)
  expect_same_as_lmer(lmm(Reaction ~ poly(Days, 2) + (1 | Subject), d),
                      lmer_tight(Reaction ~ poly(Days, 2) + (1 | Subject), d), d[c(5, 50, 100), ])
  expect_same_as_lmer(lmm(Reaction ~ scale(Days) + (Days | Subject), d),
                      lmer_tight(Reaction ~ scale(Days) + (Days | Subject), d), d[c(5, 50), ])
  expect_same_as_lmer(lmm(distance ~ factor(age) + Sex + (1 | Subject), orth),
                      lmer_tight(distance ~ factor(age) + Sex + (1 | Subject), orth), orth[1:9, ])
  expect_same_as_lmer(lmm(distance ~ cut(age, 3) + (age | Subject), orth),
                      lmer_tight(distance ~ cut(age, 3) + (age | Subject), orth), orth[1:9, ])
})

test_that("ordered factors get contr.poly and C(f, contr.sum) its contrasts, as in lmer", {
  skip_if_no_lmmscope()
  skip_if_no_lme4()
  orth <- as.data.frame(nlme::Orthodont)
  orth$agef <- factor(orth$age, ordered = TRUE)
  fit <- lmm(distance ~ agef + (1 | Subject), orth)
  expect_equal(names(fixef(fit)), c("(Intercept)", "agef.L", "agef.Q", "agef.C"))
  expect_same_as_lmer(fit, lmer_tight(distance ~ agef + (1 | Subject), orth), orth[c(2, 30), ])
  orth$agec <- factor(orth$age)
  fit <- lmm(distance ~ C(agec, contr.sum) + (1 | Subject), orth)
  expect_same_as_lmer(fit, lmer_tight(distance ~ C(agec, contr.sum) + (1 | Subject), orth),
                      orth[c(2, 30), ])
  # contrasts= is passed to model.matrix as in lmer
  fit <- lmm(distance ~ agec + (1 | Subject), orth, contrasts = list(agec = "contr.helmert"))
  expect_same_as_lmer(fit, lmer_tight(distance ~ agec + (1 | Subject), orth,
                                      contrasts = list(agec = "contr.helmert")), orth[c(2, 30), ])
})

test_that("offsets in the formula and as an argument are added back exactly", {
  skip_if_no_lmmscope()
  skip_if_no_lme4()
  d <- lme4::sleepstudy
  d$t <- d$Days + 1
  expect_same_as_lmer(lmm(Reaction ~ Days + offset(log(t)) + (1 | Subject), d),
                      lmer_tight(Reaction ~ Days + offset(log(t)) + (1 | Subject), d), d[1:9, ])
  fit <- lmm(Reaction ~ Days + (1 | Subject), d, offset = 3 * t)
  ref <- lme4::lmer(Reaction ~ Days + (1 | Subject), d, offset = 3 * t, control = tight())
  expect_rel(fixef(fit), lme4::fixef(ref), 1e-6)
  expect_rel(logLik(fit), logLik(ref), 1e-8)
  expect_abs(fitted(fit), fitted(ref), 1e-4)
  # lme4's predict() drops an offset= argument on new data; predict.lm and we keep it,
  # so predicting the fitting rows reproduces lmer's fitted values
  expect_abs(predict(fit, d), fitted(ref), 1e-4)
})

test_that("na.exclude pads fitted, residuals and predict like lmer; na.fail refuses", {
  skip_if_no_lmmscope()
  skip_if_no_lme4()
  d <- lme4::sleepstudy
  d$Days[c(3, 50)] <- NA
  d$Reaction[7] <- NA
  fit <- lmm(Reaction ~ Days + (Days | Subject), d, na.action = na.exclude)
  ref <- lmer_tight(Reaction ~ Days + (Days | Subject), d, na.action = na.exclude)
  expect_equal(length(fitted(fit)), 180L)
  expect_equal(which(is.na(fitted(fit))), c(3L, 7L, 50L), ignore_attr = TRUE)
  expect_equal(which(is.na(residuals(fit))), which(is.na(residuals(ref))), ignore_attr = TRUE)
  expect_equal(names(fitted(fit)), names(fitted(ref)))
  expect_abs(fitted(fit), fitted(ref), 1e-4)
  expect_abs(predict(fit), predict(ref), 1e-4)
  # scaled and Pearson residuals as lme4's residuals.merMod (measured ~1e-7 here)
  expect_abs(residuals(fit, scaled = TRUE), residuals(ref, scaled = TRUE), 1e-5)
  expect_abs(residuals(fit, type = "pearson"), residuals(ref, type = "pearson"), 1e-4)
  expect_equal(nobs(fit), 177L)
  omit <- lmm(Reaction ~ Days + (Days | Subject), d)
  expect_equal(length(fitted(omit)), 177L)
  expect_output(print(omit), "3 observations deleted")
  expect_error(lmm(Reaction ~ Days + (Days | Subject), d, na.action = na.fail), "missing values")
})

test_that("subset= and unused factor levels behave as in lmer (no hard error)", {
  skip_if_no_lmmscope()
  skip_if_no_lme4()
  orth <- as.data.frame(nlme::Orthodont)
  orth$agef <- factor(orth$age)
  fit <- lmm(distance ~ agef + Sex + (1 | Subject), orth, subset = age > 8)
  ref <- lme4::lmer(distance ~ agef + Sex + (1 | Subject), orth, subset = age > 8,
                    control = tight())
  expect_same_as_lmer(fit, ref, orth[orth$age > 8, ][1:5, ])
  small <- orth
  small$agef[small$age == 14] <- "12"  # level "14" is now unused
  expect_equal(levels(small$agef), c("8", "10", "12", "14"))
  fit <- lmm_scope(distance ~ agef + (1 | Subject), small, k = 2)
  ref <- lmer_tight(distance ~ agef + (1 | Subject), small)
  expect_equal(names(fixef(fit)), names(lme4::fixef(ref)))
  expect_rel(fixef(fit), lme4::fixef(ref), 1e-6)
})

test_that("newdata's grouping column matches by value; new levels follow allow.new.levels", {
  skip_if_no_lmmscope()
  skip_if_no_lme4()
  d <- lme4::sleepstudy
  fit <- lmm(Reaction ~ Days + (Days | Subject), d)
  ref <- lmer_tight(Reaction ~ Days + (Days | Subject), d)
  as_int <- d[c(1, 40, 180), ]
  as_int$Subject <- as.integer(as.character(as_int$Subject))
  expect_abs(predict(fit, as_int), predict(ref, d[c(1, 40, 180), ]), 1e-4)
  # fitted with an integer grouping column, predicted with a factor of the same values
  d_int <- transform(d, Subject = as.integer(as.character(Subject)))
  fit_int <- lmm(Reaction ~ Days + (Days | Subject), d_int)
  expect_abs(predict(fit_int, d[c(1, 40, 180), ]), predict(ref, d[c(1, 40, 180), ]), 1e-4)
  new <- d[1:3, ]
  new$Subject <- factor(c("308", "999", "998"))
  expect_error(predict(fit, new), "new levels detected in newdata: 999, 998")
  expect_error(predict(ref, new), "new levels")
  expect_abs(predict(fit, new, allow.new.levels = TRUE),
             predict(ref, new, allow.new.levels = TRUE), 1e-4)
  for (rf in list(NA, ~0)) {
    expect_abs(predict(fit, new, re.form = rf), predict(ref, new, re.form = rf), 1e-6)
  }
  expect_abs(predict(fit, d[1:3, ], re.form = ~ (Days | Subject)),
             predict(ref, d[1:3, ], re.form = ~ (Days | Subject)), 1e-4)
})

test_that("always= takes the names coef_selection() shows and keeps those columns", {
  skip_if_no_lmmscope()
  set.seed(3)
  n <- 40; m <- 8
  d <- data.frame(x1 = rnorm(n * m), x2 = rnorm(n * m),
                  sex = factor(sample(c("Male", "Female"), n * m, TRUE), c("Male", "Female")),
                  `odd name` = rnorm(n * m), cluster = rep(seq_len(n), each = m),
                  check.names = FALSE)
  d$y <- 1 + 2 * d$x1 + rnorm(n)[d$cluster] + rnorm(n * m, sd = 0.5)
  fit <- lmm_scope(y ~ x1 + x2 + sex + `odd name` + (1 | cluster), d, k = 1,
                   always = c("sexFemale", "(Intercept)", "`odd name`"))
  expect_equal(names(coef_selection(fit)), c("(Intercept)", "x1", "x2", "sexFemale", "`odd name`"))
  expect_setequal(fit$selected, c("(Intercept)", "x1", "sexFemale", "`odd name`"))
  expect_equal(fit$support, "x1")
  fit2 <- lmm_scope(y ~ x1 + x2 + sex + `odd name` + (1 | cluster), d, k = 1,
                    always = "odd name")
  expect_true("`odd name`" %in% fit2$selected)
  expect_error(lmm_scope(y ~ x1 + x2 + (1 | cluster), d, always = "sexMale"),
               "always = \"sexMale\" is not a fixed-effect column")
  skip_if_no_lme4()
  ref <- lmer_tight(y ~ x1 + sex + `odd name` + (1 | cluster), d)
  expect_same_as_lmer(fit, ref, d[1:4, ])
})

test_that("lme4 syntax, design syntax and '.' (without the grouping column) agree", {
  skip_if_no_lmmscope()
  d <- lmm_scope_example()
  xs <- paste0("x", 1:20)
  f_lme4 <- lmm_scope(y ~ . + (z1 + z2 | cluster), data = d)
  f_design <- lmm_scope(stats::as.formula(paste("y ~", paste(c(xs, "z1", "z2"), collapse = " + "),
                                                "| (z1 + z2 | cluster)")), data = d)
  expect_equal(names(coef_selection(f_lme4)), c("(Intercept)", xs, "z1", "z2"))
  expect_equal(coef_selection(f_lme4), coef_selection(f_design), tolerance = 1e-10)
  expect_setequal(f_lme4$support, c("x1", "x5", "x10"))
  f_string <- lmm_scope("y ~ . + (z1 + z2 | cluster)", data = d)
  expect_equal(coef_selection(f_string), coef_selection(f_lme4))
})

test_that("unsupported input gives a clear R error naming the argument or column", {
  skip_if_no_lmmscope()
  d <- lme4::sleepstudy
  expect_error(lmm(Reaction ~ Days + nope + (1 | Subject), d), "unknown column.*nope")
  expect_error(lmm(Reaction ~ Days, d), "no random-effects term")
  expect_error(lmm(Reaction ~ Days + (1 | Subject), d, weights = Days), "weights are not supported")
  expect_error(lmm(Subject ~ Days + (1 | Subject), d), "response 'Subject' must be a numeric")
  expect_error(lmm_scope(Reaction ~ Days + (1 | Subject), d, k = -1), "k must be")
  expect_error(lmm(Reaction ~ Days + (1 | Subject), as.matrix(d)), "data.frame")
  err <- tryCatch(lmm_scope(Reaction ~ Days + (1 | Subject), d, k = 5), error = identity)
  expect_s3_class(err, "error")
  expect_false(grepl("Traceback|py_call_impl|File \"", conditionMessage(err)))
})

test_that("with no cluster effect the fit is singular and equals lm, as lmer's does", {
  skip_if_no_lmmscope()
  skip_if_no_lme4()
  set.seed(5)  # a draw where lmer's random-intercept variance is exactly 0
  d <- data.frame(x = rnorm(60), g = factor(rep(1:6, each = 10)))
  d$y <- 1 + 2 * d$x + rnorm(60)
  ref <- suppressMessages(lmer_tight(y ~ x + (1 | g), d))
  expect_true(lme4::isSingular(ref))
  fit <- lmm(y ~ x + (1 | g), d)
  expect_true(isSingular(fit))
  expect_output(print(fit), "boundary \\(singular\\) fit")
  ols <- lm(y ~ x, d)
  expect_rel(fixef(fit), coef(ols), 1e-6)
  expect_rel(sigma(fit), sigma(ols), 1e-6)
  expect_rel(vcov(fit), vcov(ols), 1e-5)
  expect_abs(fitted(fit), fitted(ols), 1e-6)
  expect_rel(logLik(fit, REML = FALSE), logLik(ols), 1e-8)
})

test_that("lmm() drops aliased fixed-effect columns with lme4's message and fit", {
  skip_if_no_lmmscope()
  skip_if_no_lme4()
  d <- lme4::sleepstudy
  d$Weeks <- d$Days / 7
  expect_message(fit <- lmm(Reaction ~ Days + Weeks + (Days | Subject), d),
                 "rank deficient so dropping 1 column / coefficient \\(Weeks\\)")
  ref <- suppressMessages(lmer_tight(Reaction ~ Days + Weeks + (Days | Subject), d))
  expect_same_as_lmer(fit, ref, d[c(3, 33), ])
})

test_that("R's lmm() and Python's lmm() drop the same aliased columns: the core decides", {
  skip_if_no_lmmscope()
  d <- lme4::sleepstudy
  d$Weeks <- d$Days / 7
  d$Later <- d$Days + 3  # aliased with the intercept and Days together
  py <- reticulate::import("lmmscope")
  for (form in c("Reaction ~ Days + Weeks + Later + (Days | Subject)",
                 "Reaction ~ Days + Weeks + Later + (1 | Subject) + (0 + Days | Subject)")) {
    py_fit <- suppressWarnings(py$lmm(form, reticulate::r_to_py(d)))
    expect_equal(unlist(py_fit$dropped_columns), c("Weeks", "Later"))
    expect_message(fit <- lmm(stats::as.formula(form), d),
                   "rank deficient so dropping 2 columns / coefficients \\(Weeks, Later\\)")
    expect_equal(names(fixef(fit)), c("(Intercept)", "Days"))
    expect_rel(logLik(fit), reticulate::import_builtins()$float(py_fit$loglik), 1e-10)
  }
})

test_that("isSingular() is the fit's own verdict; an explicit tol is lme4's rule on theta", {
  skip_if_no_lmmscope()
  # a slope in huge units: theta in Z's units is tiny (lme4's rule at tol 1e-4 calls it
  # singular), on unit-free Z it is not (the core's verdict, what print says)
  d <- lme4::sleepstudy
  d$DaysHuge <- d$Days * 1e6
  fit <- lmm(Reaction ~ DaysHuge + (DaysHuge | Subject), d)
  expect_identical(isSingular(fit), fit$singular)
  expect_false(isSingular(fit))
  expect_false(any(grepl("singular", capture.output(print(fit)))))
  expect_true(isSingular(fit, tol = 1e-4))
})
