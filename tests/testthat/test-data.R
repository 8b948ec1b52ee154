make_mixed <- function(seed = 3) {
  set.seed(seed)
  n <- 40; m <- 8
  g <- rep(seq_len(n), each = m)
  d <- data.frame(
    x1 = rnorm(n * m), x2 = rnorm(n * m),
    sex = factor(sample(c("Male", "Female"), n * m, TRUE), levels = c("Male", "Female")),
    site = sample(c("north", "south", "west"), n * m, TRUE),
    flag = sample(c(TRUE, FALSE), n * m, TRUE),
    `odd name` = rnorm(n * m),
    cluster = g, check.names = FALSE, stringsAsFactors = FALSE)
  d$y <- 1 + 2 * d$x1 + 1.5 * (d$sex == "Female") - (d$site == "west") + 0.8 * d$`odd name` +
    rnorm(n)[g] + rnorm(n * m, sd = 0.5)
  d
}

test_that("factor, character, logical and non-syntactic columns get R's names", {
  skip_if_no_lmmscope()
  d <- make_mixed()
  fit <- lmm_scope(y ~ x1 + x2 + sex + site + flag + `odd name` + (1 | cluster), data = d, k = 4)
  expect_equal(names(coef(fit)),
               c("(Intercept)", "x1", "x2", "sexFemale", "sitesouth", "sitewest", "flagTRUE",
                 "`odd name`"))
  expect_setequal(fit$support, c("x1", "sexFemale", "sitewest", "`odd name`"))
  # the refit is on the selected columns only: compare with lmer on the same dummies
  d2 <- d
  d2$sitewest <- as.numeric(d$site == "west")
  ref <- lme4::lmer(y ~ x1 + sex + sitewest + `odd name` + (1 | cluster), data = d2,
                    control = lme4::lmerControl(optimizer = "bobyqa",
                                                optCtrl = list(rhoend = 1e-12, maxfun = 1e5)))
  expect_equal(unname(fixef(fit)), unname(lme4::fixef(ref)), tolerance = 1e-4)
  expect_equal(sigma(fit), sigma(ref), tolerance = 1e-3)
  # prediction on new data holding a subset of the levels
  new <- d[d$site == "south", ][1:3, ]
  expect_equal(unname(predict(fit, newdata = new, re.form = NA)),
               unname(predict(ref, newdata = cbind(new, sitewest = 0), re.form = NA)),
               tolerance = 1e-4)
})

test_that("rows with missing values are dropped as na.omit does, and reported", {
  skip_if_no_lmmscope()
  d <- make_mixed()
  d$x2[c(3, 50)] <- NA
  d$site[7] <- NA
  expect_message(fit <- lmm_scope(y ~ x1 + x2 + site + (1 | cluster), data = d, k = 2),
                 "dropped 3 row")
  expect_equal(nobs(fit), nrow(d) - 3L)
  expect_equal(as.integer(fit$na.action), c(3L, 7L, 50L))
  expect_false(any(c("3", "7", "50") %in% names(fitted(fit))))
  expect_error(lmm_scope(y ~ x1 + x2 + (1 | cluster), data = d, na.action = na.fail),
               "missing values")
})

test_that("bad input gives a clear R error, not a Python traceback", {
  skip_if_no_lmmscope()
  d <- make_mixed()
  expect_error(lmm_scope(y ~ x1 + nope + (1 | cluster), data = d), "unknown column.*nope")
  expect_error(lmm_scope(y ~ x1 + x2, data = d), "no random-effects term")
  expect_error(lmm_scope(site ~ x1 + (1 | cluster), data = d), "response 'site' must be numeric")
  expect_error(lmm_scope(y ~ x1 + x2 + (1 | cluster), data = d, k = 5), "exceeds")
  expect_error(lmm_scope(y ~ x1 + (1 | cluster), data = as.matrix(d)), "data.frame")
  d$x2[1] <- Inf
  expect_error(lmm_scope(y ~ x1 + x2 + (1 | cluster), data = d), "infinite")
  err <- tryCatch(lmm_scope(y ~ x1 + nope + (1 | cluster), data = d), error = identity)
  expect_false(grepl("Traceback|py_call_impl|File \"", conditionMessage(err)))
})

test_that("long formulas are deparsed whole", {
  skip_if_no_lmmscope()
  d <- lmm_scope_example(p = 60)
  f <- as.formula(paste("y ~", paste0("x", 1:60, collapse = " + "), "+ (1 | cluster)"))
  fit <- lmm_scope(f, data = d)
  expect_length(coef(fit), 61)
  expect_true(all(c("x1", "x5") %in% fit$support))
})

test_that("I(x^2) is a power, not Python's XOR", {
  skip_if_no_lmmscope()
  d <- make_mixed()
  fit <- lmm_scope(y ~ x1 + I(x1^2) + (1 | cluster), data = d, k = 2)
  expect_true("I(x1^2)" %in% names(coef(fit)))
})
